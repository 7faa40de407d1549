"""The ceiling of the accept rate: a bare ASGI app answering a constant JSON, served by uvicorn
with the settings `tikosms serve` uses (cli/serve.py: loop and http "auto", no access log).

    python bench/bare_app.py PORT [PROCESSES]
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

BODY = b'{"success":true,"message_id":"00000000-0000-0000-0000-000000000000"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to start
    more = True
    while more:  # read the request body, as the gateway must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    if len(sys.argv) > 2 and int(sys.argv[2]) > 1:  # as `tikosms api --processes N` serves
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        uvicorn.run("bare_app:app", host="127.0.0.1", port=int(sys.argv[1]),
                    workers=int(sys.argv[2]), log_level="warning", access_log=False,
                    lifespan="off", timeout_graceful_shutdown=5)
        sys.exit(0)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]),
                                  log_level="warning", loop="auto", http="auto",
                                  timeout_graceful_shutdown=5, access_log=False,
                                  lifespan="off")).run()
