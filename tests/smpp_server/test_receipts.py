"""Receipts to SMPP customers: deliver_sm in the standard text with the TLVs, on any receiver
bind of the account, kept until acknowledged, delivered after a reconnect."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from tests.smpp_server.conftest import BareServer, Gateway, Inbox, customer, running_gateway
from tests.smpp_server.test_submit import fields, wait_final
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Part, SmppOutboxItem
from tikosms.db.types import utcnow
from tikosms.smpp.pdu import ESM_SMSC_RECEIPT, Status, Tag
from tikosms.smpp_server.outbox import enqueue_receipts

# what strict clients parse (SMPP 3.4 Appendix B), every field present, in this order
STRICT = re.compile(
    r"id:(?P<id>[0-9a-f-]{36}) sub:001 dlvrd:(?P<dlvrd>00[01]) submit date:\d{10} "
    r"done date:\d{10} stat:(?P<stat>DELIVRD|UNDELIV|EXPIRED|REJECTD|DELETED|UNKNOWN) "
    r"err:(?P<err>\d{3}) text:(?P<text>.{0,20})")


def receipt_fields(pdu: object) -> dict[str, str]:
    text = pdu.short_message.decode("ascii")  # type: ignore[attr-defined]
    match = STRICT.fullmatch(text)
    assert match is not None, text
    return match.groupdict()


async def pending_in_outbox(db: Database) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(SmppOutboxItem).where(
            SmppOutboxItem.delivered_at.is_(None)))).scalar_one())


async def wait_outbox_empty(db: Database) -> None:
    """Acknowledgements are written in the pump's next round: wait for it (a guard of 10 s)."""
    async with asyncio.timeout(10):
        while True:
            if not await pending_in_outbox(db):
                return
            await asyncio.sleep(0.05)


async def test_thousands_of_submits_get_their_receipts_on_the_same_bind(
    gateway: Gateway,
) -> None:
    n = 2000
    inbox = Inbox()
    async with customer(gateway.port, window=100, on_deliver=inbox) as esme:
        answers = await asyncio.gather(*(
            esme.submit(fields(f"Code {i:04d}", to=f"38050{1000000 + i}")) for i in range(n)))
        assert [a.command_status for a in answers] == [0] * n
        await inbox.wait_for(n, guard=120)
    ids = {a.message_id for a in answers}
    assert len(ids) == n
    seen = [receipt_fields(p) for p in inbox.items]
    assert {s["id"] for s in seen} == ids  # one receipt per submit, no other
    assert len(seen) == n
    assert all(s["stat"] == "DELIVRD" and s["dlvrd"] == "001" and s["err"] == "000"
               for s in seen)
    for pdu in inbox.items:
        assert pdu.esm_class & ESM_SMSC_RECEIPT
        assert pdu.tlvs[Tag.MESSAGE_STATE] == b"\x02"
        assert pdu.tlvs[Tag.RECEIPTED_MESSAGE_ID].rstrip(b"\x00").decode() in ids
    texts = {p.tlvs[Tag.RECEIPTED_MESSAGE_ID].rstrip(b"\x00").decode():
             receipt_fields(p)["text"] for p in inbox.items}
    assert texts[answers[7].message_id] == "Code 0007"  # type: ignore[index]
    assert gateway.sim.counters.submits == n  # each part went to the carrier once
    await wait_outbox_empty(gateway.db)


async def test_a_customer_offline_gets_its_receipts_when_it_binds_again(
    settings: Settings, db: Database,
) -> None:
    async with running_gateway(settings, db, sim_config={"receipt_delay_ms": 200}) as gw:
        async with customer(gw.port, "transmitter") as esme:  # no receiver bind at all
            answers = [await esme.submit(fields(f"Order {i}")) for i in range(30)]
        await wait_final(db, 30)  # the carrier's receipts are in; nobody to give them to
        assert await pending_in_outbox(db) == 30
        inbox = Inbox()
        async with customer(gw.port, "receiver", on_deliver=inbox):
            await inbox.wait_for(30)
        assert {receipt_fields(p)["id"] for p in inbox.items} == {a.message_id for a in answers}
        await wait_outbox_empty(db)


async def test_a_receipt_refused_by_the_customer_is_delivered_again(gateway: Gateway) -> None:
    inbox = Inbox(status=Status.ESME_RX_T_APPN)  # "try later"
    async with customer(gateway.port, on_deliver=inbox) as esme:
        answer = await esme.submit(fields())
        async with asyncio.timeout(10):
            while True:
                if gateway.server.counters.deliveries_sent >= 2:  # refused once, sent again
                    break
                await asyncio.sleep(0.02)
        inbox.status = Status.ESME_ROK
        await inbox.wait_for(1)
    assert receipt_fields(inbox.items[0])["id"] == answer.message_id
    assert gateway.server.counters.deliveries_acked == 1


