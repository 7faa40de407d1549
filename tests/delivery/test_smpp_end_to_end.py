"""The gateway against the SMSC simulator over real TCP: carriers and routes from the database
(inserted through `carriers_repo`, as the CLI does), the worker and callbacks of
`runtime.delivery`, sends through the API.

Checked: every part reaches a final state while the simulator throttles and drops connections,
every receipt finds its part, the ledger adds up; failover past a carrier whose bind is refused;
permanent rejections end REJECTD with the carrier's error code, refunded to the cent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.test_send import balance
from tests.conftest import Customer, add_rates, make_customer
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import FINAL_STATUSES, LedgerEntry, Part, PendingReceipt
from tikosms.delivery import carriers_repo
from tikosms.delivery.worker import DeliveryWorker
from tikosms.runtime import delivery
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.simulator import SimulatorConfig, SmscSimulator

# 180 Cyrillic characters: UCS-2, 3 parts of at most 67 characters (6 octets go to the UDH)
LONG_UCS2 = ("Привіт! Ваше замовлення №4471 передано до служби доставки. " * 3)[:180]
FAST_RECONNECT = {"reconnect_initial": 0.05, "reconnect_max": 0.5, "throttle_retry_after": 0.2,
                  "bind_lost_retry_after": 0.1}


@asynccontextmanager
async def simulator(**overrides: Any) -> AsyncIterator[SmscSimulator]:
    sim = SmscSimulator(SimulatorConfig(port=0, system_id="tiko", password="pw1", seed=7,
                                        **overrides))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def add_carrier(db: Database, name: str, sim: SmscSimulator, *, password: str = "pw1",
                      priority: int = 100, **settings: Any) -> None:
    async with db.begin() as conn:
        await carriers_repo.add_carrier(conn, name=name, host="127.0.0.1", port=sim.port,
                                        system_id="tiko", password=password,
                                        settings={**FAST_RECONNECT, **settings})
        await carriers_repo.add_route(conn, match="*", carrier=name, priority=priority)


async def wait_bound(worker: DeliveryWorker, *names: str) -> None:
    for name in names:
        carrier = worker.router.carriers[name]
        assert isinstance(carrier, SmppCarrier)
        async with asyncio.timeout(10):
            await carrier.wait_bound()


async def wait_all_final(db: Database, campaign_id: str) -> None:
    """Poll the queue until no part of the campaign is left outside a final state (a guard
    of 60 s against a hang, far above the few seconds it takes)."""
    async with asyncio.timeout(60):
        while True:
            if not await _count(db, Part.campaign_id == campaign_id,
                                Part.status.not_in(FINAL_STATUSES)):
                return
            await asyncio.sleep(0.1)


async def send_campaign(client: httpx.AsyncClient, db: Database, who: Customer,
                        recipients: list[str], message: str = LONG_UCS2) -> dict[str, Any]:
    """The API's answer, plus `total_parts` counted in the queue."""
    r = await client.post("/v1/messages", headers=who.headers, json={
        "from": "Shop", "message": message, "recipients": recipients})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    body["total_parts"] = await _count(db, Part.campaign_id == body["campaign_id"])
    return body


def numbers(n: int) -> list[str]:
    return [f"38050{1000000 + i}" for i in range(n)]


