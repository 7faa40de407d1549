"""On PostgreSQL the dispatcher's turns with the database come at most one per TURN_GAP (issue
11): posts to a receiver that answers at once end a few at a time, and a turn per few of them
cost more in statements than their rows. Every callback still arrives, once. On SQLite a turn
follows the last at once (a longer turn would hold the one write lock the sends wait for).

A real receiver and the dispatcher on a real database; TURN_GAP is raised to 0.2 s so that the
time between turns says whether the gap holds (without it a turn starts a few ms after the last).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from decimal import Decimal

import pytest

from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import make_customer
from tikosms.callbacks import dispatcher as dispatcher_module
from tikosms.callbacks.dispatcher import CallbackDispatcher, Finished
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.callbacks.repository import ClaimedEvent
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow

PARTS = 400
GAP = 0.2


async def test_turns_start_a_gap_apart_on_postgresql_and_at_once_on_sqlite(
        db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: turns at least GAP apart; SQLite: some turns far closer than that."""
    monkeypatch.setattr(dispatcher_module, "TURN_GAP", GAP)
    customer = await make_customer(db, name="Fast receiver")
    async with CallbackReceiver() as receiver:
        parts = [{
            "id": 1 + i, "account_id": customer.account_id, "campaign_id": "c1",
            "message_id": f"m{i}", "to": "380501234567", "status": "DELIVRD", "part_no": 1,
            "total_parts": 1, "mccmnc": "25501", "cost": Decimal("0.05"),
            "callback_url": receiver.url,
        } for i in range(PARTS)]
        async with db.begin() as conn:
            await enqueue_status_events(conn, parts, utcnow())
        # small claims, so that the events need many turns either way
        dispatcher = CallbackDispatcher(db, settings.model_copy(update={
            "callback_concurrency": 8}), RetryPolicy.for_tests(give_up_after=60), batch=20)
        turns: list[tuple[float, int]] = []  # (start, posts recorded)
        turn = dispatcher._turn

        async def counted(finished: Sequence[Finished], want: int
                          ) -> tuple[list[list[ClaimedEvent]], int]:
            turns.append((time.monotonic(), len(finished)))
            return await turn(finished, want)

        monkeypatch.setattr(dispatcher, "_turn", counted)
        await dispatcher.start()
        try:
            await receiver.wait_for(PARTS, timeout=60)
            deadline = time.monotonic() + 30
            while dispatcher.delivered < PARTS:  # the last posts recorded too
                assert time.monotonic() < deadline, "posts not recorded"
                await asyncio.sleep(0.05)
        finally:
            await dispatcher.stop()
    assert sorted(r.json["message_id"] for r in receiver.requests) == sorted(
        f"m{i}" for i in range(PARTS))
    starts = [t for t, _ in turns]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 10  # claims of 20: many turns
    if db.is_postgres:
        assert min(gaps) >= GAP * 0.9, min(gaps)
    else:
        assert min(gaps) < GAP / 2, min(gaps)
