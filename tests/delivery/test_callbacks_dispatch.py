"""The callback outbox: order per part, retries recorded, give-up, internal hosts refused."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from tests.callbacks.receiver import CallbackReceiver
from tikosms.callbacks.dispatcher import CallbackDispatcher
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import CallbackAttempt, CallbackEvent
from tikosms.db.types import utcnow


def part(status: str, url: str, part_id: int = 1) -> dict[str, object]:
    return {
        "id": part_id, "account_id": 1, "campaign_id": "c", "message_id": "m", "to": "380501234567",
        "status": status, "part_no": 1, "total_parts": 1, "mccmnc": "25501",
        "cost": Decimal("0.05"), "callback_url": url,
    }


async def _setup(db: Database) -> None:
    from tests.conftest import make_customer

    await make_customer(db)  # account 1, with a signing secret


async def test_events_of_a_part_arrive_in_order_even_when_the_first_fails(
    db: Database, settings: Settings
) -> None:
    await _setup(db)
    async with CallbackReceiver() as receiver:
        receiver.fail_first(2)
        async with db.begin() as conn:
            now = utcnow()
            await enqueue_status_events(conn, [part("ENROUTE", receiver.url)], now)
            await enqueue_status_events(conn, [part("DELIVRD", receiver.url)],
                                        now + timedelta(milliseconds=1))
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=30))
        try:
            await dispatcher.start()
            await receiver.wait_for(4, timeout=10)
        finally:
            await dispatcher.stop()
    statuses = [(c.json["status"], c.answered) for c in receiver.requests]
    assert statuses == [("ENROUTE", 500), ("ENROUTE", 500), ("ENROUTE", 200), ("DELIVRD", 200)]
    async with db.connect() as conn:
        attempts = (await conn.execute(select(CallbackAttempt))).all()
    assert len(attempts) == 4


async def test_a_callback_is_given_up_after_the_retry_window(db: Database,
                                                             settings: Settings) -> None:
    await _setup(db)
    async with CallbackReceiver(status=503) as receiver:
        async with db.begin() as conn:
            await enqueue_status_events(conn, [part("DELIVRD", receiver.url)], utcnow())
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=0.3))
        for _ in range(100):
            await dispatcher.run_once()
            async with db.connect() as conn:
                state = (await conn.execute(select(CallbackEvent.state))).scalar_one()
            if state != "pending":
                break
            import asyncio

            await asyncio.sleep(0.02)
        await dispatcher.stop()
    assert state == "failed"
    assert len(receiver.requests) >= 2


async def test_internal_callback_hosts_are_never_called(db: Database, settings: Settings) -> None:
    await _setup(db)
    strict = settings.model_copy(update={"callback_allow_private": False})
    async with CallbackReceiver() as receiver:
        async with db.begin() as conn:
            await enqueue_status_events(conn, [part("DELIVRD", receiver.url)], utcnow())
        dispatcher = CallbackDispatcher(db, strict, RetryPolicy.for_tests())
        await dispatcher.run_once()
        await dispatcher.stop()
    assert receiver.requests == []
    async with db.connect() as conn:
        event = (await conn.execute(select(CallbackEvent))).one()
    assert event.state == "failed" and "refused" in (event.last_error or "")
