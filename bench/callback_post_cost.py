"""The ceiling of a callback: CPU per POST of the worker's own sender against a bare aiohttp POST.

    .venv/bin/python bench/callback_post_cost.py [--posts 20000] [--concurrency 64]

Starts bench/receiver.py in its own process, then, in this process (uvloop, as the worker),
POSTs a delivery report's body `--posts` times with `--concurrency` in flight: first with a bare
`aiohttp.ClientSession` (keep-alive pool, nothing else), then with `CallbackSender.post` (the
address check, the timeout, the attempt record; the body signed as the dispatcher signs it).
Prints one JSON line: POSTs/s and CPU ms per POST of this process (utime + stime) for each, and
the receiver's. What a callback must cost is the bare figure; the worker's CPU per message with
callbacks on (two status changes a message: ENROUTE, DELIVRD) is read beside twice it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from bench.procs import Process
from tikosms.callbacks import signing
from tikosms.callbacks.sender import CallbackSender

BODY = json.dumps({"id": "01JEXAMPLE0000000000000000", "message_id": "01JEXAMPLE0000000000000001",
                   "part": 1, "status": "DELIVRD", "error_code": None, "to": "380501234567",
                   "updated_at": "2026-12-04T21:00:00Z"}).encode()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(url: str, posts: int, concurrency: int, kind: str) -> dict[str, float]:
    left = posts
    if kind == "bare":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def one() -> None:
            async with session.post(url, data=BODY,
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
    else:
        sender = CallbackSender(allow_private=True)
        secret = signing.generate_secret()

        async def one() -> None:
            headers = {"Content-Type": "application/json",
                       **signing.headers(secret, "msg_bench", int(time.time()), BODY)}
            attempt = await sender.post(url, BODY, headers)
            assert attempt.ok, attempt

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    for _ in range(200):  # warm the pool
        left += 1
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    left = posts
    c0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    took, used = time.perf_counter() - t0, cpu() - c0
    if kind == "bare":
        await session.close()
    else:
        await sender.close()
    return {"posts_per_s": round(posts / took), "cpu_ms_per_post": round(1000 * used / posts, 3)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--posts", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    import uvloop

    port = procs.free_port()
    workdir = Path(os.environ.get("TMPDIR", "/tmp"))
    with Process([procs.PYTHON, str(Path(__file__).with_name("receiver.py")), str(port)],
                 workdir / f"receiver-{port}.log", port=port) as receiver:
        url = f"http://{procs.HOST}:{port}/cb"
        out: dict[str, object] = {}
        for kind in ("bare", "sender"):
            r0 = procs.cpu_seconds(receiver.pid)
            out[kind] = uvloop.run(run(url, args.posts, args.concurrency, kind))
            out[kind]["receiver_cpu_ms_per_post"] = round(  # type: ignore[index]
                1000 * (procs.cpu_seconds(receiver.pid) - r0) / args.posts, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
