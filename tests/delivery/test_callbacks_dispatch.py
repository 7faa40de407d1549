"""The callback outbox: order per part, retries recorded, give-up, internal hosts refused."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from tests.callbacks.receiver import CallbackReceiver, ReceivedCallback
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


STEPS = ["ACCEPTD", "ENROUTE", "UNKNOWN", "DELIVRD"]  # the order each part's events are queued in


def part_at(part_id: int, status: str, url: str) -> dict[str, object]:
    return {**part(status, url, part_id), "message_id": f"m{part_id}"}


async def _enqueue_step(db: Database, parts: list[tuple[int, str]], status: str,
                        offset_ms: int) -> None:
    """One status change for each (part id, url), in one transaction (their ids interleave)."""
    async with db.begin() as conn:
        await enqueue_status_events(conn, [part_at(p, status, url) for p, url in parts],
                                    utcnow() + timedelta(milliseconds=offset_ms))


def _posted_in_order(requests: list[ReceivedCallback], expected: list[str]) -> bool:
    """Each event's requests are contiguous, end with a 2xx, and the events come in order."""
    runs: list[tuple[str, list[int]]] = []
    for r in requests:
        if runs and runs[-1][0] == r.json["status"]:
            runs[-1][1].append(r.answered)
        else:
            runs.append((r.json["status"], [r.answered]))
    return ([status for status, _ in runs] == expected
            and all(answers[-1] == 200 and all(a != 200 for a in answers[:-1])
                    for _, answers in runs))


async def test_order_is_kept_per_part_with_many_parts_interleaved_and_some_failing(
    db: Database, settings: Settings
) -> None:
    await _setup(db)
    async with CallbackReceiver() as receiver:
        parts = [(p, receiver.url_for(f"/p{p}")) for p in range(1, 41)]
        failures = 0
        for p, _ in parts[::3]:  # every third part: its first two posts fail, whichever they are
            receiver.fail_first(2, status=503, path=f"/p{p}")
            failures += 2
        # half the changes are queued before the dispatcher starts, half while it runs
        for step, status in enumerate(STEPS[:2]):
            await _enqueue_step(db, parts, status, step)
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=30),
                                        batch=25)
        try:
            await dispatcher.start()
            for step, status in enumerate(STEPS[2:], start=2):
                await _enqueue_step(db, parts, status, step)
            await receiver.wait_for(len(parts) * len(STEPS) + failures, timeout=30)
        finally:
            await dispatcher.stop()
    for p, _ in parts:
        assert _posted_in_order(receiver.on_path(f"/p{p}"), STEPS), p
    async with db.connect() as conn:
        states = (await conn.execute(select(CallbackEvent.state))).scalars().all()
    assert states == ["delivered"] * len(parts) * len(STEPS)


async def test_a_large_backlog_is_all_delivered_in_order(db: Database, settings: Settings) -> None:
    await _setup(db)
    async with CallbackReceiver() as receiver:
        parts = [(p, receiver.url) for p in range(1, 1501)]
        await _enqueue_step(db, parts, "ENROUTE", 0)
        await _enqueue_step(db, parts, "DELIVRD", 1)
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=30),
                                        batch=200)
        try:
            await dispatcher.start()
            await receiver.wait_for(3000, timeout=60)
        finally:
            await dispatcher.stop()
    assert len(receiver.requests) == 3000
    seen: dict[str, list[str]] = {}
    for r in receiver.requests:
        seen.setdefault(r.json["message_id"], []).append(r.json["status"])
    assert all(statuses == ["ENROUTE", "DELIVRD"] for statuses in seen.values())
    assert len(seen) == 1500
    async with db.connect() as conn:
        pending = (await conn.execute(
            select(CallbackEvent.id).where(CallbackEvent.state != "delivered"))).all()
    assert pending == []


async def test_two_dispatchers_on_one_database_never_post_an_event_twice(
    db: Database, settings: Settings
) -> None:
    await _setup(db)
    other_db = Database(settings.database_url)  # as a second process would have
    # Each answer takes 20 ms, so neither dispatcher can post all 1,500 events before the other
    # has started: both must take part, and no event may be posted by both.
    async with CallbackReceiver(delay=0.02) as receiver:
        parts = [(p, receiver.url) for p in range(1, 501)]
        for step, status in enumerate(STEPS):
            await _enqueue_step(db, parts, status, step)
        dispatchers = [
            CallbackDispatcher(database, settings, RetryPolicy.for_tests(), batch=50)
            for database in (db, other_db)
        ]
        try:
            await asyncio.gather(*(dispatcher.start() for dispatcher in dispatchers))
            await receiver.wait_for(len(parts) * len(STEPS), timeout=60)
        finally:
            for dispatcher in dispatchers:
                await dispatcher.stop()
            await other_db.dispose()
    per_event = Counter(r.event_id for r in receiver.requests)
    assert len(per_event) == len(parts) * len(STEPS)
    assert set(per_event.values()) == {1}
    if db.is_postgres:
        # both took part (a fleet's dispatchers share the work). On SQLite, one process in
        # production (`tikosms serve`), the first dispatcher's writes can keep the second from
        # claiming at all under load (one writer): only the safety above is asserted there.
        assert all(d.delivered > 0 for d in dispatchers)


async def test_stop_records_the_posts_in_flight_and_gives_back_the_rest(
    db: Database, settings: Settings
) -> None:
    await _setup(db)
    few_posts = settings.model_copy(update={"callback_concurrency": 2})
    async with CallbackReceiver(delay=0.2) as receiver:
        await _enqueue_step(db, [(p, receiver.url) for p in range(1, 11)], "DELIVRD", 0)
        dispatcher = CallbackDispatcher(db, few_posts, RetryPolicy.for_tests())
        await dispatcher.start()
        await receiver.wait_for(2)
        await dispatcher.stop()
    posted = {r.event_id for r in receiver.requests}
    async with db.connect() as conn:
        events = (await conn.execute(select(CallbackEvent))).all()
    assert {e.event_id for e in events if e.state == "delivered"} == posted
    waiting = [e for e in events if e.state == "pending"]
    assert len(waiting) == 10 - len(posted)
    assert all(e.lease_until is None and e.attempts == 0 for e in waiting)
