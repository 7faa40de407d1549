"""The session's window against a hand-written SMSC: what a submit that was never written
comes back as when the SMSC unbinds (it must be retried elsewhere, not counted as sent)."""

from __future__ import annotations

import asyncio

from tikosms.smpp.pdu import HEADER_SIZE, BindRequest, Command, encode_pdu, parse_header
from tikosms.smpp.session import SessionLost, SmppSession
from tikosms.smpp.submit import SubmitFields


async def test_a_submit_queued_behind_the_window_is_not_sent_after_the_smsc_unbinds() -> None:
    received: list[int] = []

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                header = parse_header(await reader.readexactly(HEADER_SIZE))
                await reader.readexactly(header.command_length - HEADER_SIZE)
            except asyncio.IncompleteReadError:
                return
            received.append(header.command_id)
            if header.command_id == Command.BIND_TRANSCEIVER:
                writer.write(encode_pdu(Command.BIND_TRANSCEIVER_RESP, header.sequence_number,
                                        b"smsc\x00"))
            elif header.command_id == Command.SUBMIT_SM:
                # the answer and an unbind in one write: read by the ESME in one turn
                writer.write(encode_pdu(Command.SUBMIT_SM_RESP, header.sequence_number,
                                        b"id1\x00") + encode_pdu(Command.UNBIND, 99, b""))

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = SmppSession("127.0.0.1", port, BindRequest(system_id="a", password="b"), window=1)
    try:
        await session.open()
        fields = SubmitFields(destination_addr="380501234567", source_addr="Shop",
                              short_message=b"hi")
        first, second = await asyncio.gather(session.submit(fields), session.submit(fields),
                                             return_exceptions=True)
        await asyncio.sleep(0.2)  # anything written late would have reached the SMSC by now
    finally:
        await session.close("test over")
        server.close()
    assert not isinstance(first, BaseException) and first.message_id == "id1"
    assert isinstance(second, SessionLost) and second.sent is False  # another bind may take it
    assert received.count(Command.SUBMIT_SM) == 1  # nothing after the SMSC's unbind
