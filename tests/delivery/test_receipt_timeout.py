"""A part a carrier took whose final receipt never comes ends UNKNOWN after the receipt timeout:
charged, announced, its campaign completed (and so prunable); recent parts and final ones are
left alone, and a worker that was down catches up."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from tests.api.test_send import balance
from tests.conftest import Customer
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import CallbackEvent, Campaign, Part
from tikosms.db.types import utcnow
from tikosms.delivery import receipt_timeout
from tikosms.delivery.carrier import Receipt
from tikosms.delivery.routing import Router
from tikosms.delivery.transitions import record_receipts
from tikosms.delivery.worker import DeliveryWorker

RECIPIENTS = ["380501234567", "380671234567", "380631234567"]


async def _campaign(client: httpx.AsyncClient, customer: Customer) -> str:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "hi", "recipients": RECIPIENTS,
        "callback_url": "https://example.com/cb"})
    assert r.status_code == 200, r.text
    return str(r.json()["campaign_id"])


async def _with_carrier(db: Database, hours_ago: float, status: str = "ENROUTE",
                        to: str | None = None) -> None:
    when = utcnow() - timedelta(hours=hours_ago)
    where = Part.to == to if to else Part.id > 0
    async with db.begin() as conn:
        await conn.execute(update(Part).where(where).values(
            status=status, carrier="sim", carrier_message_id=f"c-{to or 'all'}",
            sent_at=when, updated_at=when))


async def _statuses(db: Database) -> dict[str, tuple[str, str | None]]:
    async with db.connect() as conn:
        rows = (await conn.execute(select(Part.to, Part.status, Part.error_code))).all()
    return {to: (status, err) for to, status, err in rows}


async def test_a_part_without_news_for_the_timeout_ends_unknown_charged_and_announced(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    campaign_id = await _campaign(client, customer)
    charged = await balance(client, customer)
    await _with_carrier(db, 73, to=RECIPIENTS[0])   # lost receipt
    await _with_carrier(db, 1, to=RECIPIENTS[1])    # still within the timeout
    await _with_carrier(db, 100, status="DELIVRD", to=RECIPIENTS[2])  # final: left alone
    await DeliveryWorker(db, settings, Router({}, [])).housekeeping_once()
    assert await _statuses(db) == {
        RECIPIENTS[0]: ("UNKNOWN", "receipt_timeout"),
        RECIPIENTS[1]: ("ENROUTE", None),
        RECIPIENTS[2]: ("DELIVRD", None),
    }
    assert await balance(client, customer) == charged  # the carrier took it: no refund
    async with db.connect() as conn:
        payloads = [json.loads(p) for (p,) in await conn.execute(select(CallbackEvent.payload))]
    assert [p["status"] for p in payloads] == ["UNKNOWN"]
    assert payloads[0]["to"].endswith(RECIPIENTS[0][-9:])
    # a receipt that comes after all does not overwrite the final state
    async with db.begin() as conn:
        await record_receipts(conn, [Receipt(carrier_message_id=f"c-{RECIPIENTS[0]}",
                                             status="DELIVRD", carrier="sim")], utcnow())
    assert (await _statuses(db))[RECIPIENTS[0]] == ("UNKNOWN", "receipt_timeout")
    # once the last one times out too (a shorter timeout), the campaign completes
    shorter = settings.model_copy(update={"receipt_timeout_seconds": 1800.0})
    for _ in range(5):  # the watermark walks the 71 hours since, 20 an hour a round
        await receipt_timeout.expire_unreceipted(db, shorter, utcnow())
    await DeliveryWorker(db, shorter, Router({}, [])).housekeeping_once()
    assert (await _statuses(db))[RECIPIENTS[1]] == ("UNKNOWN", "receipt_timeout")
    async with db.connect() as conn:
        status = (await conn.execute(select(Campaign.status).where(
            Campaign.id == campaign_id))).scalar_one()
    assert status == "completed"


async def test_a_worker_that_was_down_catches_up_batch_by_batch(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receipt_timeout, "SCAN", 2)  # more parts than a batch reads
    monkeypatch.setattr(receipt_timeout, "MAX_BATCHES", 3)
    for _ in range(3):
        await _campaign(client, customer)
    await _with_carrier(db, 24 * 10)  # nine parts, ten days without news
    async with db.begin() as conn:  # each last changed at a time of its own; two at one instant
        ids = sorted((await conn.execute(select(Part.id))).scalars())
        for n, part_id in enumerate(ids):
            await conn.execute(update(Part).where(Part.id == part_id).values(
                updated_at=utcnow() - timedelta(days=10, minutes=min(n, 7))))
    now = utcnow()
    done = []
    for _ in range(4):  # housekeeping rounds
        done.append(await receipt_timeout.expire_unreceipted(db, settings, now))
    assert done[0] < 9  # bounded per round
    assert sum(done) == 9
    assert {s for s, _ in (await _statuses(db)).values()} == {"UNKNOWN"}


async def test_no_timeout_when_it_is_switched_off(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    await _campaign(client, customer)
    await _with_carrier(db, 24 * 30)
    off = settings.model_copy(update={"receipt_timeout_seconds": 0.0})
    assert await receipt_timeout.expire_unreceipted(db, off, utcnow()) == 0
    assert {s for s, _ in (await _statuses(db)).values()} == {"ENROUTE"}
