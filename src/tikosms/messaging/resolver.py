"""Resolving many numbers at once, on every core.

libphonenumber's parse + validity check is the slowest step of a campaign (~25 us a number, about
2.4 s per 100,000 on one core), and it is pure CPU: large lists are cut into chunks resolved in a
process pool while the event loop waits. Small lists stay in-process (a pool round trip costs
more than it saves below a few thousand numbers).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from tikosms.numbers import InvalidNumber, NumberingPlan, resolve

POOL_THRESHOLD = 4000  # numbers; below this, resolve in-process
# (number, mcc, mnc, mccmnc), or None: not a valid number of any country. Plain tuples: they
# cross the process boundary ~10x cheaper than dataclasses.
Resolved = tuple[str, str, str | None, str] | None

_pool: ProcessPoolExecutor | None = None


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def pool() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        # spawn: the workers start clean, without the server's event loop or connections
        _pool = ProcessPoolExecutor(_workers(), mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_exit_with_parent, initargs=(os.getpid(),))
    return _pool


def _exit_with_parent(parent_pid: int) -> None:
    """In a pool process: exit when the server that started it is gone.

    A server killed with SIGKILL never shuts its pool down, and the workers, which hold the
    writing end of their own call queue, never see it close: they stayed forever, parented to
    init. A daemon thread checks the parent once a second."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def warm_up() -> None:
    """Start the pool's processes ahead of the first large campaign (imports take ~0.5 s)."""
    if _workers() > 1:
        for _ in range(_workers()):
            pool().submit(resolve_chunk, ["380501234567"], None)


def shutdown() -> None:
    global _pool
    if _pool is not None:
        # the pool only computes (nothing to flush): stop its processes now rather than wait
        # for one still importing, which took up to 9 s of a server's stop on a loaded machine
        processes = list((_pool._processes or {}).values())
        _pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        _pool = None


def resolve_chunk(numbers: Sequence[str], plan: NumberingPlan | None) -> list[Resolved]:
    out: list[Resolved] = []
    for raw in numbers:
        try:
            d = resolve(raw, plan)
        except InvalidNumber:
            out.append(None)
            continue
        out.append((d.number, d.mcc, d.mnc, d.mccmnc))
    return out


async def resolve_many(numbers: Sequence[str], plan: NumberingPlan | None) -> list[Resolved]:
    if len(numbers) < POOL_THRESHOLD or _workers() == 1:
        return resolve_chunk(numbers, plan)
    loop = asyncio.get_running_loop()
    n = _workers() * 2  # a few chunks per worker evens out the load
    size = -(-len(numbers) // n)
    chunks = [numbers[i:i + size] for i in range(0, len(numbers), size)]
    results = await asyncio.gather(*(
        loop.run_in_executor(pool(), resolve_chunk, chunk, plan) for chunk in chunks
    ))
    return [d for part in results for d in part]
