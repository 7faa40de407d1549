"""Throughput of 1, 2 and 3 delivery workers sharing one carrier's binds (issue 13, item 5).

    .venv/bin/python bench/fleet.py [--parts 20000] [--workers 1 2 3] [--runs 1]

One `tikosms api` and N `tikosms worker` processes on a scratch PostgreSQL, one carrier at
`tikosms smsc-sim` allowing 3 binds (window 100, no agreed rate: an SMSC with room to spare),
so that each of up to 3 workers holds a bind slot of its own. Each run waits until the workers
hold every slot, sends one campaign, and prints parts/s from the 200 answer until every part
is final. On a machine with fewer cores than processes, the figure is what the cores give.
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
from bench.benchmarks import _post, wait_until_final
from bench.procs import Process

BINDS = 3


def one(parts: int, workers: int) -> float:
    workdir = procs.new_workdir()
    sim_port = procs.free_port()
    with Process([procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval", "0"],
                 workdir / "sim.log", port=sim_port), \
            procs.scratch_database("postgresql", workdir) as db:
        procs.tikosms(["db", "upgrade"], db, workdir)
        account = procs.create_account(db, workdir)
        procs.tikosms(["carriers", "add", "sim", "--host", procs.HOST, "--port", str(sim_port),
                       "--system-id", "bench", "--password", "bench", "--window", "100",
                       "--binds", str(BINDS)], db, workdir)
        procs.tikosms(["routes", "add", "--match", "*", "--carrier", "sim"], db, workdir)
        port = procs.free_port()
        env = procs.gateway_env(db, port)
        started = [Process([procs.TIKOSMS, "api"], workdir / "api.log", env, port)]
        started += [Process([procs.TIKOSMS, "worker"], workdir / f"worker{i}.log", env)
                    for i in range(workers)]
        for p in started:
            p.__enter__()
        try:
            _wait_for_holders(db, min(workers, BINDS))
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


def _wait_for_holders(db: procs.ScratchDb, holders: int, within: float = 60.0) -> None:
    """Until `holders` workers hold the carrier's slots between them (all slots held)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        held = procs.count(db, "SELECT count(*) FROM carrier_slots WHERE holder IS NOT NULL")
        distinct = procs.count(db, "SELECT count(DISTINCT holder) FROM carrier_slots")
        if held == BINDS and distinct == holders:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the slots were not spread over {holders} workers within {within} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=20_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    for _ in range(args.runs):  # alternated: a machine whose load drifts favours none
        for workers in args.workers:
            rate = one(args.parts, workers)
            print(json.dumps({"workers": workers, "binds": BINDS, "parts": args.parts,
                              "parts_per_s": round(rate), **procs.machine()}), flush=True)


if __name__ == "__main__":
    main()
