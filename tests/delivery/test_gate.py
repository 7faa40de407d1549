"""The gate on parts with a carrier and not yet on record: first come, first served, resized by
the measured throughput unless `max_unrecorded` fixes it, and no slot lost to a cancellation."""

from __future__ import annotations

import asyncio

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.delivery import worker as worker_module
from tikosms.delivery.routing import Router
from tikosms.delivery.worker import DeliveryWorker, _Gate


async def test_waiters_are_served_in_order_and_a_larger_gate_lets_them_in_at_once() -> None:
    gate = _Gate(1)
    await gate.acquire()
    order: list[int] = []

    async def take(n: int) -> None:
        await gate.acquire()
        order.append(n)

    tasks = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == []
    gate.resize(3)  # two more slots: the first two waiters, in their order
    await asyncio.sleep(0)
    assert order == [0, 1]
    gate.resize(1)  # smaller: nobody is let in until enough slots came back
    gate.release()
    gate.release()
    await asyncio.sleep(0)
    assert order == [0, 1]
    gate.release()
    await asyncio.sleep(0)
    assert order == [0, 1, 2] and gate.used == 1
    await asyncio.gather(*tasks)


async def test_a_waiter_cancelled_as_its_slot_comes_gives_the_slot_on() -> None:
    gate = _Gate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)  # the slot went on to the next waiter
    assert gate.used == 1
    waiting = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiting.cancel()  # cancelled while waiting: it takes nothing...
    gate.release()  # ...even when a slot is given out before it runs again
    outcome = (await asyncio.gather(waiting, return_exceptions=True))[0]
    assert isinstance(outcome, asyncio.CancelledError)
    assert gate.used == 0
    await asyncio.wait_for(gate.acquire(), 1)


async def _gate_after_traffic(worker: DeliveryWorker, per_second: int) -> int:
    """The gate's size after the pacer has measured `per_second` results for a while."""
    pacer = asyncio.create_task(worker._pace(period=0.02))
    try:
        for _ in range(40):
            worker._finished += per_second // 50
            await asyncio.sleep(0.02)
    finally:
        pacer.cancel()
        await asyncio.gather(pacer, return_exceptions=True)
    return worker._gate.limit


async def test_the_gate_grows_with_the_throughput_above_its_floor(
    db: Database, settings: Settings
) -> None:
    worker = DeliveryWorker(db, settings, Router({}, []))
    assert worker._gate.limit == worker_module.MIN_UNRECORDED  # no carrier window known
    size = await _gate_after_traffic(worker, 4000)
    # about UNRECORDED_SECONDS of 4,000 results a second (the measure is an average)
    assert 0.6 * 4000 * worker_module.UNRECORDED_SECONDS <= size <= 4000


async def test_max_unrecorded_fixes_the_gate_whatever_the_throughput(
    db: Database, settings: Settings
) -> None:
    worker = DeliveryWorker(db, settings.model_copy(update={"max_unrecorded": 7}),
                            Router({}, []))
    assert await _gate_after_traffic(worker, 4000) == 7
