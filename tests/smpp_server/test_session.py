"""Binds and the session: credentials, limits, and no PDU a client may send drops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import update

from tests.smpp_server.conftest import PASSWORD, SYSTEM_ID, BareServer, bare_server, customer
from tests.smpp_server.test_submit import fields
from tikosms.db.engine import Database
from tikosms.db.models import Account
from tikosms.smpp.pdu import (
    HEADER_SIZE,
    BindRequest,
    Command,
    Header,
    Status,
    c_string,
    encode_pdu,
    parse_header,
)
from tikosms.smpp.session import BindRefused, SmppSession
from tikosms.smpp_server import outbox, users


class RawEsme:
    """A hand-made client, for PDUs the project's ESME never sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, command: int, sequence: int, body: bytes = b"", status: int = 0) -> None:
        self.writer.write(encode_pdu(command, sequence, body, status))

    async def read(self) -> tuple[Header, bytes]:
        async with asyncio.timeout(10):  # a guard: answers come in milliseconds
            header = parse_header(await self.reader.readexactly(HEADER_SIZE))
            body = await self.reader.readexactly(header.command_length - HEADER_SIZE)
        return header, body

    async def bind(self, command: int = Command.BIND_TRANSCEIVER) -> Header:
        self.send(command, 1, BindRequest(SYSTEM_ID, PASSWORD).encode_body())
        header, _ = await self.read()
        return header

    async def closed(self) -> bool:
        async with asyncio.timeout(10):
            return await self.reader.read(65536) == b""


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[RawEsme]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield RawEsme(reader, writer)
    finally:
        writer.close()


async def test_each_bind_type_binds_and_a_verified_password_is_not_hashed_again(
    bare: BareServer,
) -> None:
    for bind_type in ("transmitter", "receiver", "transceiver"):
        async with customer(bare.port, bind_type) as esme:  # type: ignore[arg-type]
            assert esme.bound
    assert bare.server.counters.binds == 3
    assert bare.server.passwords.verifies == 1  # argon2 once; the next binds hit the cache


@pytest.mark.parametrize(("system_id", "password", "status"), [
    (SYSTEM_ID, "wrong", Status.ESME_RINVPASWD),  # wrong password
    ("nobody", PASSWORD, Status.ESME_RINVPASWD),  # unknown system_id: told apart only in logs
])
async def test_wrong_credentials_are_refused(bare: BareServer, system_id: str, password: str,
                                             status: int) -> None:
    with pytest.raises(BindRefused) as refused:
        async with customer(bare.port, system_id=system_id, password=password):
            pass
    assert refused.value.status == status
    assert bare.server.counters.bind_failures == 1


async def test_max_binds_and_the_ip_allowlist_refuse_a_bind(db: Database) -> None:
    async with bare_server(db, user={"max_binds": 2}) as b:
        async with customer(b.port), customer(b.port):
            with pytest.raises(BindRefused) as third:
                async with customer(b.port):
                    pass
        assert third.value.status == Status.ESME_RBINDFAIL
        async with customer(b.port):  # a bind freed is a bind again
            pass
        async with db.begin() as conn:
            await users.create_user(conn, b.account_id, "faraway", "pw", allow_ip=["10.0.0.0/8"])
        with pytest.raises(BindRefused) as elsewhere:
            async with customer(b.port, system_id="faraway", password="pw"):
                pass
        assert elsewhere.value.status == Status.ESME_RBINDFAIL


async def test_a_revoked_user_or_suspended_account_is_unbound(bare: BareServer) -> None:
    session = SmppSession("127.0.0.1", bare.port, BindRequest(SYSTEM_ID, PASSWORD),
                          enquire_link_interval=0)
    await session.open()
    async with bare.db.begin() as conn:
        await users.revoke_user(conn, SYSTEM_ID)
    async with asyncio.timeout(10):  # the server looks every 0.2 s here
        reason = await session.wait_closed()
    assert reason == "unbound by the SMSC"
    with pytest.raises(BindRefused):
        async with customer(bare.port):
            pass
    async with bare.db.begin() as conn:
        await users.create_user(conn, bare.account_id, "second", "pw2")
    session = SmppSession("127.0.0.1", bare.port, BindRequest("second", "pw2"),
                          enquire_link_interval=0)
    await session.open()
    async with bare.db.begin() as conn:
        await conn.execute(update(Account).where(Account.id == bare.account_id)
                           .values(status="suspended"))
    async with asyncio.timeout(10):
        assert await session.wait_closed() == "unbound by the SMSC"


