"""The pure parts of the customers' server: decoding submit_sm, the error table, err: digits."""

from __future__ import annotations

import pytest

from tikosms.errors import (
    InvalidNumberError,
    NoRateForAccount,
    PaymentRequired,
    RateLimited,
    ServiceUnavailable,
    TikoError,
    ValidationFailed,
)
from tikosms.smpp.pdu import Status, c_string, encode_pdu
from tikosms.smpp_server.codec import Refused, decode_submit, decode_text, split_udh
from tikosms.smpp_server.errors import status_for
from tikosms.smpp_server.outbox import error_number


def raw_submit(source: bytes, dest: bytes = b"380501234567", text: bytes = b"Hello",
               esm_class: int = 0, data_coding: int = 0) -> bytes:
    body = (c_string("") + bytes((5, 0)) + source + b"\x00" + bytes((1, 1)) + dest + b"\x00"
            + bytes((esm_class, 0, 0)) + c_string("") + c_string("")
            + bytes((1, 0, data_coding, 0, len(text))) + text)
    return encode_pdu(0x00000004, 7, body)


@pytest.mark.parametrize(("raw", "status"), [
    (raw_submit("Café".encode("latin-1")), Status.ESME_RINVSRCADR),  # not ASCII
    (raw_submit(b""), Status.ESME_RINVSRCADR),  # no sender
    (raw_submit(b"Shop", dest="3805é".encode("latin-1")), Status.ESME_RINVDSTADR),
    (raw_submit(b"Shop", esm_class=0x40, text=b"\x09\x00\x03"), Status.ESME_RINVESMCLASS),
    (raw_submit(b"Shop", data_coding=0xF5), Status.ESME_RSUBMITFAIL),  # 8-bit data
    (raw_submit(b"Shop")[:-3], Status.ESME_RINVCMDLEN),  # sm_length beyond the PDU
])
def test_malformed_submits_are_refused_with_a_status(raw: bytes, status: int) -> None:
    with pytest.raises(Refused) as refused:
        decode_submit(raw)
    assert refused.value.status == status


def test_a_udh_with_other_elements_keeps_the_concatenation() -> None:
    # a port-addressing element (05) before the 16-bit concatenation one (08)
    header = bytes((12, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x08, 0x04, 0x12, 0x34, 3, 2))
    segment, rest = split_udh(header + b"text")
    assert segment is not None
    assert (segment.ref, segment.total, segment.seq) == (0x1234, 3, 2)
    assert rest == b"text"


@pytest.mark.parametrize(("data", "coding", "text"), [
    (b"\x00\x01\x02", 0, "@£$"),  # GSM 03.38 septets, not ASCII
    ("Grüße".encode(), 0, "Grüße"),  # octets above 0x7F under 0: UTF-8 when valid
    ("Grüße".encode("latin-1"), 0, "Grüße"),  # ... else Latin-1
    (b"caf\xe9", 1, "café"),  # IA5 with a stray high octet
    ("ñ".encode("utf-16-be"), 8, "ñ"),
    (b"\x1b", 0, ""),  # a lone escape: dropped
])
def test_texts_are_decoded_by_their_data_coding(data: bytes, coding: int, text: str) -> None:
    assert decode_text(data, coding) == text


@pytest.mark.parametrize(("error", "status"), [
    (PaymentRequired(), Status.ESME_RSUBMITFAIL),  # permanent until topped up: not RSYSERR
    (NoRateForAccount(), Status.ESME_RINVDSTADR),
    (InvalidNumberError(), Status.ESME_RINVDSTADR),
    (ValidationFailed("x", errors={"from": ["x"]}), Status.ESME_RINVSRCADR),
    (ValidationFailed("x", errors={"message": ["x"]}), Status.ESME_RINVMSGLEN),
    (RateLimited("slow down"), Status.ESME_RTHROTTLED),
    (ServiceUnavailable("db away"), Status.ESME_RSYSERR),  # the gateway's fault: retry
    (ValidationFailed("opted out", code="opted_out"), Status.ESME_RINVDSTADR),  # until START
    (TikoError("teapot", code="something_new"), Status.ESME_RSUBMITFAIL),
])
def test_domain_errors_map_by_whether_to_retry(error: TikoError, status: int) -> None:
    assert status_for(error) == status


@pytest.mark.parametrize(("status", "code", "err"), [
    ("DELIVRD", None, "000"),
    ("UNDELIV", "001", "001"),
    ("UNDELIV", "3:1", "001"),  # network_error_code type:code
    ("REJECTD", "0x0000000b", "011"),  # a command_status
    ("UNKNOWN", "no_carrier_answer", "001"),  # not a number
    ("UNDELIV", "1234", "234"),
])
def test_the_receipt_err_field_is_three_digits(status: str, code: str | None, err: str) -> None:
    assert error_number(status, code) == err