@pytest.mark.slow
async def test_a_long_ucs2_campaign_survives_throttling_and_dropped_binds(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await add_rates(db)
    opening = Decimal("1000")
    who = await make_customer(db, balance=str(opening))
    # every connection is dropped on its 700th submit_sm (those in flight go unanswered)
    async with simulator(drop_after=700, receipt_delay_ms=20, undeliv_ratio=0.1,
                         latency_ms=2) as sim:
        await add_carrier(db, "acme", sim, binds=2, window=50, tps=1000)
        async with delivery(db, settings) as worker:
            await wait_bound(worker, "acme")
            sent = await send_campaign(client, db, who, numbers(1000))
            assert sent["total_parts"] == 3000
            throttling = asyncio.create_task(throttle_midway(sim))
            await wait_all_final(db, sent["campaign_id"])
            async with asyncio.timeout(10):  # a guard: it ended long before the last part
                await throttling
        # 3,000 parts at most 699 per connection, two of them never dropped: 3 drops at least
        assert sim.counters.dropped_connections >= 3

    campaign = Part.campaign_id == sent["campaign_id"]
    assert await _count(db, campaign) == 3000
    assert await _count(db, campaign, Part.status == "DELIVRD") > 2000
    assert await _count(db, campaign, Part.status.not_in(["DELIVRD", "UNDELIV"])) == 0
    # every part got a receipt under the id it was accepted with; none is left waiting
    assert await _count(db, campaign, Part.carrier_message_id.is_(None)) == 0
    assert await _count(db, PendingReceipt.carrier_message_id == Part.carrier_message_id) == 0
    # accepted parts are charged whatever their receipt says; nothing was refunded
    cost = Decimal(sent["cost"])
    assert cost == Decimal("0.045") * 3000
    assert await balance(client, who) == opening - cost
    assert await _ledger_sum(db, who.account_id) == opening - cost


async def test_a_refused_bind_fails_over_to_the_next_carrier(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await add_rates(db)
    who = await make_customer(db, balance="100")
    async with simulator(receipt_delay_ms=10) as sim:
        await add_carrier(db, "wrongpw", sim, password="nope", priority=1)
        await add_carrier(db, "good", sim, priority=2)
        async with delivery(db, settings) as worker:
            wrong = worker.router.carriers["wrongpw"]
            assert isinstance(wrong, SmppCarrier)
            async with asyncio.timeout(10):
                await wrong.wait_state(lambda: "refused" in {b.state for b in wrong.status()})
            assert "bind refused by carrier wrongpw" in wrong.last_error
            await wait_bound(worker, "good")
            sent = await send_campaign(client, db, who, numbers(20))
            await wait_all_final(db, sent["campaign_id"])
        assert sim.counters.bind_failures >= 1

    campaign = Part.campaign_id == sent["campaign_id"]
    assert await _count(db, campaign, Part.status == "DELIVRD") == sent["total_parts"]
    assert await _count(db, campaign, Part.carrier != "good") == 0


async def test_permanent_rejections_end_rejectd_and_are_refunded_to_the_cent(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await add_rates(db)
    opening = Decimal("10.01")
    who = await make_customer(db, balance=str(opening))
    async with simulator(reject_ratio=1.0) as sim:
        await add_carrier(db, "acme", sim)
        async with delivery(db, settings) as worker:
            await wait_bound(worker, "acme")
            sent = await send_campaign(client, db, who, numbers(7))
            assert await balance(client, who) == opening - Decimal(sent["cost"])
            await wait_all_final(db, sent["campaign_id"])
        assert sim.counters.rejected == sent["total_parts"]  # each tried once: no failover

    campaign = Part.campaign_id == sent["campaign_id"]
    assert await _count(db, campaign, Part.status == "REJECTD",
                        Part.error_code == "0x0000000b") == sent["total_parts"]  # RINVDSTADR
    assert await balance(client, who) == opening
    assert await _ledger_sum(db, who.account_id) == opening


async def throttle_midway(sim: SmscSimulator) -> None:
    """Once a third is accepted, the SMSC allows 20 submit_sm a second until it has answered
    ESME_RTHROTTLED 50 times, then recovers (a burst of throttling, whatever the machine's
    speed)."""
    await sim.wait_for(lambda c: c.accepted >= 1000)
    sim.config = replace(sim.config, throttle_tps=20)
    await sim.wait_for(lambda c: c.throttled >= 50)
    sim.config = replace(sim.config, throttle_tps=None)


async def _count(db: Database, *where: Any) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).where(*where))).scalar_one())


async def _ledger_sum(db: Database, account_id: int) -> Decimal:
    async with db.connect() as conn:
        total = (await conn.execute(select(func.sum(LedgerEntry.amount))
                                    .where(LedgerEntry.account_id == account_id))).scalar_one()
    return Decimal(total)
