"""What the crash-exposure gate costs in throughput (docs/reliability.md).

    .venv/bin/python bench/gate_cost.py [--parts 10000] [--latency-ms 0 20] [--db postgresql]

One campaign through `tikosms api` + `tikosms worker` (PostgreSQL) or `tikosms serve` (SQLite)
to `tikosms smsc-sim` (one bind, window 100), with the gate at its default (TIKOSMS_MAX_UNRECORDED
0: two windows, 200 parts) and effectively off (1,000,000). Prints parts/s from the
200 answer until every part is final, for each SMSC latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a package, as run.py

from bench import procs
from bench.benchmarks import _post, add_carrier, wait_until_final
from bench.procs import Process

GATES = {"default": 0, "off": 1_000_000}


def one(kind: str, parts: int, latency_ms: float, gate: int) -> float:
    workdir = procs.new_workdir()
    sim_port = procs.free_port()
    with Process([procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval", "0",
                  "--latency-ms", str(latency_ms)], workdir / "sim.log", port=sim_port), \
            procs.scratch_database(kind, workdir) as db:
        procs.tikosms(["db", "upgrade"], db, workdir)
        account = procs.create_account(db, workdir)
        add_carrier(db, workdir, sim_port)
        port = procs.free_port()
        env = procs.gateway_env(db, port, max_unrecorded=gate)
        commands = [["serve"]] if kind == "sqlite" else [["api"], ["worker"]]
        started = [Process([procs.TIKOSMS, *c], workdir / f"{c[0]}.log", env,
                           port if c[0] != "worker" else None) for c in commands]
        for p in started:
            p.__enter__()
        try:
            body = {"from": "TikoBench", "message": "Your code is 123456",
                    "recipients": procs.recipients(parts)}
            _, answer = asyncio.run(_post(f"http://{procs.HOST}:{port}/v1/messages", account,
                                          body))
            since = time.perf_counter()
            seconds, left = wait_until_final(db, since, timeout=60 + parts / 100)
        finally:
            for p in reversed(started):
                p.stop()
    assert left == 0, f"{left} parts not final"
    return answer["parts"] / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=10_000)
    p.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    for latency in args.latency_ms:
        for _ in range(args.runs):  # alternated: a machine whose load drifts favours neither
            for name, gate in GATES.items():
                rate = one(args.db, args.parts, latency, gate)
                print(json.dumps({"db": args.db, "parts": args.parts, "smsc_latency_ms": latency,
                                  "gate": name, "parts_per_s": round(rate), **procs.machine()}),
                      flush=True)


if __name__ == "__main__":
    main()
