"""SharedRate against a store in memory: how a process joins, follows and publishes the fleet's
rate (the stores themselves, PostgreSQL and Redis, are in tests/faults/test_shared_rate.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tikosms.smpp.shared_rate import Answers, Decision, Grant, SharedRate, chunk_for
from tikosms.smpp.throttle import TokenBucket


class MemoryStore:
    """The stores' contract with no budget (every chunk given): decisions compare-and-set on
    the version, answers counted."""

    name = "memory"

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def row(self, carrier: str) -> dict[str, Any]:
        return self.rows.setdefault(carrier, {
            "taken": 0, "rate": None, "slow_start": True, "version": 0, "baseline": 0.0,
            "answered": 0, "refused": 0})

    async def take(self, carrier: str, tokens: int, rate: float,
                   decision: Decision | None, answers: Answers) -> Grant:
        r = self.row(carrier)
        published = decision is not None and decision.base in (None, r["version"])
        if decision is not None and published:
            r.update(rate=decision.rate, slow_start=decision.slow_start,
                     baseline=decision.baseline, version=r["version"] + 1)
        r["taken"] += tokens
        r["answered"] += answers.answered
        r["refused"] += answers.refused
        return Grant(True, 0.0, r["taken"], r["rate"], r["slow_start"], r["version"],
                     r["baseline"], r["answered"], r["refused"], True, published)

    async def close(self) -> None:
        return None


async def test_a_process_that_joins_takes_the_rate_the_fleet_found() -> None:
    # a worker started (or restarted) beside others that found the limit long ago: it sends
    # at the fleet's rate at once, and its own slow start (40/s searches, "limit reached")
    # never gets the chance to overwrite the fleet's rate
    store = MemoryStore()
    store.row("acme").update(rate=200.0, slow_start=False, version=3)
    limiter = SharedRate("acme", TokenBucket(None), store)
    await limiter.acquire()
    assert not limiter.bucket.slow_start
    assert limiter.bucket.rate == pytest.approx(200.0)


async def test_a_process_that_never_saw_the_store_does_not_write_over_the_fleets_rate() -> None:
    store = MemoryStore()
    store.row("acme").update(rate=200.0, slow_start=False, version=3)
    limiter = SharedRate("acme", TokenBucket(300.0), store)
    limiter.bucket.set_limit(150.0)  # decided before its first request (the store was down)
    await limiter.acquire()
    assert store.rows["acme"]["rate"] == 200.0


async def test_a_store_that_starts_again_is_given_the_rate_again() -> None:
    # a Redis key expired or flushed: the versions count from 0 again, below what every
    # process has seen; the rate in force is published again and followed from there
    store = MemoryStore()
    limiter = SharedRate("acme", TokenBucket(300.0), store)
    await limiter.acquire()
    for rate in (150.0, 120.0):
        limiter.bucket.set_limit(rate)
        await limiter._refill()
    assert store.rows["acme"]["version"] == 2
    store.rows.clear()
    await limiter._refill()  # sees the store's count behind its own
    await limiter._refill()
    assert store.rows["acme"]["rate"] == pytest.approx(120.0)
    limiter.bucket.set_limit(100.0)
    await limiter._refill()
    assert store.rows["acme"]["rate"] == pytest.approx(100.0)


async def test_a_chunk_is_paced_not_spent_at_once() -> None:
    # 15 tokens at 300/s: a quarter at once, the rest about 2.3 ms apart (spent at once, the
    # whole chunk lands at the SMSC in the same millisecond)
    store = MemoryStore()
    limiter = SharedRate("acme", TokenBucket(300.0), store)
    chunk = chunk_for(300.0)
    taken = []
    for _ in range(chunk):
        await limiter.acquire()
        taken.append(time.monotonic())
    assert store.rows["acme"]["taken"] == chunk  # one chunk
    assert taken[-1] - taken[0] >= 0.8 * (chunk - 4) * 0.7 / 300
