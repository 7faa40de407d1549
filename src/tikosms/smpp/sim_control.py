"""The SMSC simulator's control endpoint: send an MO from outside its process.

`tikosms smsc-sim --control-port N` serves, on the simulator's host:

    POST /mo  {"from": "380501234567", "to": "12345", "text": "...",
               "data_coding": 0|1|3|8 (default: GSM-7 if it fits, else UCS-2),
               "concat": "udh8"|"udh16"|"sar", "order": "in-order"|"reverse"|"shuffle",
               "part_octets": N (cut parts this small), "system_id": "..." (default: any),
               "ref": N (the concatenation reference), "only": [part numbers to send]}
          -> {"parts": N} once every part is acknowledged by the gateway
    GET /counters -> the simulator's counters (?accepted=N: once N submit_sm are accepted,
                     or after 60 s)

`tikosms smsc-mo` posts to it. Loopback only by default; it is a test tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from aiohttp import web

from tikosms.smpp.simulator import SmscSimulator


async def start_control(simulator: SmscSimulator, host: str, port: int) -> web.AppRunner:
    """Serve the control endpoint; returns its runner (`await runner.cleanup()` to stop)."""
    app = web.Application()

    async def post_mo(request: web.Request) -> web.Response:
        try:
            body: dict[str, Any] = await request.json()
            parts = await simulator.send_mo(
                str(body["from"]), str(body["to"]), str(body["text"]),
                data_coding=body.get("data_coding"), concat=body.get("concat", "udh8"),
                order=body.get("order", "in-order"), part_octets=body.get("part_octets"),
                system_id=body.get("system_id"), ref=body.get("ref"), only=body.get("only"))
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"parts": parts})

    async def get_counters(request: web.Request) -> web.Response:
        # ?accepted=N waits (up to 60 s) until N submit_sm were accepted: a test in another
        # process waits for an event rather than polling
        wanted = request.query.get("accepted")
        if wanted is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    await simulator.wait_for(lambda c: c.accepted >= int(wanted))
        return web.json_response(dataclasses.asdict(simulator.counters))

    app.router.add_post("/mo", post_mo)
    app.router.add_get("/counters", get_counters)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the control endpoint listens on (the OS's pick when asked for 0)."""
    server = runner.addresses[0]
    return int(server[1])
