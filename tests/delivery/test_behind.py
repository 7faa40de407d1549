"""The worker tells whether it is behind (parts due that it has not claimed yet), which the
callbacks of its process yield to (tikosms.callbacks.dispatcher): true while a campaign is being
taken in batches, false again once everything due is claimed."""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import func, select

from tests.conftest import Customer, make_customer
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Part
from tikosms.delivery import worker as worker_module
from tikosms.runtime import delivery


async def test_the_worker_is_behind_while_a_campaign_waits_and_not_once_it_is_taken_in(
        client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    # `customer` sets up the rates the campaign is priced with
    rich = await make_customer(db, balance="1000", name="Campaign")
    r = await client.post("/v1/messages", headers=rich.headers, json={
        "from": "Brand", "message": "sale",
        "recipients": [f"38050{1000000 + i}" for i in range(2000)]})
    assert r.status_code == 200, r.text
    small_claims = settings.model_copy(update={"claim_batch": 50})
    seen: list[bool] = []

    async def waiting() -> int:
        async with db.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(Part).where(
                Part.account_id == rich.account_id,
                Part.status.in_(("QUEUED", "SCHEDULED"))))).scalar_one()

    async with delivery(db, small_claims) as worker:
        deadline = time.monotonic() + 30
        while await waiting() and time.monotonic() < deadline:
            seen.append(worker.behind())
            await asyncio.sleep(0.002)
        assert not await waiting(), "the campaign was not taken in within 30 s"
        assert any(seen), "2,000 parts due, claims of 50: the worker never counted itself behind"
        await asyncio.sleep(worker_module.BEHIND_FOR + 0.3)
        assert not worker.behind(), "nothing left to claim, yet still behind"