async def test_legitimate_pdus_never_drop_the_session(bare: BareServer) -> None:
    async with raw(bare.port) as esme:
        # before a bind: refused, not dropped
        esme.send(Command.SUBMIT_SM, 2, b"")
        header, _ = await esme.read()
        assert (header.command_id, header.command_status) == \
            (Command.SUBMIT_SM_RESP, Status.ESME_RINVBNDSTS)
        assert (await esme.bind()).command_status == Status.ESME_ROK
        again = await esme.bind()  # a second bind on a bound session
        assert again.command_status == Status.ESME_RALYBND
        for command, expected, status in [
            (0x00000099, Command.GENERIC_NACK, Status.ESME_RINVCMDID),  # unknown command
            (Command.REPLACE_SM, Command.REPLACE_SM_RESP, Status.ESME_RREPLACEFAIL),
            (Command.SUBMIT_MULTI, Command.SUBMIT_MULTI_RESP, Status.ESME_RINVCMDID),
            (Command.DATA_SM, Command.DATA_SM_RESP, Status.ESME_RINVCMDID),
            (Command.ENQUIRE_LINK, Command.ENQUIRE_LINK_RESP, Status.ESME_ROK),
            (Command.SUBMIT_SM, Command.SUBMIT_SM_RESP, Status.ESME_RINVCMDLEN),  # garbage
        ]:
            esme.send(command, 10, b"\x01\x02garbage")
            header, _ = await esme.read()
            assert (header.command_id, header.command_status, header.sequence_number) == \
                (expected, status, 10), hex(command)
        # a deliver_sm_resp to nothing (with a message id in its body) and a stray response
        esme.send(Command.DELIVER_SM_RESP, 77, c_string("some-id"))
        esme.send(Command.SUBMIT_SM_RESP, 78, c_string("x"))
        esme.send(Command.ENQUIRE_LINK, 11)
        header, _ = await esme.read()
        assert header.command_id == Command.ENQUIRE_LINK_RESP and header.sequence_number == 11
        esme.send(Command.UNBIND, 12)
        header, _ = await esme.read()
        assert header.command_id == Command.UNBIND_RESP
        assert await esme.closed()


async def test_a_deliver_sm_resp_with_a_message_id_acknowledges_the_receipt(
    bare: BareServer,
) -> None:
    async with bare.db.begin() as conn:
        item_id = await outbox.enqueue_mo(conn, bare.account_id, "380501234567", "4455",
                                          text="STOP ✓")
    async with raw(bare.port) as esme:
        assert (await esme.bind(Command.BIND_RECEIVER)).command_status == 0
        header, body = await esme.read()
        assert header.command_id == Command.DELIVER_SM
        assert "STOP ✓".encode("utf-16-be") in body  # not GSM-7: sent as UCS-2
        esme.send(Command.DELIVER_SM_RESP, header.sequence_number, c_string("my-own-id"))
        async with asyncio.timeout(10):
            while True:
                async with bare.db.connect() as conn:
                    if not await outbox.pending_count(conn):
                        break
                await asyncio.sleep(0.05)
    assert item_id > 0


async def test_the_server_asks_an_idle_customer_and_drops_one_that_never_answers(
    db: Database,
) -> None:
    async with bare_server(db, enquire_link_seconds=0.2, response_timeout=0.3) as b:
        answering = SmppSession("127.0.0.1", b.port, BindRequest(SYSTEM_ID, PASSWORD),
                                enquire_link_interval=0)
        await answering.open()  # our ESME answers enquire_link by itself
        async with raw(b.port) as silent:
            assert (await silent.bind()).command_status == 0
            header, _ = await silent.read()
            assert header.command_id == Command.ENQUIRE_LINK  # asked, and not answered
            assert await silent.closed()
        assert answering.bound  # idle for longer than the interval, but it answers
        await answering.unbind()


async def test_the_window_of_a_bind_is_enforced(db: Database) -> None:
    async with bare_server(db, user={"window": 2}) as b, raw(b.port) as esme:
        assert (await esme.bind()).command_status == 0
        submit = fields()
        from tikosms.smpp.session import _encode_submit

        esme.writer.write(b"".join(_encode_submit(submit, 100 + i) for i in range(40)))
        statuses = [(await esme.read())[0].command_status for _ in range(40)]
    assert statuses.count(Status.ESME_ROK) >= 2
    assert statuses.count(Status.ESME_RMSGQFUL) > 0
    assert set(statuses) == {Status.ESME_ROK, Status.ESME_RMSGQFUL}


async def test_a_burst_within_the_bucket_passes_then_throttled(db: Database) -> None:
    async with bare_server(db, user={"tps": 5, "burst": 10}) as b, \
            customer(b.port, window=100) as esme:
        answers = await asyncio.gather(*(esme.submit(fields()) for _ in range(30)))
        statuses = [a.command_status for a in answers]
        accepted = statuses.count(Status.ESME_ROK)
        # the burst of 10 at once, plus what 5/s refills while they are handled
        assert 10 <= accepted <= 13
        assert statuses.count(Status.ESME_RTHROTTLED) == 30 - accepted
        await asyncio.sleep(0.5)  # 2.5 tokens back
        assert (await esme.submit(fields())).command_status == Status.ESME_ROK
