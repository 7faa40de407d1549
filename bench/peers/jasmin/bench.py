"""The peer under the sustained benchmark's load: Jasmin 0.11.1 delivering to `tikosms smsc-sim`.

The same ladder, generators and simulator as bench/sustained.py; Jasmin's HTTP API
`GET /send?username=&password=&to=&content=` instead of POST /v1/message. What is counted:
answers 200 (`Success "<id>"`), the simulator's counters (submit_sm accepted, receipts acked),
the callbacks received, and the CPU of jasmind, the simulator and, shared with the rest of the
machine (so an upper bound), RabbitMQ and Redis. Two variants: no receipt requested, and
`dlr-level=3` with `dlr-url` on bench/receiver.py (Jasmin records a receipt only to post it:
both the SMSC's answer and the handset receipt are posted, as TikoSMS posts ENROUTE and
DELIVRD), which stands beside TikoSMS's "receipts + callbacks". Jasmin keeps no per-message
timestamps we can read, so accept-to-submit is not measured for it.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

from bench import procs, sustained
from bench.peers.jasmin import setup
from bench.procs import Process

SETUP = f"Jasmin {setup.VERSION} (jasmind, RabbitMQ, Redis)"


def bench_jasmin(ctx: Any) -> list[Any]:
    from bench.benchmarks import Figure

    ladder = sustained.QUICK_LADDER if ctx.sizes.single_seconds < 5 else sustained.FULL_LADDER
    seconds = getattr(ctx.sizes, "sustained_seconds", 0) or ladder.seconds
    ladder = sustained.Ladder(ladder.rates, seconds, ladder.closed)
    steps: list[sustained.Step] = []
    if not any(s.setup.startswith("generator") for s in ctx.steps):
        steps += sustained.generator_ceiling(ladder, lambda n: ctx.log(f"jasmin-{n}"))
    for callbacks in (False, True):
        steps += run_variant(ctx, ladder, callbacks)
    ctx.steps += steps
    mine = [s for s in steps if s.setup == SETUP]
    figures = []
    for variant in dict.fromkeys(s.variant for s in mine):
        vs = [s for s in mine if s.variant == variant]
        kept = [s.accepted for s in vs if s.offered is not None and s.kept_up]
        closed = next((s for s in vs if s.offered is None), None)
        tag = "jasmin" + ("+cb" if "callbacks" in variant else "")
        figures.append(Figure(tag, "-", "highest offered rate kept up with, accepted/s",
                              max(kept, default=0.0), note=variant))
        if closed is not None:
            figures.append(Figure(tag, "-", "closed 64: accepted/s", closed.accepted,
                                  note=f"submitted {closed.submitted or 0:,.0f}/s, queue at end "
                                       f"{closed.queue_end or 0:,}"))
    return figures


def run_variant(ctx: Any, ladder: sustained.Ladder, callbacks: bool) -> list[sustained.Step]:
    label = "jasmin-cb" if callbacks else "jasmin"
    sim_port = procs.free_port()
    sim_log = ctx.log(f"{label}-smsc-sim")
    with Process([procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval",
                  "0.25"], sim_log, port=sim_port) as sim:
        receiver = None
        pids = {"simulator": sim.pid}
        query = (f"username={setup.USER}&password={setup.PASSWORD}&to={{to}}&from=TikoBench"
                 f"&content={quote('Your code is 123456')}")
        if callbacks:
            rport = procs.free_port()
            receiver = Process([procs.PYTHON, str(procs.BENCH / "receiver.py"), str(rport),
                                "ACK/Jasmin"], ctx.log(f"{label}-receiver"), port=rport)
            receiver.__enter__()
            pids["receiver"] = receiver.pid
            dlr_url = quote(f"http://{procs.HOST}:{rport}/dlr", safe="")
            query += f"&dlr=yes&dlr-url={dlr_url}&dlr-level=3&dlr-method=POST"
        try:
            with setup.running_jasmin(ctx.workdir, sim_port, sim_log, sim.pid,
                                      ctx.log(f"{label}-jasmind")) as jasmin:
                pids["jasmind"] = jasmin.pid

                def counts() -> dict[str, int]:
                    c = setup.sim_counters(sim_log)
                    return {"submitted": c.get("accepted", 0),
                            "receipts": c.get("receipts_acked", 0)}

                gw = sustained.Gateway(
                    SETUP, "receipts + callbacks (dlr-level 3)" if callbacks
                    else "no receipt requested", f"{jasmin.http_url}?{query}", "", pids, None,
                    delivers=True, receiver_url=None if receiver is None
                    else f"http://{procs.HOST}:{receiver.port}", body=None, method="GET",
                    peer_counts=counts, extra_pids=setup.shared_pids)
                return sustained.run_ladder(gw, ladder, lambda line: print(
                    line, file=sys.stderr, flush=True))
        finally:
            if receiver is not None:
                receiver.stop()
            setup.remove_root(ctx.workdir)
