"""From a part to its submit_sm fields, and from a submit_sm_resp status to an outcome."""

from __future__ import annotations

from typing import Any

import pytest

from tikosms.delivery.carrier import SubmitResult
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import outcome_for_status
from tikosms.smpp.pdu import ESM_UDHI, Status, Tag
from tikosms.smpp.submit import build_submit, relative_validity, udh


def config(**changes: Any) -> SmppCarrierConfig:
    return SmppCarrierConfig(
        name="c", host="127.0.0.1", port=2775, system_id="s", password="p", **changes
    )


@pytest.mark.parametrize(
    ("sender_type", "overrides", "expected"),
    [
        ("Alpha", {}, (5, 0)),
        ("Numeric", {}, (1, 1)),
        ("Shortcode", {}, (3, 0)),
        ("Alpha", {"Alpha": (5, 9)}, (5, 9)),  # overridden for this carrier
        ("Numeric", {"Alpha": (5, 9)}, (1, 1)),  # an override of one type keeps the others
        ("Other", {}, (0, 0)),  # unknown type: unknown/unknown
    ],
)
def test_source_ton_npi(
    make_part: Any, sender_type: str, overrides: dict[str, tuple[int, int]], expected: Any
) -> None:
    fields = build_submit(make_part(sender_type=sender_type), config(source_ton_npi=overrides))
    assert (fields.source_addr_ton, fields.source_addr_npi) == expected
    assert (fields.dest_addr_ton, fields.dest_addr_npi) == (1, 1)


def test_single_part_has_no_udh_and_asks_for_a_receipt(make_part: Any) -> None:
    fields = build_submit(make_part(text="Hi €"), config())
    assert fields.short_message == b"Hi \x1b\x65"  # GSM 03.38 unpacked, euro escaped
    assert fields.esm_class == 0
    assert fields.registered_delivery == 1
    assert fields.tlvs == ()


@pytest.mark.parametrize(
    ("concat", "header"),
    [
        ("udh8", bytes.fromhex("050003") + bytes((0x34, 3, 2))),  # ref & 0xFF
        ("udh16", bytes.fromhex("060804") + bytes((0x12, 0x34, 3, 2))),
    ],
)
def test_concatenated_part_carries_udh(make_part: Any, concat: str, header: bytes) -> None:
    part = make_part(text="Привіт", data_coding=8, part_no=2, total_parts=3, concat_ref=0x1234)
    fields = build_submit(part, config(concat=concat))
    assert fields.short_message == header + "Привіт".encode("utf-16-be")
    assert fields.esm_class & ESM_UDHI
    assert fields.data_coding == 8


def test_sar_mode_puts_the_numbers_in_tlvs(make_part: Any) -> None:
    part = make_part(part_no=2, total_parts=3, concat_ref=0x1234)
    fields = build_submit(part, config(concat="sar"))
    assert fields.esm_class == 0
    assert fields.short_message == b"Hello from TikoSMS"
    assert dict(fields.tlvs) == {
        Tag.SAR_MSG_REF_NUM: b"\x12\x34",
        Tag.SAR_TOTAL_SEGMENTS: b"\x03",
        Tag.SAR_SEGMENT_SEQNUM: b"\x02",
    }


def test_long_payload_goes_into_message_payload(make_part: Any) -> None:
    fields = build_submit(make_part(text="x" * 300), config())
    assert fields.short_message == b""
    assert dict(fields.tlvs) == {Tag.MESSAGE_PAYLOAD: b"x" * 300}


@pytest.mark.parametrize(
    ("seq", "total"),
    [(0, 2), (3, 2), (1, 256)],  # part 0; part past the total; more than 255 parts
)
def test_udh_refuses_impossible_part_numbers(seq: int, total: int) -> None:
    with pytest.raises(ValueError):
        udh("udh8", 1, total, seq)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, ""),  # the SMSC's default validity
        (3600, "000000010000000R"),  # one hour
        (86400 + 61, "000001000101000R"),  # a day, a minute and a second
        (200 * 86400, "000099000000000R"),  # capped at 99 days
    ],
)
def test_relative_validity(seconds: int | None, expected: str) -> None:
    assert relative_validity(seconds) == expected


def test_validity_period_setting_reaches_the_fields(make_part: Any) -> None:
    assert build_submit(make_part(), config(validity_period=600)).validity_period == (
        "000000001000000R"
    )


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (Status.ESME_RTHROTTLED, SubmitResult.RETRY),  # slow down, resubmit
        (Status.ESME_RMSGQFUL, SubmitResult.RETRY),  # SMSC queue full
        (Status.ESME_RSYSERR, SubmitResult.RETRY),  # SMSC's temporary fault
        (Status.ESME_RINVDSTADR, SubmitResult.REJECTED),  # bad destination: permanent
        (Status.ESME_RINVSRCADR, SubmitResult.REJECTED),  # bad sender: permanent
        (Status.ESME_RINVDSTTON, SubmitResult.REJECTED),
        (Status.ESME_RINVMSGLEN, SubmitResult.REJECTED),
        (Status.ESME_RINVBNDSTS, SubmitResult.FAILOVER),  # our bind is not usable
        (Status.ESME_RSUBMITFAIL, SubmitResult.FAILOVER),  # generic: another carrier may take it
        (0x00000401, SubmitResult.FAILOVER),  # vendor-specific, e.g. "no route"
    ],
)
def test_outcome_for_status(status: int, result: SubmitResult) -> None:
    outcome = outcome_for_status(status, None, retry_after=2.0)
    assert outcome.result is result
    assert outcome.error_code == f"0x{status:08x}"
    assert (outcome.retry_after == 2.0) is (result is SubmitResult.RETRY)


def test_accepted_outcome_carries_the_message_id() -> None:
    outcome = outcome_for_status(Status.ESME_ROK, "1a2b")
    assert (outcome.result, outcome.carrier_message_id) == (SubmitResult.ACCEPTED, "1a2b")


def test_accepted_without_message_id_is_retried() -> None:
    assert outcome_for_status(Status.ESME_ROK, None).result is SubmitResult.RETRY


@pytest.mark.parametrize(
    "changes",
    [
        {"bind_mode": "receiver"},
        {"concat": "udh7"},
        {"binds": 0},
        {"window": 0},
        {"tps": 0},
        {"reconnect_initial": 5.0, "reconnect_max": 1.0},
    ],
)
def test_config_refuses_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        config(**changes)
