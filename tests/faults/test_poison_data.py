"""Poison data from a carrier fails only its own part or receipt, on both databases: an
over-long carrier message id, an over-long receipt `err:`, control characters, beside good
parts of another account. The good ones are recorded, the bad one ends as documented
(UNKNOWN carrier_id_invalid, charged; a receipt acknowledged and dropped), nothing is retried
forever."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from tests.api.test_send import balance
from tests.conftest import Customer, make_customer
from tests.delivery.test_worker_processes import wait_for
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Part
from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitOutcome
from tikosms.delivery.routing import Router, RouteRule
from tikosms.delivery.transitions import Accepted
from tikosms.delivery.worker import DeliveryWorker, _Item

BAD_NUMBER = "380671234567"


class Hostile:
    """Accepts every part; the part to BAD_NUMBER gets `bad_id` as its message id."""

    name = "hostile"
    available = True

    def __init__(self, bad_id: str) -> None:
        self.bad_id = bad_id

    async def start(self, on_receipt: object) -> None: ...
    async def stop(self) -> None: ...

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        return SubmitOutcome.accepted(self.bad_id if part.to == BAD_NUMBER else f"m{part.part_id}")


async def _send(client: httpx.AsyncClient, who: Customer, numbers: list[str]) -> str:
    r = await client.post("/v1/messages", headers=who.headers, json={
        "from": "Shop", "message": "hi", "recipients": numbers})
    assert r.status_code == 200, r.text
    return str(r.json()["campaign_id"])


async def _parts(db: Database) -> dict[str, tuple[str, str | None, str | None]]:
    async with db.connect() as conn:
        rows = await conn.execute(select(Part.to, Part.status, Part.error_code,
                                         Part.carrier_message_id))
        return {r.to: (r.status, r.error_code, r.carrier_message_id) for r in rows}


@pytest.mark.parametrize("bad_id", [
    "9" * 200,  # longer than the column (64)
    "ab\x00cd",  # NUL: PostgreSQL refuses it in text
    "id\udc80",  # a lone surrogate (an id decoded badly): no database can store it
])
async def test_an_unusable_carrier_id_fails_its_part_alone(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    bad_id: str,
) -> None:
    other = await make_customer(db, name="Other")
    good_numbers = [f"38050{1000000 + i}" for i in range(5)]
    await _send(client, other, good_numbers)
    await _send(client, customer, [BAD_NUMBER])
    worker = DeliveryWorker(db, settings, Router({"hostile": Hostile(bad_id)},  # type: ignore[dict-item]
                                                 [RouteRule("*", "hostile", 0)]))
    await worker.start()
    try:
        async def sent() -> bool:
            return all(s != "QUEUED" for s, _e, _c in (await _parts(db)).values())

        await wait_for(sent, 10, "parts left in the queue")
    finally:
        await worker.stop()
    parts = await _parts(db)
    assert {parts[n][0] for n in good_numbers} == {"ENROUTE"}
    assert parts[BAD_NUMBER] == ("UNKNOWN", "carrier_id_invalid", None)
    assert await balance(client, customer) == Decimal("99.95")  # charged: the carrier took it


@pytest.mark.parametrize("bad_id", ["id\udc80", "9" * 200])
async def test_the_recorder_isolates_a_value_the_database_refuses(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str, bad_id: str,
) -> None:
    """Past the boundary checks (a value they missed): the batch is split, the good parts of
    the other account are recorded, the bad one ends UNKNOWN, the write does not loop."""
    if len(bad_id) > 64 and database_url.startswith("sqlite"):
        pytest.skip("SQLite does not enforce column lengths")
    other = await make_customer(db, name="Other")
    await _send(client, other, [f"38050{1000000 + i}" for i in range(5)])
    await _send(client, customer, [BAD_NUMBER])
    async with db.connect() as conn:
        ids = {r.to: r.id for r in await conn.execute(select(Part.id, Part.to))}
    worker = DeliveryWorker(db, settings, Router({}, []))
    receipt_done = asyncio.get_running_loop().create_future()
    batch = [_Item("accepted", Accepted(pid, "c1", bad_id if to == BAD_NUMBER else f"m{pid}"))
             for to, pid in ids.items()]
    batch.append(_Item("receipt", Receipt(bad_id, "DELIVRD", carrier="c1"), receipt_done))
    batch.append(_Item("receipt", Receipt(f"m{ids['380501000000']}", "DELIVRD", carrier="c1")))

    async with asyncio.timeout(10):
        await worker._write(batch)

    parts = await _parts(db)
    assert parts["380501000000"][0] == "DELIVRD"
    assert {parts[f"38050{1000000 + i}"][0] for i in range(1, 5)} == {"ENROUTE"}
    assert parts[BAD_NUMBER][:2] == ("UNKNOWN", "carrier_id_invalid")
    assert receipt_done.done()  # acknowledged to the carrier: never sent again and again


async def test_a_receipt_with_an_overlong_or_garbled_err_is_applied_with_it_cleaned(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
) -> None:
    await _send(client, customer, ["380501000000", "380501000001"])
    async with db.connect() as conn:
        ids = sorted(r.id for r in await conn.execute(select(Part.id)))
    worker = DeliveryWorker(db, settings, Router({}, []))
    await worker.start()
    try:
        await worker._write([_Item("accepted", Accepted(pid, "c1", f"m{pid}")) for pid in ids])
        async with asyncio.timeout(10):
            await worker.on_receipt(Receipt(f"m{ids[0]}", "UNDELIV", "E" * 300, carrier="c1"))
            await worker.on_receipt(Receipt(f"m{ids[1]}", "UNDELIV", "0\x001\x1b", carrier="c1"))
            await worker.on_receipt(Receipt("x" * 500, "DELIVRD", carrier="c1"))  # dropped
    finally:
        await worker.stop()
    parts = await _parts(db)
    assert parts["380501000000"][:2] == ("UNDELIV", "E" * 32)
    assert parts["380501000001"][:2] == ("UNDELIV", "01")
