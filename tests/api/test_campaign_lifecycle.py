"""A campaign's lifecycle as `GET /v1/get_messages` shows it: scheduled -> active -> completed,
or canceled, with its parts counted by status by the worker's housekeeping roll-up."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import Customer
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import FINAL_STATUSES, Part
from tikosms.messaging import lifecycle
from tikosms.runtime import delivery

CAMPAIGN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
RECIPIENTS = ["380501234567", "380671234567", "380501234568"]
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


async def send(client: httpx.AsyncClient, who: Customer, **extra: Any) -> str:
    r = await client.post("/v1/messages", headers=who.headers, json={
        "from": "Shop", "message": "Your order is on its way", "recipients": RECIPIENTS,
        **extra})
    assert r.status_code == 200, r.text
    return str(r.json()["campaign_id"])


async def shown(client: httpx.AsyncClient, who: Customer, campaign_id: str) -> dict[str, Any]:
    r = await client.get("/v1/get_messages", headers=who.headers,
                         params={"campaign_id": campaign_id})
    assert r.status_code == 200, r.text
    campaign: dict[str, Any] = r.json()["campaigns"][0]
    return campaign


async def wait_all_final(db: Database, campaign_id: str) -> None:
    async with asyncio.timeout(30):  # a guard against a hang; it takes well under a second
        while True:
            async with db.connect() as conn:
                left = (await conn.execute(select(func.count()).where(
                    Part.campaign_id == campaign_id,
                    Part.status.not_in(FINAL_STATUSES)))).scalar_one()
            if not left:
                return
            await asyncio.sleep(0.05)


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")


async def test_a_new_campaign_is_active_and_not_yet_counted(
        client: httpx.AsyncClient, customer: Customer) -> None:
    c = await shown(client, customer, await send(client, customer))
    assert c["status"] == "active"
    assert c["counts"] is None and c["counted_at"] is None and c["completed_at"] is None
    # the published fields are all still there
    assert {"campaign_id", "sender", "message", "recipients", "created_at",
            "updated_at"} <= c.keys()


async def test_parts_waiting_in_the_queue_are_counted_and_keep_it_active(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    cid = await send(client, customer)
    await lifecycle.roll_up(db)  # no worker runs: the parts stay QUEUED
    c = await shown(client, customer, cid)
    assert c["status"] == "active" and c["counts"] == {"QUEUED": 3}
    assert CAMPAIGN_TIME.fullmatch(c["counted_at"]) and c["completed_at"] is None


async def test_a_delivered_campaign_becomes_completed_with_its_counts(
        client: httpx.AsyncClient, db: Database, settings: Settings,
        customer: Customer) -> None:
    cid = await send(client, customer)
    before = await shown(client, customer, cid)
    async with delivery(db, settings) as worker:  # the simulated carrier: every part DELIVRD
        await wait_all_final(db, cid)
        await worker.housekeeping_once()  # what the worker runs every few seconds
    c = await shown(client, customer, cid)
    assert c["status"] == "completed"
    assert c["counts"] == {"DELIVRD": 3}
    assert CAMPAIGN_TIME.fullmatch(c["completed_at"])
    assert c["updated_at"] > before["updated_at"]  # the status changed


async def test_a_scheduled_campaign_shows_scheduled_with_its_parts_waiting(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    cid = await send(client, customer, scheduled_at=in_hours(1))
    c = await shown(client, customer, cid)
    assert c["status"] == "scheduled" and c["counts"] == {"SCHEDULED": 3}
    await lifecycle.roll_up(db)
    c = await shown(client, customer, cid)
    assert c["status"] == "scheduled" and c["counts"] == {"SCHEDULED": 3}
    assert c["completed_at"] is None


async def test_a_canceled_campaign_shows_canceled_and_is_finished_once_counted(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    cid = await send(client, customer, scheduled_at=in_hours(1))
    await lifecycle.roll_up(db)  # counted once while it waits
    r = await client.post(f"/v1/campaigns/{cid}/cancel", headers=customer.headers)
    assert r.status_code == 200 and r.json()["cancelled"] == 3
    assert (await shown(client, customer, cid))["status"] == "canceled"
    await lifecycle.roll_up(db)
    c = await shown(client, customer, cid)
    assert c["status"] == "canceled" and c["counts"] == {"CANCELED": 3}
    assert CAMPAIGN_TIME.fullmatch(c["completed_at"])


async def test_a_finished_campaign_is_no_longer_counted(
        client: httpx.AsyncClient, db: Database, settings: Settings,
        customer: Customer) -> None:
    cid = await send(client, customer)
    async with delivery(db, settings) as worker:
        await wait_all_final(db, cid)
        await worker.housekeeping_once()
    counted_at = (await shown(client, customer, cid))["counted_at"]
    await lifecycle.roll_up(db)
    assert (await shown(client, customer, cid))["counted_at"] == counted_at


@pytest.mark.parametrize(("status", "scheduled_at", "expected"), [
    ("active", None, "active"),  # not scheduled
    ("active", NOW + timedelta(seconds=1), "scheduled"),  # its time has not come
    ("active", NOW, "active"),  # its time has come: active at once, nothing written
    ("active", NOW - timedelta(hours=1), "active"),
    ("canceled", NOW + timedelta(hours=1), "canceled"),  # canceled before it started
    ("completed", None, "completed"),
])
def test_shown_status(status: str, scheduled_at: datetime | None, expected: str) -> None:
    assert lifecycle.shown_status(status, scheduled_at, NOW) == expected


async def test_campaigns_beyond_one_round_are_all_counted(
        client: httpx.AsyncClient, db: Database, customer: Customer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "ROUND_CAMPAIGNS", 2)  # 5 campaigns: three rounds
    monkeypatch.setattr(lifecycle, "SQLITE_WRITE_CHUNK", 1)
    ids = [await send(client, customer) for _ in range(5)]
    await lifecycle.roll_up(db)
    for cid in ids:
        assert (await shown(client, customer, cid))["counts"] == {"QUEUED": 3}
