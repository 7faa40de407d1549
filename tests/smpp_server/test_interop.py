"""The gateway's SMPP server with customers it was not written with, over real TCP:
smpplib 2.2.4 (synchronous, in a thread) and smpp.twisted3 0.8 (its own virtualenv)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
from sqlalchemy import select

from tests.smpp_server.conftest import PASSWORD, SYSTEM_ID, Gateway
from tests.smpp_server.test_receipts import STRICT
from tests.smpp_server.test_submit import parts_of, wait_final
from tikosms.db.models import Part

PEER_PYTHON = Path(os.environ.get("TIKOSMS_SMPP_PEER_PYTHON", "/tmp/twsmpp-venv/bin/python"))
TWISTED_ESME = Path(__file__).with_name("twisted_esme.py")
# no extension characters (€ [ ] ...): smpplib 2.2.4 cuts its segments by octets and splits
# their escape sequences (docs/smpp.md)
LONG_GSM = ("Your parcel 4471 left the warehouse at 10:42 and arrives tomorrow (08-12h). " * 3)
LONG_UCS2 = "Привіт! Ваше замовлення №4471 передано до служби доставки. Дякуємо! " * 2


def smpplib_session(port: int, texts: list[str], bind: str = "transceiver",
                    wait_receipts: bool = True, password: str = PASSWORD) -> dict[str, Any]:
    """Bind, send each text (split by smpplib with a UDH when long), collect the receipts."""
    seen: dict[str, Any] = {"ids": [], "receipts": {}}
    client = smpplib.client.Client("127.0.0.1", port, timeout=10,
                                   allow_unknown_opt_params=True)

    def sent(pdu: Any, **_: Any) -> None:
        seen["ids"].append(pdu.message_id.decode())

    def received(pdu: Any, **_: Any) -> int:
        message_id = pdu.receipted_message_id.decode().rstrip("\x00")
        seen["receipts"][message_id] = (pdu.short_message.decode(), pdu.message_state)
        return smpplib.consts.SMPP_ESME_ROK

    client.set_message_sent_handler(sent)
    client.set_message_received_handler(received)
    client.connect()
    try:
        getattr(client, f"bind_{bind}")(system_id=SYSTEM_ID, password=password)
        submits = 0
        for text in texts:
            parts, coding, esm_class = smpplib.gsm.make_parts(text)
            for part in parts:
                client.send_message(
                    source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="Smpplib",
                    dest_addr_ton=smpplib.consts.SMPP_TON_INTL, destination_addr="380501234567",
                    short_message=part, data_coding=coding, esm_class=esm_class,
                    registered_delivery=1)
                submits += 1
        while len(seen["ids"]) < submits or (wait_receipts and len(seen["receipts"]) < submits):
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return seen


async def test_smpplib_sends_long_gsm7_and_ucs2_and_parses_every_receipt(
    gateway: Gateway,
) -> None:
    seen = await asyncio.to_thread(smpplib_session, gateway.port,
                                   ["Hello from smpplib", LONG_GSM, LONG_UCS2])
    # 1 + 2 GSM-7 segments of smpplib's own making + 3 UCS-2 ones: each a part and a receipt
    assert len(seen["ids"]) == 6
    assert set(seen["receipts"]) == set(seen["ids"])
    for text, state in seen["receipts"].values():
        assert STRICT.fullmatch(text), text
        assert "stat:DELIVRD" in text
        assert state == 2
    # answers may come in any order: the parts sorted by (message, part number)
    stored = sorted([(await parts_of(gateway.db, i))[0] for i in seen["ids"]],
                    key=lambda p: (p["total_parts"], p["part_no"]))
    # smpplib's segmentation kept: the texts join up again, under one reference per message
    assert "".join(str(p["text"]) for p in stored[1:3]) == LONG_GSM
    assert "".join(str(p["text"]) for p in stored[3:]) == LONG_UCS2
    assert [(p["part_no"], p["total_parts"]) for p in stored] == \
        [(1, 1), (1, 2), (2, 2), (1, 3), (2, 3), (3, 3)]
    assert len({p["concat_ref"] for p in stored[3:]}) == 1
    assert [p["data_coding"] for p in stored] == [0, 0, 0, 8, 8, 8]


async def test_smpplib_comes_back_after_being_offline_and_gets_what_it_missed(
    gateway: Gateway,
) -> None:
    sent = await asyncio.to_thread(smpplib_session, gateway.port, ["one", "two", "three"],
                                   "transmitter", False)
    await wait_final(gateway.db, 3)  # delivered while nobody could receive the receipts
    seen = await asyncio.to_thread(smpplib_receive, gateway.port, 3)
    assert set(seen) == set(sent["ids"])


def smpplib_receive(port: int, count: int) -> dict[str, str]:
    receipts: dict[str, str] = {}
    client = smpplib.client.Client("127.0.0.1", port, timeout=10,
                                   allow_unknown_opt_params=True)

    def received(pdu: Any, **_: Any) -> int:
        receipts[pdu.receipted_message_id.decode().rstrip("\x00")] = pdu.short_message.decode()
        return smpplib.consts.SMPP_ESME_ROK

    client.set_message_received_handler(received)
    client.connect()
    try:
        client.bind_receiver(system_id=SYSTEM_ID, password=PASSWORD)
        while len(receipts) < count:
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return receipts


async def test_smpplib_with_a_wrong_password_is_refused(gateway: Gateway) -> None:
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(smpplib_session, gateway.port, ["x"], password="nope")
    assert refused.value.args[1] == 0x0E  # ESME_RINVPASWD


@pytest.mark.skipif(not PEER_PYTHON.exists(),
                    reason=f"no smpp.twisted3 interpreter at {PEER_PYTHON}")
async def test_smpp_twisted3_as_a_customer_submits_and_parses_its_receipts(
    gateway: Gateway,
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(PEER_PYTHON), str(TWISTED_ESME), "127.0.0.1", str(gateway.port), SYSTEM_ID,
        PASSWORD, "20", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(90):  # a guard; the peer stops itself after 60 s
        out, err = await process.communicate()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["errors"] == [], err.decode()[-2000:]
    assert len(result["ids"]) == 21
    assert set(result["receipts"]) == set(result["ids"])
    assert {r["state"] for r in result["receipts"].values()} == {"DELIVERED"}
    assert all(STRICT.fullmatch(r["text"]) for r in result["receipts"].values())
    ucs2 = (await parts_of(gateway.db, result["ids"][-1]))[0]
    assert (ucs2["text"], ucs2["data_coding"]) == ("Привіт з Twisted", 8)
    assert sys.executable  # our interpreter ran the gateway; the peer ran in its own


NODE_MODULES = Path(os.environ.get("TIKOSMS_NODE_SMPP", "/tmp/smppserver-node/node_modules"))
NODE_ESME = Path(__file__).with_name("node_esme.js")


@pytest.mark.skipif(not (NODE_MODULES / "smpp").exists() or shutil.which("node") is None,
                    reason=f"no node-smpp at {NODE_MODULES} (npm install smpp@0.5.1)")
async def test_node_smpp_without_a_window_is_held_to_its_window_and_loses_nothing(
    gateway: Gateway,
) -> None:
    n = 300  # all in flight at once against a window of 100
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_ESME), "127.0.0.1", str(gateway.port), SYSTEM_ID, PASSWORD, str(n),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
    async with asyncio.timeout(90):  # a guard; the peer stops itself after 60 s
        out, err = await process.communicate()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["errors"] == [], err.decode()[-2000:]
    assert len(result["ids"]) == n + 1  # every submit accepted in the end
    assert int(result["statuses"].get(str(0x14), 0)) > 0  # ESME_RMSGQFUL beyond the window
    assert set(result["receipts"]) == set(result["ids"])
    assert all(STRICT.fullmatch(r["text"]) for r in result["receipts"].values())
    # the UCS-2 text in message_payload: one message of three parts, billed as three
    async with gateway.db.connect() as conn:
        rows = (await conn.execute(select(Part.message_id, Part.part_no, Part.text)
                                   .where(Part.total_parts == 3)
                                   .order_by(Part.part_no))).all()
    assert len({r.message_id for r in rows}) == 1
    assert rows[0].message_id in result["ids"]
    assert "".join(r.text for r in rows) == "Привіт з Node! " * 10