async def test_registered_delivery_decides_which_receipts_are_sent(
    settings: Settings, db: Database,
) -> None:
    # every other part undelivered (seeded draws), receipts asked: none, failures only, all
    async with running_gateway(settings, db, sim_config={"undeliv_ratio": 0.5}) as gw:
        inbox = Inbox()
        async with customer(gw.port, on_deliver=inbox) as esme:
            none = [await esme.submit(fields(rd=0)) for _ in range(10)]
            failures = [await esme.submit(fields(rd=2)) for _ in range(20)]
            every = await esme.submit(fields(rd=1))
            await wait_final(db, 31)
            await wait_outbox_empty(db)
            await inbox.wait_for(1)
    got = {receipt_fields(p)["id"]: receipt_fields(p)["stat"] for p in inbox.items}
    assert every.message_id in got
    assert not {a.message_id for a in none} & set(got)
    failed = {a.message_id for a in failures} & set(got)
    assert failed  # some failed (half of them, seeded) ...
    assert {got[i] for i in failed} == {"UNDELIV"}  # ... and only those came
    assert len(failed) < 20


async def test_a_payload_of_several_parts_gets_one_receipt_when_all_are_final(
    gateway: Gateway,
) -> None:
    inbox = Inbox()
    text = "A long text that needs three parts. " * 12  # 432 septets: 3 parts
    async with customer(gateway.port, on_deliver=inbox) as esme:
        answer = await esme.submit(fields(data=b"", tlvs=((Tag.MESSAGE_PAYLOAD,
                                                           text.encode("ascii")),)))
        await wait_final(gateway.db, 3)
        await inbox.wait_for(1)
        await asyncio.sleep(0.3)  # a second receipt would come within the pump's rounds
    assert [receipt_fields(p)["id"] for p in inbox.items] == [answer.message_id]


async def test_receipts_go_to_a_receiver_bind_when_submits_come_on_a_transmitter(
    gateway: Gateway,
) -> None:
    inbox = Inbox()
    async with customer(gateway.port, "receiver", on_deliver=inbox), \
            customer(gateway.port, "transmitter") as tx:
        answers = [await tx.submit(fields()) for _ in range(5)]
        await inbox.wait_for(5)
    assert {receipt_fields(p)["id"] for p in inbox.items} == {a.message_id for a in answers}


async def test_a_part_the_carrier_rejects_gets_a_rejectd_receipt(
    settings: Settings, db: Database,
) -> None:
    async with running_gateway(settings, db, sim_config={"reject_ratio": 1.0}) as gw:
        inbox = Inbox()
        async with customer(gw.port, on_deliver=inbox) as esme:
            answer = await esme.submit(fields())
            await inbox.wait_for(1)
    got = receipt_fields(inbox.items[0])
    assert (got["id"], got["stat"], got["dlvrd"]) == (answer.message_id, "REJECTD", "000")
    assert got["err"] == "011"  # the carrier's ESME_RINVDSTADR, 0x0000000b
    assert inbox.items[0].tlvs[Tag.MESSAGE_STATE] == b"\x08"


async def test_two_workers_finishing_a_messages_last_parts_at_once_queue_its_receipt(
    bare: BareServer, db: Database,
) -> None:
    """Two transactions each make one of a message's two parts final, both before either looks
    at the siblings: the message's one receipt must still be queued (without the siblings'
    lock, each saw the other part not yet final and nobody queued it)."""
    if not db.is_postgres:
        pytest.skip("concurrent writers need PostgreSQL (SQLite has one writer)")
    text = "A long text that needs two parts to go. " * 5  # 200 septets: 2 parts
    async with customer(bare.port) as esme:
        answer = await esme.submit(fields(data=b"", tlvs=((Tag.MESSAGE_PAYLOAD,
                                                           text.encode("ascii")),)))
    async with db.connect() as conn:
        parts = (await conn.execute(select(Part.id, Part.to, Part.account_id).where(
            Part.message_id == answer.message_id).order_by(Part.part_no))).all()
    assert len(parts) == 2
    # both parts updated before either reads the siblings, and both read before either commits
    both_updated, both_read = asyncio.Event(), asyncio.Event()
    updated: set[int] = set()
    read: set[int] = set()

    async def finish(part: Any) -> None:
        for _ in range(5):  # a deadlock aborts one: recorded again, as the recorder does
            try:
                async with db.begin() as conn:
                    now = utcnow()
                    await conn.execute(update(Part).where(Part.id == part.id).values(
                        status="DELIVRD", delivered_at=now))
                    updated.add(part.id)
                    if len(updated) == 2:
                        both_updated.set()
                    async with asyncio.timeout(10):
                        await both_updated.wait()
                    await enqueue_receipts(conn, [{
                        "id": part.id, "status": "DELIVRD", "error_code": None,
                        "delivered_at": now, "to": part.to, "account_id": part.account_id}], now)
                    read.add(part.id)
                    if len(read) == 2:
                        both_read.set()
                    try:  # with the siblings locked the other never gets here: go on
                        await asyncio.wait_for(both_read.wait(), 3)
                    except TimeoutError:
                        pass
                return
            except DBAPIError:
                continue
        raise AssertionError("never recorded")

    await asyncio.gather(finish(parts[0]), finish(parts[1]))
    async with db.connect() as conn:
        queued = (await conn.execute(select(SmppOutboxItem.payload))).scalars().all()
    assert [orjson.loads(p)["id"] for p in queued] == [answer.message_id]
