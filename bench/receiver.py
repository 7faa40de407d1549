"""A callback receiver in its own process: answers 200 to every POST and counts them.

    python bench/receiver.py PORT [ANSWER]

ANSWER is the body of every 200 (default "ok"; Jasmin's DLR thrower wants "ACK/Jasmin").

GET /stats answers {"count", "first", "last"} (monotonic seconds of the first and last POST of
this process); POST /reset starts counting again.
"""

from __future__ import annotations

import sys
import time

from aiohttp import web

state = {"count": 0, "first": 0.0, "last": 0.0}
ANSWER = sys.argv[2] if len(sys.argv) > 2 else "ok"


async def on_post(request: web.Request) -> web.Response:
    if request.path == "/reset":
        state.update(count=0, first=0.0, last=0.0)
        return web.json_response(state)
    await request.read()
    now = time.monotonic()
    if state["count"] == 0:
        state["first"] = now
    state["count"] += 1
    state["last"] = now
    return web.Response(text=ANSWER)


async def on_stats(request: web.Request) -> web.Response:
    return web.json_response(state)


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/stats", on_stats)
    app.router.add_post("/{tail:.*}", on_post)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
