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


async def test_receipts_find_their_parts_through_the_carrier_message_id_index(
    db: Database
) -> None:
    """The index holds only parts a carrier has accepted (partial, so that a campaign's COPY does
    not index 100,000 NULLs); the receipt lookup must still be able to use it, or every receipt
    would scan the whole parts table."""
    from tikosms.delivery.transitions import _PARTS_FOR_RECEIPTS

    dialect = "postgresql" if db.is_postgres else "sqlite"
    sql = _PARTS_FOR_RECEIPTS[dialect]
    async with db.connect() as conn:
        if db.is_postgres:
            await conn.exec_driver_sql("SET enable_seqscan = off")  # a plan without the index
            raw = (await conn.get_raw_connection()).driver_connection
            plan = "\n".join(r[0] for r in await raw.fetch(  # type: ignore[union-attr]
                "EXPLAIN " + sql, ["1000", "1001"]))
            await conn.exec_driver_sql("RESET enable_seqscan")
        else:
            plan = "\n".join(str(r[-1]) for r in (await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql, ('["1000", "1001"]',))).all())
    assert "ix_parts_carrier_msgid" in plan, plan
