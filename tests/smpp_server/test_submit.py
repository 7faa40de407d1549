"""submit_sm through the gateway's SMPP server: what it stores, bills and sends on, over TCP.

The customer is the project's ESME session (smpp34's codec); the carrier is the SMSC simulator,
so every test also sees what the carrier got (`sim.submits`)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import func, select

from tests.smpp_server.conftest import BareServer, Gateway, Inbox, customer
from tikosms.db.engine import Database
from tikosms.db.models import FINAL_STATUSES, Campaign, LedgerEntry, Part
from tikosms.smpp.pdu import ESM_UDHI, Status, Tag
from tikosms.smpp.submit import SubmitFields, sar_tlvs, udh
from tikosms.text import encode_part

TO = "380501234567"  # Ukraine, 255 001 at 0.045


def fields(text: str = "Hello", *, dc: int = 0, data: bytes | None = None, to: str = TO,
           source: str = "Acme", ton: int = 5, esm: int = 0, rd: int = 1,
           tlvs: tuple[tuple[int, bytes], ...] = ()) -> SubmitFields:
    return SubmitFields(to, source, encode_part(text, dc) if data is None else data,
                        source_addr_ton=ton, source_addr_npi=0 if ton == 5 else 1,
                        esm_class=esm, data_coding=dc, registered_delivery=rd, tlvs=tlvs)


async def parts_of(db: Database, message_id: str) -> list[dict[str, object]]:
    async with db.connect() as conn:
        rows = (await conn.execute(
            select(Part.part_no, Part.total_parts, Part.text, Part.data_coding, Part.cost,
                   Part.concat_ref, Part.status, Campaign.kind, Campaign.sender,
                   Campaign.sender_type)
            .join(Campaign, Campaign.id == Part.campaign_id)
            .where(Part.message_id == message_id).order_by(Part.part_no))).mappings().all()
    return [dict(r) for r in rows]


async def wait_final(db: Database, count: int) -> None:
    async with asyncio.timeout(30):  # a guard: it takes well under a second
        while True:
            async with db.connect() as conn:
                done = (await conn.execute(select(func.count()).select_from(Part).where(
                    Part.status.in_(FINAL_STATUSES)))).scalar_one()
            if done >= count:
                return
            await asyncio.sleep(0.05)


async def ledger_sum(db: Database, account_id: int) -> Decimal:
    async with db.connect() as conn:
        rows = (await conn.execute(select(LedgerEntry.amount).where(
            LedgerEntry.account_id == account_id))).scalars().all()
    return sum(rows, Decimal(0))


async def test_a_submit_is_stored_billed_and_sent_like_an_http_send(gateway: Gateway) -> None:
    async with customer(gateway.port) as esme:
        answer = await esme.submit(fields("Your code is 4711"))
    assert answer.command_status == Status.ESME_ROK
    assert answer.message_id is not None
    [part] = await parts_of(gateway.db, answer.message_id)
    assert part["text"] == "Your code is 4711"
    assert part["kind"] == "smpp"
    assert part["cost"] == Decimal("0.045")
    assert (part["sender"], part["sender_type"]) == ("Acme", "Alpha")
    assert await ledger_sum(gateway.db, gateway.account_id) == Decimal("1000") - Decimal("0.045")
    await wait_final(gateway.db, 1)
    [sent] = gateway.sim.submits
    assert sent.short_message == encode_part("Your code is 4711", 0)
    assert (sent.source_addr, sent.source_addr_ton) == ("Acme", 5)  # alphanumeric, respected


async def test_the_sender_ton_decides_the_sender_type(gateway: Gateway) -> None:
    async with customer(gateway.port) as esme:
        numeric = await esme.submit(fields(source="380671112233", ton=1))
        short = await esme.submit(fields(source="4455", ton=3))
        inferred = await esme.submit(fields(source="Shop", ton=0))
    kinds = [(await parts_of(gateway.db, a.message_id or ""))[0]["sender_type"]
             for a in (numeric, short, inferred)]
    assert kinds == ["Numeric", "Shortcode", "Alpha"]
    await wait_final(gateway.db, 3)
    assert sorted(s.source_addr_ton for s in gateway.sim.submits) == [1, 3, 5]


async def test_udh_segments_keep_the_customers_segmentation_and_are_billed_each(
    gateway: Gateway,
) -> None:
    text = ("Dear customer, your parcel 4471 has left our warehouse. " * 4)[:300]
    segments = [text[:153], text[153:]]
    async with customer(gateway.port) as esme:
        answers = [await esme.submit(fields(data=udh("udh8", 0x42, 2, i + 1)
                                            + encode_part(seg, 0), esm=ESM_UDHI))
                   for i, seg in enumerate(segments)]
    assert [a.command_status for a in answers] == [0, 0]
    stored = [(await parts_of(gateway.db, a.message_id or ""))[0] for a in answers]
    assert [(p["part_no"], p["total_parts"], p["concat_ref"]) for p in stored] == \
        [(1, 2, 0x42), (2, 2, 0x42)]
    assert [p["text"] for p in stored] == segments
    await wait_final(gateway.db, 2)
    # the carrier got the same two segments, concatenated under the customer's reference
    got = sorted(gateway.sim.submits, key=lambda s: s.short_message[5])
    assert [s.short_message[:6] for s in got] == [udh("udh8", 0x42, 2, 1), udh("udh8", 0x42, 2, 2)]
    assert all(s.esm_class & ESM_UDHI for s in got)
    assert await ledger_sum(gateway.db, gateway.account_id) == \
        Decimal("1000") - 2 * Decimal("0.045")


async def test_ucs2_segments_with_a_16_bit_reference_and_sar_tlvs(gateway: Gateway) -> None:
    ukrainian = "Привіт! Ваше замовлення №4471 передано до служби доставки."  # 59 units
    async with customer(gateway.port) as esme:
        by_udh = await esme.submit(fields(dc=8, data=udh("udh16", 0x1234, 2, 1)
                                          + encode_part(ukrainian, 8), esm=ESM_UDHI))
        by_sar = await esme.submit(fields(ukrainian, dc=8,
                                          tlvs=tuple(sar_tlvs(0x0777, 2, 2))))
    udh_part = (await parts_of(gateway.db, by_udh.message_id or ""))[0]
    sar_part = (await parts_of(gateway.db, by_sar.message_id or ""))[0]
    assert (udh_part["part_no"], udh_part["total_parts"], udh_part["concat_ref"]) == \
        (1, 2, 0x1234)
    assert (sar_part["part_no"], sar_part["total_parts"], sar_part["concat_ref"]) == \
        (2, 2, 0x0777)
    assert udh_part["text"] == sar_part["text"] == ukrainian
    assert udh_part["data_coding"] == sar_part["data_coding"] == 8


async def test_a_long_message_payload_is_split_and_billed_per_part(gateway: Gateway) -> None:
    text = "Привіт! " * 40  # 320 UCS-2 units: 5 parts of at most 67
    async with customer(gateway.port) as esme:
        answer = await esme.submit(fields(data=b"", dc=8,
                                          tlvs=((Tag.MESSAGE_PAYLOAD,
                                                 encode_part(text, 8)),)))
    assert answer.command_status == 0
    parts = await parts_of(gateway.db, answer.message_id or "")
    assert len(parts) == 5
    assert "".join(str(p["text"]) for p in parts) == text
    assert len({p["concat_ref"] for p in parts}) == 1
    assert await ledger_sum(gateway.db, gateway.account_id) == \
        Decimal("1000") - 5 * Decimal("0.045")


async def test_data_codings_0_1_3_and_8_carry_the_same_text(gateway: Gateway) -> None:
    text = "Grüße aus Köln"  # in GSM 03.38 and in Latin-1
    async with customer(gateway.port) as esme:
        answers = [
            await esme.submit(fields(text, dc=0)),  # GSM 03.38 unpacked
            await esme.submit(fields(data=text.encode("latin-1"), dc=3)),
            await esme.submit(fields(data=b"Plain ASCII", dc=1)),
            await esme.submit(fields(text, dc=8)),
            # GSM-7 with an escape to no extension character: the escape is dropped
            await esme.submit(fields(data=b"odd\x1b escape", dc=0)),
            # emoji: a surrogate pair in UCS-2
            await esme.submit(fields("ok \U0001F600", dc=8)),
        ]
    assert [a.command_status for a in answers] == [0] * 6
    texts = [(await parts_of(gateway.db, a.message_id or ""))[0]["text"] for a in answers]
    assert texts == [text, text, "Plain ASCII", text, "odd escape", "ok \U0001F600"]


async def test_refusals_map_to_statuses_by_whether_to_retry(gateway: Gateway) -> None:
    async with customer(gateway.port) as esme:
        invalid_number = await esme.submit(fields(to="12"))
        no_rate = await esme.submit(fields(to="14155550123"))  # USA: no rate in the list
        bad_sender = await esme.submit(fields(source="FarTooLongSender"))
        empty_sender = await esme.submit(fields(source=""))
        bad_coding = await esme.submit(fields(data=b"\x00\x01", dc=4))
        odd_ucs2 = await esme.submit(fields(data=b"\x00A\x00", dc=8))
        too_long_segment = await esme.submit(fields(
            data=udh("udh8", 1, 2, 1) + encode_part("x" * 160, 0), esm=ESM_UDHI))
        still_fine = await esme.submit(fields())  # the session is still up
    assert invalid_number.command_status == Status.ESME_RINVDSTADR
    assert no_rate.command_status == Status.ESME_RINVDSTADR
    assert bad_sender.command_status == Status.ESME_RINVSRCADR
    assert empty_sender.command_status == Status.ESME_RINVSRCADR
    assert bad_coding.command_status == Status.ESME_RSUBMITFAIL
    assert odd_ucs2.command_status == Status.ESME_RINVMSGLEN
    assert too_long_segment.command_status == Status.ESME_RINVMSGLEN
    assert still_fine.command_status == Status.ESME_ROK
    # nothing refused was charged
    assert await ledger_sum(gateway.db, gateway.account_id) == Decimal("1000") - Decimal("0.045")


async def test_no_balance_is_a_permanent_refusal_not_a_system_error(
    settings: object, db: Database,
) -> None:
    from tests.smpp_server.conftest import running_gateway

    async with running_gateway(settings, db, balance="0.05") as gw:  # type: ignore[arg-type]
        async with customer(gw.port) as esme:
            first = await esme.submit(fields())
            second = await esme.submit(fields())
    assert first.command_status == Status.ESME_ROK
    assert second.command_status == Status.ESME_RSUBMITFAIL  # not ESME_RSYSERR: no retry loop
    assert await ledger_sum(db, gw.account_id) == Decimal("0.05") - Decimal("0.045")


async def test_query_sm_answers_from_the_parts_table(gateway: Gateway) -> None:
    from tikosms.smpp.pdu import Command, c_string
    from tikosms.smpp_server.codec import parse_query  # noqa: F401  (the body it reads)

    async with customer(gateway.port, on_deliver=Inbox()) as esme:
        answer = await esme.submit(fields())
        await wait_final(gateway.db, 1)
        body = c_string(answer.message_id or "") + bytes((5, 0)) + c_string("Acme")
        header, resp = await esme._request(Command.QUERY_SM, body)  # type: ignore[arg-type]
        missing, _ = await esme._request(  # type: ignore[arg-type]
            Command.QUERY_SM, c_string("no-such-id") + bytes((5, 0)) + c_string("Acme"))
    assert header.command_id == Command.QUERY_SM_RESP and header.command_status == 0
    message_id, rest = resp.split(b"\x00", 1)
    final_date, rest = rest.split(b"\x00", 1)
    assert message_id.decode() == answer.message_id
    assert len(final_date) == 16 and final_date.endswith(b"+")
    assert rest == bytes((2, 0))  # DELIVERED, no error
    assert missing.command_status == Status.ESME_RQUERYFAIL


async def test_cancel_sm_cancels_a_part_not_yet_sent_and_refunds_it(bare: BareServer) -> None:
    from tikosms.smpp.pdu import Command, c_string

    async with customer(bare.port) as esme:  # no worker: the part waits in the queue
        answer = await esme.submit(fields())
        body = (c_string("") + c_string(answer.message_id or "") + bytes((5, 0))
                + c_string("Acme") + bytes((1, 1)) + c_string(TO))
        header, _ = await esme._request(Command.CANCEL_SM, body)  # type: ignore[arg-type]
        again, _ = await esme._request(Command.CANCEL_SM, body)  # type: ignore[arg-type]
    assert header.command_id == Command.CANCEL_SM_RESP
    assert header.command_status == Status.ESME_ROK
    assert again.command_status == Status.ESME_RCANCELFAIL  # nothing left to cancel
    [part] = await parts_of(bare.db, answer.message_id or "")
    assert part["status"] == "CANCELED"
    assert await ledger_sum(bare.db, bare.account_id) == Decimal("100")
