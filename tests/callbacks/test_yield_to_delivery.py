"""Callbacks yield to delivery in a process that does both (issue 11): while the delivery
worker has a backlog and the event loop has no time to spare, posts start at a limited rate,
and every callback still arrives once the backlog is gone. A busy loop alone (a slow process,
no parts waiting) never limits them.

A real receiver and the dispatcher on a real database; the "busy" loop is a task that holds it
10 ms at a time (late by 1 ms and more counts as busy here, 10 ms in production), as a saturated
worker does; the backlog is the `yield_to` the worker gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import make_customer
from tikosms.callbacks import dispatcher as dispatcher_module
from tikosms.callbacks.dispatcher import CallbackDispatcher
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow

PARTS = 1000  # enough that some are left to measure the rate once the limit ends


async def _queue(db: Database, account_id: int, url: str) -> None:
    parts = [{
        "id": 1 + i, "account_id": account_id, "campaign_id": "c1", "message_id": f"m{i}",
        "to": "380501234567", "status": "DELIVRD", "part_no": 1, "total_parts": 1,
        "mccmnc": "25501", "cost": Decimal("0.05"), "callback_url": url,
    } for i in range(PARTS)]
    async with db.begin() as conn:
        await enqueue_status_events(conn, parts, utcnow())


@contextlib.asynccontextmanager
async def _busy_loop() -> AsyncIterator[None]:
    """Hold the event loop 10 ms at a time (time.sleep: no await), as a saturated worker does;
    between two holds only what is ready runs (sleep(0)), so a timer is seldom on time."""
    async def hog() -> None:
        while True:
            time.sleep(0.01)  # noqa: ASYNC251 (the point: a loop with no time to spare)
            await asyncio.sleep(0)

    task = asyncio.create_task(hog())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _wait_until(check: object, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _busy_at_1_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "LOOP_BUSY", 0.001)


async def _rate(receiver: CallbackReceiver, seconds: float) -> float:
    before = len(receiver.requests)
    await asyncio.sleep(seconds)
    return (len(receiver.requests) - before) / seconds


async def test_callbacks_wait_while_delivery_is_behind_on_a_busy_loop_then_all_arrive(
        db: Database, settings: Settings) -> None:
    customer = await make_customer(db, name="Busy worker")
    behind = [True]
    async with CallbackReceiver() as receiver:
        await _queue(db, customer.account_id, receiver.url)
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=60),
                                        yield_to=lambda: behind[0])
        await dispatcher.start()
        try:
            async with _busy_loop():
                await _wait_until(lambda: dispatcher.rate_limit is not None, 5)
                await asyncio.sleep(0.3)  # the limit comes down to its floor
                yielding = await _rate(receiver, 1.0)
                assert yielding <= 3 * dispatcher_module.MIN_RATE, yielding
                behind[0] = False  # the backlog is gone
                await _wait_until(lambda: dispatcher.rate_limit is None, 5)
                after = await _rate(receiver, 0.5)  # the same busy loop, no limit
                assert after > 3 * yielding, (after, yielding)
                await receiver.wait_for(PARTS, timeout=30)
        finally:
            await dispatcher.stop()
    assert sorted(r.json["message_id"] for r in receiver.requests) == sorted(
        f"m{i}" for i in range(PARTS))


async def test_a_busy_loop_without_a_delivery_backlog_never_limits_callbacks(
        db: Database, settings: Settings) -> None:
    customer = await make_customer(db, name="Busy, nothing waiting")
    async with CallbackReceiver() as receiver:
        await _queue(db, customer.account_id, receiver.url)
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=60),
                                        yield_to=lambda: False)
        await dispatcher.start()
        limited = False
        try:
            async with _busy_loop():
                deadline = time.monotonic() + 30
                while len(receiver.requests) < PARTS and time.monotonic() < deadline:
                    limited = limited or dispatcher.rate_limit is not None
                    await asyncio.sleep(0.02)
        finally:
            await dispatcher.stop()
    assert not limited
    assert len(receiver.requests) == PARTS
