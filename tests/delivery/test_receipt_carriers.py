"""Carrier message ids are unique per carrier only: a receipt changes only its carrier's part."""

from __future__ import annotations

import httpx
from sqlalchemy import select, update

from tests.conftest import Customer, make_customer
from tikosms.db.engine import Database
from tikosms.db.models import Part, PendingReceipt
from tikosms.db.types import utcnow
from tikosms.delivery.carrier import Receipt
from tikosms.delivery.transitions import record_receipts


async def test_a_receipt_from_one_carrier_leaves_another_carriers_part_alone(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    other = await make_customer(db, name="Other")
    for who, carrier in ((customer, "smsc_a"), (other, "smsc_b")):
        r = await client.post("/v1/message", headers=who.headers, json={
            "from": "Shop", "to": "380501234567", "message": "hi"})
        async with db.begin() as conn:
            await conn.execute(update(Part).where(Part.message_id == r.json()["message_id"])
                               .values(status="ENROUTE", carrier=carrier,
                                       carrier_message_id="1000"))
    async with db.begin() as conn:
        await record_receipts(conn, [Receipt("1000", "UNDELIV", "001", utcnow(),
                                             alt_ids=("3e8",), carrier="smsc_a")], utcnow())
    async with db.connect() as conn:
        rows = dict((await conn.execute(select(Part.carrier, Part.status))).all())
    assert rows == {"smsc_a": "UNDELIV", "smsc_b": "ENROUTE"}


async def test_an_early_receipt_waits_for_a_part_of_its_own_carrier(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    from tikosms.delivery.transitions import Accepted, record_accepted

    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    async with db.connect() as conn:
        part_id = (await conn.execute(select(Part.id).where(
            Part.message_id == r.json()["message_id"]))).scalar_one()
    async with db.begin() as conn:  # smsc_a reports id 77 before any submit is recorded
        await record_receipts(conn, [Receipt("77", "DELIVRD", None, utcnow(),
                                             carrier="smsc_a")], utcnow())
    async with db.begin() as conn:  # smsc_b accepted our part as its own 77
        await record_accepted(conn, [Accepted(part_id, "smsc_b", "77", callback=False)],
                              utcnow())
    async with db.connect() as conn:
        status = (await conn.execute(select(Part.status).where(Part.id == part_id))).scalar_one()
    assert status == "ENROUTE"  # smsc_a's receipt is not ours...
    async with db.connect() as conn:  # ...and stays kept for smsc_a's own part 77
        kept = (await conn.execute(select(PendingReceipt.carrier))).scalars().all()
    assert kept == ["smsc_a"]
