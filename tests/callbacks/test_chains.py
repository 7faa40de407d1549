"""A part's pending events are claimed together and posted in order, on both databases."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import make_customer
from tikosms.callbacks.dispatcher import CallbackDispatcher
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import CallbackAttempt, CallbackEvent
from tikosms.db.types import utcnow


def _part(status: str, url: str) -> dict[str, object]:
    return {
        "id": 1, "account_id": 1, "campaign_id": "c", "message_id": "m", "to": "380501234567",
        "status": status, "part_no": 1, "total_parts": 1, "mccmnc": "25501",
        "cost": Decimal("0.05"), "callback_url": url,
    }


async def _enqueue_enroute_and_delivrd(db: Database, url: str) -> None:
    now = utcnow()
    async with db.begin() as conn:
        await enqueue_status_events(conn, [_part("ENROUTE", url)], now)
        await enqueue_status_events(conn, [_part("DELIVRD", url)],
                                    now + timedelta(milliseconds=1))


async def test_one_claim_posts_a_parts_events_in_order(db: Database, settings: Settings
                                                       ) -> None:
    await make_customer(db)
    async with CallbackReceiver() as receiver:
        await _enqueue_enroute_and_delivrd(db, receiver.url)
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests())
        posted = await dispatcher.run_once()
        await dispatcher.stop()
    assert posted == 2
    assert [r.json["status"] for r in receiver.requests] == ["ENROUTE", "DELIVRD"]
    async with db.connect() as conn:
        events = (await conn.execute(select(CallbackEvent).order_by(CallbackEvent.id))).all()
        attempts = (await conn.execute(select(CallbackAttempt))).all()
    assert [(e.state, e.attempts, e.lease_until) for e in events] == [
        ("delivered", 1, None), ("delivered", 1, None)]
    assert len(attempts) == 2


async def test_after_a_failure_the_next_event_waits_unposted_for_the_retry(
    db: Database, settings: Settings
) -> None:
    await make_customer(db)
    async with CallbackReceiver() as receiver:
        receiver.fail_first(1, status=503)
        await _enqueue_enroute_and_delivrd(db, receiver.url)
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=30))
        await dispatcher.run_once()
        await dispatcher.stop()
    assert [(r.json["status"], r.answered) for r in receiver.requests] == [("ENROUTE", 503)]
    async with db.connect() as conn:
        enroute, delivrd = (await conn.execute(
            select(CallbackEvent).order_by(CallbackEvent.id))).all()
    assert (enroute.state, enroute.attempts, enroute.last_status_code) == ("pending", 1, 503)
    assert (delivrd.state, delivrd.attempts, delivrd.lease_until) == ("pending", 0, None)
    assert delivrd.next_attempt_at > enroute.next_attempt_at  # due only after the retry
