"""Inbound SMS and opt-outs meet the customers' SMPP binds: an MO a carrier delivers in pieces
reaches the owning account's receiver bind whole, and a STOP written to the account's number
refuses its next submit_sm to that handset until START."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from tests.smpp_server.conftest import Gateway, Inbox, customer
from tests.smpp_server.test_submit import fields
from tikosms.db.models import SmppOutboxItem
from tikosms.inbound import manage
from tikosms.smpp.pdu import Status

HANDSET = "380501234567"
OUR_NUMBER = "380671112233"  # the account's number, also the sender of its submits


async def _assign(gateway: Gateway) -> None:
    async with gateway.db.begin() as conn:
        await manage.assign_number(conn, gateway.account_id, OUR_NUMBER, None)


async def _mo(gateway: Gateway, text: str, **how: object) -> None:
    await gateway.sim.send_mo(HANDSET, OUR_NUMBER, text, system_id="tiko", **how)  # type: ignore[arg-type]


async def _outbox_count(gateway: Gateway) -> int:
    async with gateway.db.connect() as conn:
        return int((await conn.execute(
            select(func.count()).select_from(SmppOutboxItem))).scalar_one())


async def test_an_mo_in_shuffled_pieces_reaches_the_receiver_bind_whole(gateway: Gateway) -> None:
    await _assign(gateway)
    text = "Please call me back about order 4471, I will be home after six tonight. Thanks!"
    inbox = Inbox()
    async with customer(gateway.port, "receiver", on_deliver=inbox):
        await _mo(gateway, text, part_octets=30, order="shuffle")  # three parts, any order
        await inbox.wait_for(1)
        await asyncio.sleep(0.3)  # nothing else may follow: one message, not its pieces
    [mo] = inbox.items
    assert mo.esm_class & 0x3C == 0  # a message, not a receipt
    assert (mo.source_addr, mo.destination_addr) == (HANDSET, OUR_NUMBER)
    assert inbox.texts() == [text]


async def test_an_mo_waits_for_an_offline_customer(gateway: Gateway) -> None:
    await _assign(gateway)
    await _mo(gateway, "Are you open on Sunday?")
    async with asyncio.timeout(10):  # stored by the worker's carrier bind, queued for SMPP
        while True:
            if await _outbox_count(gateway) > 0:
                break
            await asyncio.sleep(0.05)
    inbox = Inbox()
    async with customer(gateway.port, "receiver", on_deliver=inbox):
        await inbox.wait_for(1)
    assert inbox.texts() == ["Are you open on Sunday?"]


async def test_stop_refuses_the_next_submit_and_start_allows_it_again(gateway: Gateway) -> None:
    await _assign(gateway)
    inbox = Inbox()
    async with customer(gateway.port, on_deliver=inbox) as esme:
        await _mo(gateway, "STOP")
        await inbox.wait_for(1)  # the STOP itself is passed on to the customer too
        refused = await esme.submit(fields("Sale today!", source=OUR_NUMBER, ton=1))
        assert refused.command_status == Status.ESME_RINVDSTADR  # permanent: do not retry
        await _mo(gateway, "START")
        await inbox.wait_for(2)
        again = await esme.submit(fields("Sale today!", source=OUR_NUMBER, ton=1))
        assert again.command_status == Status.ESME_ROK
    assert inbox.texts() == ["STOP", "START"]
