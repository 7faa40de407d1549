"""Recording submit outcomes and receipts (`delivery.transitions`) on both databases: the
statuses, the callbacks queued with them (and none without a callback URL), the receipts
that come early or more than once."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select

from tests.conftest import Customer
from tikosms.db.engine import Database
from tikosms.db.models import CallbackEvent, Campaign, Part, PendingReceipt
from tikosms.db.types import utcnow
from tikosms.delivery import queue, transitions
from tikosms.delivery.carrier import Receipt
from tikosms.delivery.transitions import Accepted

CALLBACK = "http://127.0.0.1:9/hook"


async def _send(client: httpx.AsyncClient, customer: Customer, recipients: int,
                callback_url: str | None = None) -> None:
    body: dict[str, object] = {"from": "Shop", "message": "hi",
                               "recipients": [f"38050{1000000 + i}" for i in range(recipients)]}
    if callback_url:
        body["callback_url"] = callback_url
    r = await client.post("/v1/messages", headers=customer.headers, json=body)
    assert r.status_code == 200, r.text


async def _accept_all(db: Database, callback: bool) -> dict[int, str]:
    """Claim every due part and record it accepted as carrier message id "m<part id>"."""
    now = utcnow()
    async with db.begin() as conn:
        claimed = await queue.claim_due_parts(conn, "test", 1000, now, 30)
        ids = {p.id: f"m{p.id}" for p in claimed}
        await transitions.record_accepted(
            conn, [Accepted(pid, "c1", cmid, callback) for pid, cmid in ids.items()], now)
    return ids


async def _statuses(db: Database) -> dict[int, str]:
    async with db.connect() as conn:
        return {r.id: r.status for r in await conn.execute(select(Part.id, Part.status))}


async def _events(db: Database) -> list[str]:
    async with db.connect() as conn:
        rows = (await conn.execute(select(CallbackEvent.payload).order_by(CallbackEvent.id)))
        return [r.payload for r in rows]


async def test_accepted_and_delivered_parts_queue_their_callbacks(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await _send(client, customer, 3, CALLBACK)
    ids = await _accept_all(db, callback=True)
    assert set((await _statuses(db)).values()) == {"ENROUTE"}
    done = datetime(2024, 9, 1, 12, 1, tzinfo=UTC)
    async with db.begin() as conn:
        matched = await transitions.record_receipts(
            conn, [Receipt(cmid, "DELIVRD", None, done) for cmid in ids.values()], utcnow())
    assert matched == 3
    assert set((await _statuses(db)).values()) == {"DELIVRD"}
    async with db.connect() as conn:
        delivered = {r[0] for r in await conn.execute(select(Part.delivered_at))}
    assert delivered == {done}
    events = await _events(db)
    assert len(events) == 6  # ENROUTE and DELIVRD for each part
    assert sum('"status":"DELIVRD"' in e for e in events) == 3


async def test_parts_without_a_callback_url_change_status_and_queue_nothing(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await _send(client, customer, 2)
    ids = await _accept_all(db, callback=False)
    async with db.begin() as conn:
        await transitions.record_receipts(
            conn, [Receipt(cmid, "UNDELIV", "001") for cmid in ids.values()], utcnow())
    assert set((await _statuses(db)).values()) == {"UNDELIV"}
    assert await _events(db) == []


async def test_a_late_intermediate_or_second_final_receipt_changes_nothing(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await _send(client, customer, 1, CALLBACK)
    ((pid, cmid),) = (await _accept_all(db, callback=True)).items()
    async with db.begin() as conn:
        # in one batch: the final state, then a late intermediate one and another final one
        await transitions.record_receipts(conn, [
            Receipt(cmid, "DELIVRD"), Receipt(cmid, "ACCEPTD"), Receipt(cmid, "UNDELIV")],
            utcnow())
    async with db.begin() as conn:
        await transitions.record_receipts(conn, [Receipt(cmid, "ACCEPTD")], utcnow())
    assert (await _statuses(db))[pid] == "DELIVRD"
    assert len(await _events(db)) == 2  # ENROUTE, DELIVRD
    async with db.connect() as conn:  # every one of them found its part: none kept for later
        assert (await conn.execute(select(func.count()).select_from(PendingReceipt))).scalar() == 0


async def test_a_receipt_matches_by_another_spelling_of_the_id(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await _send(client, customer, 1)
    ((pid, cmid),) = (await _accept_all(db, callback=False)).items()
    async with db.begin() as conn:
        await transitions.record_receipts(
            conn, [Receipt("other-spelling", "DELIVRD", alt_ids=("x", cmid))], utcnow())
    assert (await _statuses(db))[pid] == "DELIVRD"


async def test_a_receipt_before_its_submit_is_applied_when_the_submit_is_recorded(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await _send(client, customer, 1, CALLBACK)
    async with db.connect() as conn:
        pid = (await conn.execute(select(Part.id))).scalar_one()
    async with db.begin() as conn:
        matched = await transitions.record_receipts(
            conn, [Receipt(f"m{pid}", "DELIVRD")], utcnow())
    assert matched == 0
    await _accept_all(db, callback=True)
    assert (await _statuses(db))[pid] == "DELIVRD"
    assert len(await _events(db)) == 2
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(PendingReceipt))).scalar() == 0


async def test_the_transaction_counts_the_callbacks_it_queued(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    """The worker wakes the callback dispatcher only when a recorded batch queued callbacks
    (waking it for every batch cost ~5% of a worker's CPU on traffic without callbacks)."""
    await _send(client, customer, 2, CALLBACK)
    await _send(client, customer, 2)
    now = utcnow()
    async with db.begin() as conn:
        claimed = await queue.claim_due_parts(conn, "test", 1000, now, 30)
        campaigns = {p.id: p.campaign_id for p in claimed}
        hooked = (await conn.execute(select(Campaign.id).where(
            Campaign.callback_url.is_not(None)))).scalar_one()
        with_url = {pid for pid, cid in campaigns.items() if cid == hooked}
    assert len(with_url) == 2 and len(campaigns) == 4
    counts = []
    for ids in (set(campaigns) - with_url, with_url):  # the campaign without a URL first
        async with db.begin() as conn:
            await transitions.record_accepted(
                conn, [Accepted(pid, "c1", f"m{pid}", pid in with_url) for pid in ids], now)
            await transitions.record_receipts(
                conn, [Receipt(f"m{pid}", "DELIVRD", None, now, carrier="c1") for pid in ids],
                now)
            counts.append(conn.info.pop(transitions.EVENTS_WRITTEN, 0))
    assert counts == [0, 4]  # ENROUTE and DELIVRD for each of the two parts with a URL
    assert len(await _events(db)) == 4
