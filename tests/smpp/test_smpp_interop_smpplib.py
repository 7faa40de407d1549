"""Our simulator with an SMPP client we did not write: smpplib 2.2.4 (synchronous, in a thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions

from tikosms.smpp.simulator import SmscSimulator

SYSTEM_ID = "tiko"  # as in conftest
PASSWORD = "secret"


def smpplib_session(port: int, password: str = PASSWORD) -> dict[str, Any]:
    """Bind, submit one message, wait for its receipt, unbind; what smpplib saw."""
    seen: dict[str, Any] = {}
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)

    def sent(pdu: Any, **_: Any) -> None:
        seen["message_id"] = pdu.message_id.decode()

    def received(pdu: Any, **_: Any) -> int:
        seen["receipt_text"] = pdu.short_message.decode()
        seen["receipt_esm_class"] = pdu.esm_class
        seen["receipted_message_id"] = pdu.receipted_message_id
        seen["message_state"] = pdu.message_state
        return smpplib.consts.SMPP_ESME_ROK

    client.set_message_sent_handler(sent)
    client.set_message_received_handler(received)
    client.connect()
    try:
        client.bind_transceiver(system_id=SYSTEM_ID, password=password)
        client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="TikoSMS",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr="380501234567",
            short_message=b"Hello from smpplib",
            registered_delivery=1,
        )
        while "receipt_text" not in seen:  # submit_sm_resp, then the deliver_sm
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return seen


async def test_smpplib_binds_submits_and_gets_a_receipt(simulator: SmscSimulator) -> None:
    seen = await asyncio.to_thread(smpplib_session, simulator.port)
    message_id = seen["message_id"]
    assert message_id == simulator.submits[0].message_id
    assert simulator.submits[0].short_message == b"Hello from smpplib"
    assert f"id:{message_id} " in seen["receipt_text"]
    assert "stat:DELIVRD" in seen["receipt_text"]
    assert seen["receipt_esm_class"] & 0x04
    assert seen["receipted_message_id"].decode().rstrip("\x00") == message_id
    assert seen["message_state"] == 2  # DELIVERED
    async with asyncio.timeout(5):
        await simulator.wait_for(lambda c: c.receipts_acked == 1)


async def test_smpplib_with_a_wrong_password_is_refused(simulator: SmscSimulator) -> None:
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(smpplib_session, simulator.port, "wrong")
    assert refused.value.args[1] == 0x0E  # ESME_RINVPASWD
    assert simulator.counters.bind_failures == 1
