"""The traffic roll-up: what it counts, that it counts each event once across passes, and
that the overview and carrier pages read it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from tests.conftest import Customer
from tikosms.console import rollup
from tikosms.db.engine import Database
from tikosms.db.models import Part, TrafficMinute
from tikosms.db.types import utcnow


async def test_each_event_in_the_window_is_counted_once(client, db: Database,  # type: ignore[no-untyped-def]
                                                        customer: Customer) -> None:
    await _send(client, customer, 3)
    async with db.connect() as conn:
        ids = (await conn.execute(select(Part.id).order_by(Part.id))).scalars().all()
        mccmnc = (await conn.execute(select(Part.mccmnc).limit(1))).scalar_one()
    t = (utcnow() + timedelta(minutes=2)).replace(second=0, microsecond=0)
    async with db.begin() as conn:  # all of them made and changed well before the window
        await conn.execute(update(Part).values(created_at=t - timedelta(minutes=10),
                                               updated_at=t - timedelta(minutes=10)))
    await rollup.run_once(db, t + rollup.SETTLE)  # the window now starts at t
    s = timedelta(seconds=1)
    async with db.begin() as conn:
        # accepted, sent and delivered 1.5 s later (the 2,000 ms bucket), all in the window
        await conn.execute(update(Part).where(Part.id == ids[0]).values(
            created_at=t, sent_at=t + s, status="DELIVRD", delivered_at=t + 2.5 * s,
            updated_at=t + 2.5 * s, carrier="c1"))
        # created and sent before the window: only its failure counts
        await conn.execute(update(Part).where(Part.id == ids[1]).values(
            created_at=t - timedelta(minutes=5), sent_at=t - timedelta(minutes=5),
            status="UNDELIV", updated_at=t + 3 * s, carrier="c1"))
        # delivered exactly 2,000 ms after it was sent: still the 2,000 ms bucket; the next
        # minute (t + 1 min 0.5 s) is outside this window
        await conn.execute(update(Part).where(Part.id == ids[2]).values(
            created_at=t + 58 * s, sent_at=t + 58.5 * s, status="DELIVRD",
            delivered_at=t + 60.5 * s, updated_at=t + 60.5 * s, carrier="c1"))
    await rollup.run_once(db, t + timedelta(minutes=1) + rollup.SETTLE)
    async with db.connect() as conn:
        rows = {(r.minute, r.carrier): r for r in (await conn.execute(select(
            TrafficMinute).where(TrafficMinute.minute >= t))).all()}
    assert set(rows) == {(t, "c1")}
    row = rows[(t, "c1")]
    assert row.mccmnc == mccmnc
    assert (row.accepted, row.sent, row.delivered, row.failed) == (2, 2, 1, 1)
    assert json.loads(row.dlv_hist) == {"2000": 1}
    await rollup.run_once(db, t + timedelta(minutes=2) + rollup.SETTLE)  # the next minute
    async with db.connect() as conn:
        later = (await conn.execute(select(TrafficMinute).where(
            TrafficMinute.minute == t + timedelta(minutes=1)))).one()
    assert (later.accepted, later.sent, later.delivered, later.failed) == (0, 0, 1, 0)
    assert json.loads(later.dlv_hist) == {"2000": 1}


async def test_a_pass_that_finds_the_watermark_moved_adds_nothing(client, db: Database,  # type: ignore[no-untyped-def]
                                                                 customer: Customer,
                                                                 monkeypatch: Any) -> None:
    await _send(client, customer, 2)
    t = utcnow() + timedelta(seconds=10)
    counted = rollup.count_events
    others: list[int] = []
    nested = False

    async def meanwhile(conn: Any, lo: Any, hi: Any) -> Any:  # another process's pass ends
        nonlocal nested
        tally = await counted(conn, lo, hi)
        if not nested:
            nested = True
            others.append(await rollup.run_once(db, t))
        return tally

    monkeypatch.setattr(rollup, "count_events", meanwhile)
    assert await rollup.run_once(db, t) == 0  # dropped: the window was counted meanwhile
    assert others and others[0] > 0  # by the other pass
    monkeypatch.setattr(rollup, "count_events", counted)
    async with db.connect() as conn:
        rows = (await conn.execute(select(TrafficMinute))).all()
    assert sum(r.accepted for r in rows) == 2  # once, not twice


def test_median_is_the_bucket_holding_the_middle_delivery() -> None:
    assert rollup.median_ms({"500": 1, "2000": 2, "60000": 1}) == 2000
    assert rollup.median_ms({}) is None


async def _send(client, customer: Customer, n: int) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "hi", "recipients": [f"38050{i:07d}" for i in range(n)]})
    assert r.status_code == 200, r.text


async def test_passes_add_up_without_counting_twice(client, db: Database,  # type: ignore[no-untyped-def]
                                                   customer: Customer) -> None:
    await _send(client, customer, 3)
    later = utcnow() + timedelta(seconds=10)
    await rollup.run_once(db, later)
    # the parts are delivered after the first pass
    async with db.begin() as conn:
        await conn.execute(update(Part).values(
            status="DELIVRD", carrier="sim", sent_at=later,
            delivered_at=later + timedelta(seconds=1), updated_at=later + timedelta(seconds=1)))
    await rollup.run_once(db, later + timedelta(seconds=10))
    await rollup.run_once(db, later + timedelta(seconds=20))  # nothing new: nothing added
    async with db.connect() as conn:
        rows = (await conn.execute(select(TrafficMinute))).all()
    assert sum(r.accepted for r in rows) == 3
    assert sum(r.sent for r in rows) == 3
    assert sum(r.delivered for r in rows) == 3
    assert sum(r.failed for r in rows) == 0
