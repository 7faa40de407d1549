"""Parts that could not be sent for 48 hours expire and are refunded, retries or not."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
from sqlalchemy import select, update

from tests.api.test_send import balance
from tests.conftest import Customer
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Campaign, Part
from tikosms.db.types import utcnow
from tikosms.delivery.routing import Router
from tikosms.delivery.worker import DeliveryWorker


async def test_a_part_retried_for_two_days_expires_and_is_refunded(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    assert await balance(client, customer) == Decimal("99.955")
    long_ago = utcnow() - timedelta(hours=49)
    async with db.begin() as conn:
        await conn.execute(update(Campaign).values(created_at=long_ago))
        # the last retry pushed its due time into the future
        await conn.execute(update(Part).values(due_at=utcnow() + timedelta(seconds=30)))
    worker = DeliveryWorker(db, settings, Router({}, []))
    await worker.housekeeping_once()
    async with db.connect() as conn:
        status = (await conn.execute(select(Part.status).where(
            Part.message_id == r.json()["message_id"]))).scalar_one()
    assert status == "EXPIRED"
    assert await balance(client, customer) == Decimal(100)


async def test_a_campaign_scheduled_long_after_it_was_sent_does_not_expire_early(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    at = (utcnow() + timedelta(days=5)).strftime("%Y-%m-%d %H:%M:%S")
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "later", "scheduled_at": at, "recipients": ["380501234567"]})
    async with db.begin() as conn:
        await conn.execute(update(Campaign).values(created_at=utcnow() - timedelta(days=3)))
    await DeliveryWorker(db, settings, Router({}, [])).housekeeping_once()
    rows = (await client.get("/v1/get_message", headers=customer.headers,
                             params={"campaign_id": r.json()["campaign_id"]})).json()["data"]
    assert rows[0]["status"] == "SCHEDULED"
