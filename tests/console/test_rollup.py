"""The traffic roll-up: what it counts, that it counts each event once across passes, and
that the overview and carrier pages read it."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import select, update

from tests.conftest import Customer
from tikosms.console import rollup
from tikosms.db.engine import Database
from tikosms.db.models import Part, TrafficMinute
from tikosms.db.types import utcnow


def _part(**kw: object) -> SimpleNamespace:
    now = utcnow().replace(second=30, microsecond=0)
    base = {"created_at": now, "sent_at": None, "delivered_at": None, "updated_at": now,
            "status": "QUEUED", "carrier": None, "mccmnc": "25501"}
    base.update(kw)
    return SimpleNamespace(**base)


def test_each_event_in_the_window_is_counted_once() -> None:
    t = utcnow().replace(second=0, microsecond=0)
    rows = [
        # accepted, sent and delivered 1.5 s later, all inside the window
        _part(created_at=t, sent_at=t + timedelta(seconds=1), status="DELIVRD",
              delivered_at=t + timedelta(seconds=2.5), updated_at=t + timedelta(seconds=2.5),
              carrier="c1"),
        # created before the window: only its failure counts
        _part(created_at=t - timedelta(minutes=5), sent_at=t - timedelta(minutes=5),
              status="UNDELIV", updated_at=t + timedelta(seconds=3), carrier="c1"),
    ]
    tally = rollup.count_events(rows, t, t + timedelta(minutes=1))
    assert tally.counts[(t, "c1", "25501")] == {"accepted": 1, "sent": 1, "delivered": 1,
                                                "failed": 1}
    assert tally.hists[(t, "c1", "25501")] == {"2000": 1}


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
