"""Fault: one account's callback endpoint answers slowly; another account's must not wait for it.

Two real local HTTP receivers (two hosts: the dispatcher caps posts per scheme, host and port)
and the dispatcher on a real database. Account A's endpoint holds every request for SLOW
seconds, A has more chains than there are posters; account B's endpoint answers at once. Before
issue 9 every poster was taken by A's chains and B's callbacks waited for A's whole backlog
(36 s here); now B's arrive while every one of A's posts is still unanswered, and A's still
arrive, in order per part, once its endpoint recovers.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import make_customer
from tikosms.callbacks.dispatcher import CallbackDispatcher
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import CallbackEvent
from tikosms.db.types import utcnow

SLOW = 6.0  # seconds A's endpoint takes to answer (the timeout is 10 s: no retries)
A_PARTS = 24  # each with ENROUTE then DELIVRD: three times the 8 posters
B_PARTS = 20


def _parts(account_id: int, first_id: int, count: int, status: str, url: str
           ) -> list[dict[str, object]]:
    return [{
        "id": first_id + i, "account_id": account_id, "campaign_id": f"c{account_id}",
        "message_id": f"m{first_id + i}", "to": "380501234567", "status": status, "part_no": 1,
        "total_parts": 1, "mccmnc": "25501", "cost": Decimal("0.05"), "callback_url": url,
    } for i in range(count)]


async def _queue(db: Database, account_id: int, first_id: int, count: int, url: str,
                 statuses: tuple[str, ...]) -> datetime:
    async with db.begin() as conn:
        queued_at = utcnow()
        for n, status in enumerate(statuses):
            await enqueue_status_events(conn, _parts(account_id, first_id, count, status, url),
                                        queued_at + timedelta(milliseconds=n))
    return queued_at


async def test_a_slow_endpoint_does_not_delay_another_accounts_callbacks(
    db: Database, settings: Settings
) -> None:
    a = await make_customer(db, name="Slow endpoint")
    b = await make_customer(db, name="Fast endpoint")
    few_posters = settings.model_copy(update={"callback_concurrency": 8,
                                              "callback_timeout_seconds": 10.0})
    async with CallbackReceiver(delay=SLOW) as slow, CallbackReceiver() as fast:
        await _queue(db, a.account_id, 1, A_PARTS, slow.url, ("ENROUTE", "DELIVRD"))
        dispatcher = CallbackDispatcher(db, few_posters, RetryPolicy.for_tests(give_up_after=60))
        await dispatcher.start()
        try:
            await slow.wait_for(2)  # A's posts are in flight, held by its endpoint
            queued_at = await _queue(db, b.account_id, 1000, B_PARTS, fast.url, ("DELIVRD",))
            dispatcher.wake()
            # well before the first of A's posts can be answered
            received = await fast.wait_for(B_PARTS, timeout=SLOW - 2)
            async with db.connect() as conn:
                a_delivered = (await conn.execute(
                    select(func.count()).select_from(CallbackEvent).where(
                        CallbackEvent.account_id == a.account_id,
                        CallbackEvent.state == "delivered"))).scalar_one()
            latest = max(r.received_at for r in received) - queued_at
            print(f"B: {B_PARTS} callbacks, the last {latest.total_seconds():.2f} s after queued;"
                  f" A: {len(slow.requests)} posts started, {a_delivered} answered")
            slow.delay = 0  # A's endpoint recovers
            await slow.wait_for(2 * A_PARTS, timeout=30)
        finally:
            await dispatcher.stop()
    assert a_delivered == 0  # B's were all in while A's were still pending
    statuses: dict[str, list[str]] = defaultdict(list)
    for request in slow.requests:
        statuses[request.json["message_id"]].append(request.json["status"])
    assert len(statuses) == A_PARTS
    assert all(s == ["ENROUTE", "DELIVRD"] for s in statuses.values()), dict(statuses)
