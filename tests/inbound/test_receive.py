"""One carrier MO in, on both databases: parts stored until the message is whole (any order,
across a restart), routing by number and keyword, stop/start keywords, expiry."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import Customer, make_customer
from tests.inbound.helpers import (
    HANDSET,
    LONG_NUMBER,
    OTHER_HANDSET,
    SHORT_CODE,
    assign,
    mo_pdus,
)
from tikosms.db.engine import Database
from tikosms.db.models import CallbackEvent, InboundFragment, InboundMessage, OptOut
from tikosms.db.types import utcnow
from tikosms.inbound.service import InboundReceiver

LONG_TEXT = ("Hello from the handset, this is a long reply that needs several parts. " * 5)


async def messages(db: Database) -> list[InboundMessage]:
    async with db.connect() as conn:
        return list((await conn.execute(select(InboundMessage).order_by(InboundMessage.id)))
                    .all())


async def count(db: Database, table: type) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@pytest.mark.parametrize("concat", ["udh8", "udh16", "sar"])
async def test_parts_out_of_order_make_one_message(db: Database, customer: Customer,
                                                   concat: str) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    receiver = InboundReceiver(db, 3600)
    pdus = mo_pdus(LONG_TEXT, concat=concat, order="shuffle")
    assert len(pdus) >= 3
    for pdu in pdus[:-1]:
        await receiver.handle(pdu)
    assert await messages(db) == []
    assert await count(db, InboundFragment) == len(pdus) - 1
    await receiver.handle(pdus[-1])
    [message] = await messages(db)
    assert (message.text, message.parts, message.encoding) == (LONG_TEXT, len(pdus), "gsm7")
    assert (message.account_id, message.sender, message.recipient) == (
        customer.account_id, HANDSET, SHORT_CODE)
    assert await count(db, InboundFragment) == 0


async def test_parts_survive_a_restart(db: Database, settings: object,
                                       customer: Customer) -> None:
    """The first parts were taken by a worker that then stopped; a new one (new Database, new
    receiver) gets the last part and the message is whole."""
    await assign(db, customer.account_id, SHORT_CODE)
    text = "Привіт, це довга відповідь українською, що не вміщується в одну частину SMS. " * 2
    pdus = mo_pdus(text, concat="udh16", order="reverse")
    first = Database(db.url)
    for pdu in pdus[:-1]:
        await InboundReceiver(first, 3600).handle(pdu)
    await first.dispose()
    second = Database(db.url)
    try:
        await InboundReceiver(second, 3600).handle(pdus[-1])
    finally:
        await second.dispose()
    [message] = await messages(db)
    assert (message.text, message.encoding) == (text, "ucs2")


async def test_a_part_delivered_twice_is_kept_once(db: Database, customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    receiver = InboundReceiver(db, 3600)
    first, second, third = mo_pdus(LONG_TEXT[:400], part_octets=140)[:3]
    await receiver.handle(first)
    await receiver.handle(first)  # the SMSC did not see our deliver_sm_resp and resent it
    assert await count(db, InboundFragment) == 1
    await receiver.handle(third)
    await receiver.handle(second)
    [message] = await messages(db)
    assert message.text == LONG_TEXT[:400]


async def test_two_handsets_with_the_same_reference_do_not_mix(db: Database,
                                                               customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    receiver = InboundReceiver(db, 3600)
    a = mo_pdus("A" * 300, sender=HANDSET, ref=5)
    b = mo_pdus("B" * 300, sender=OTHER_HANDSET, ref=5)
    for pdu_a, pdu_b in zip(a, b, strict=True):
        await receiver.handle(pdu_a)
        await receiver.handle(pdu_b)
    assert sorted((m.sender, m.text) for m in await messages(db)) == [
        (HANDSET, "A" * 300), (OTHER_HANDSET, "B" * 300)]


async def test_parts_arriving_at_once_complete_the_message(db: Database,
                                                           customer: Customer) -> None:
    """Every part at the same moment, each in its own transaction (several binds): one of
    them must see the others and complete it (on PostgreSQL, the assembly lock)."""
    await assign(db, customer.account_id, SHORT_CODE)
    receiver = InboundReceiver(db, 3600)
    pdus = mo_pdus(LONG_TEXT * 2, order="shuffle")
    await asyncio.gather(*(receiver.handle(p) for p in pdus))
    [message] = await messages(db)
    assert message.text == LONG_TEXT * 2


async def test_keyword_routing(db: Database, customer: Customer) -> None:
    pizza = await make_customer(db, name="Pizza")
    await assign(db, customer.account_id, SHORT_CODE)  # the default owner
    await assign(db, pizza.account_id, SHORT_CODE, keyword="pizza")
    receiver = InboundReceiver(db, 3600)
    for text in ("PIZZA margherita", "pizza", "Pizzeria?", "hello"):
        for pdu in mo_pdus(text):
            await receiver.handle(pdu)
    routed = [(m.text, m.account_id, m.keyword) for m in await messages(db)]
    assert routed == [
        ("PIZZA margherita", pizza.account_id, "PIZZA"),
        ("pizza", pizza.account_id, "PIZZA"),
        ("Pizzeria?", customer.account_id, None),  # the keyword is a whole first word
        ("hello", customer.account_id, None),
    ]


async def test_keyword_matching_uses_the_decoded_text(db: Database, customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE, keyword="école")
    receiver = InboundReceiver(db, 3600)
    for pdu in mo_pdus("École inscription", data_coding=8):  # UCS-2
        await receiver.handle(pdu)
    for pdu in mo_pdus("ÉCOLE demain", data_coding=3):  # Latin-1
        await receiver.handle(pdu)
    assert [(m.account_id, m.keyword) for m in await messages(db)] == [
        (customer.account_id, "ÉCOLE")] * 2


async def test_a_number_nobody_owns_is_stored_unrouted(db: Database, customer: Customer,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.INFO, "tikosms.inbound")
    for pdu in mo_pdus("hello?", to="999000"):
        await InboundReceiver(db, 3600).handle(pdu)
    [message] = await messages(db)
    assert message.account_id is None
    assert "unrouted" in caplog.text
    assert HANDSET not in caplog.text and "hello?" not in caplog.text  # no number, no text


async def test_stop_suppresses_for_the_number_written_to(db: Database,
                                                         customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    await assign(db, customer.account_id, LONG_NUMBER)
    receiver = InboundReceiver(db, 3600)
    for pdu in mo_pdus("Stop", to=SHORT_CODE):
        await receiver.handle(pdu)
    async with db.connect() as conn:
        rows = (await conn.execute(select(OptOut))).all()
    assert [(r.account_id, r.recipient, r.sender, r.keyword) for r in rows] == [
        (customer.account_id, HANDSET, SHORT_CODE, "STOP")]
    [message] = await messages(db)
    assert message.opt_out == "stop"
    for pdu in mo_pdus("START", to=SHORT_CODE):
        await receiver.handle(pdu)
    assert await count(db, OptOut) == 0


async def test_stopall_suppresses_every_number_and_start_lifts_it(db: Database,
                                                                  customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    receiver = InboundReceiver(db, 3600)
    for pdu in mo_pdus("STOPALL"):
        await receiver.handle(pdu)
    async with db.connect() as conn:
        assert (await conn.execute(select(OptOut.sender))).scalars().all() == [""]
    for pdu in mo_pdus("unstop"):
        await receiver.handle(pdu)
    assert await count(db, OptOut) == 0


async def test_an_accounts_own_stop_keyword(db: Database, customer: Customer) -> None:
    from tikosms.inbound import manage

    await assign(db, customer.account_id, SHORT_CODE)
    async with db.begin() as conn:
        await manage.update_account(conn, customer.account_id, stop_keywords="ARRET")
    for pdu in mo_pdus("arrêt".replace("ê", "e")):
        await InboundReceiver(db, 3600).handle(pdu)
    assert await count(db, OptOut) == 1


async def test_inbound_callback_queued_only_with_an_inbound_url(db: Database,
                                                                customer: Customer) -> None:
    from tests.inbound.helpers import set_inbound_url

    await assign(db, customer.account_id, SHORT_CODE)
    for pdu in mo_pdus("no url yet"):
        await InboundReceiver(db, 3600).handle(pdu)
    assert await count(db, CallbackEvent) == 0
    await set_inbound_url(db, customer.account_id, "https://hooks.example.com/mo")
    for pdu in mo_pdus("with a url"):
        await InboundReceiver(db, 3600).handle(pdu)
    async with db.connect() as conn:
        [event] = (await conn.execute(select(CallbackEvent))).all()
    [_, second] = await messages(db)
    assert (event.part_id, event.account_id, event.url) == (
        -second.id, customer.account_id, "https://hooks.example.com/mo")
    assert '"event":"message.inbound"' in event.payload and "with a url" in event.payload


async def test_incomplete_messages_expire_with_a_log_line(
        db: Database, customer: Customer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "tikosms.inbound")
    await assign(db, customer.account_id, SHORT_CODE)
    receiver = InboundReceiver(db, 600)
    pdus = mo_pdus(LONG_TEXT)
    await receiver.handle(pdus[0])
    await receiver.handle(pdus[1])
    assert await receiver.expire(utcnow()) == 0  # not old enough
    assert await receiver.expire(utcnow() + timedelta(seconds=601)) == 1
    assert await count(db, InboundFragment) == 0
    assert f"2 of {len(pdus)} parts received" in caplog.text


async def test_stop_from_a_sender_that_is_no_number_is_stored_without_opt_out(
        db: Database, customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    for pdu in mo_pdus("STOP", sender="VeryLongAlphanumericSenderName"):
        await InboundReceiver(db, 3600).handle(pdu)
    [message] = await messages(db)
    assert (message.text, message.opt_out) == ("STOP", None)
    assert await count(db, OptOut) == 0


async def test_stop_to_a_number_shared_by_keyword_counts_for_every_account_on_it(
        db: Database, customer: Customer) -> None:
    pizza = await make_customer(db, name="Pizza")
    elsewhere = await make_customer(db, name="Elsewhere")
    await assign(db, customer.account_id, SHORT_CODE)
    await assign(db, pizza.account_id, SHORT_CODE, keyword="PIZZA")
    await assign(db, elsewhere.account_id, LONG_NUMBER)
    for pdu in mo_pdus("STOP"):
        await InboundReceiver(db, 3600).handle(pdu)
    async with db.connect() as conn:
        rows = (await conn.execute(select(OptOut.account_id, OptOut.sender))).all()
    assert sorted(rows) == sorted([(customer.account_id, SHORT_CODE),
                                   (pizza.account_id, SHORT_CODE)])
