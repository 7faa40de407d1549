"""Receipt parsing: the text, the TLVs, the state mapping and the id spellings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tikosms.smpp.dlr import (
    _scan_receipt_text,
    id_spellings,
    parse_receipt,
    parse_receipt_text,
    parse_smpp_date,
    receipt_status,
)
from tikosms.smpp.pdu import Tag

STANDARD = (
    "id:1a2b3c4d sub:001 dlvrd:001 submit date:2409011200 done date:2409011201 "
    "stat:DELIVRD err:000 text:Hello world"
)


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        # the standard text, every field
        (STANDARD, "id", "1a2b3c4d"),
        (STANDARD, "sub", "001"),
        (STANDARD, "dlvrd", "001"),
        (STANDARD, "submit_date", "2409011200"),
        (STANDARD, "done_date", "2409011201"),
        (STANDARD, "stat", "DELIVRD"),
        (STANDARD, "err", "000"),
        (STANDARD, "text", "Hello world"),
        # keys in upper case
        ("ID:77 SUB:001 DLVRD:001 STAT:UNDELIV ERR:001", "stat", "UNDELIV"),
        ("ID:77 SUB:001 DLVRD:001 STAT:UNDELIV ERR:001", "id", "77"),
        # spaces around the colon and doubled spaces between fields
        ("id : 42   stat :  EXPIRED  err:005", "id", "42"),
        ("id : 42   stat :  EXPIRED  err:005", "stat", "EXPIRED"),
        # underscores in the date keys
        (
            "id:9 submit_date:2401010000 done_date:240101000030 stat:DELIVRD",
            "done_date",
            "240101000030",
        ),
        # missing fields are None
        ("id:9 stat:DELIVRD", "err", None),
        ("id:9 stat:DELIVRD", "done_date", None),
        # text: takes the rest, even what looks like a key
        ("id:5 stat:DELIVRD text:see id:6 stat:UNDELIV", "text", "see id:6 stat:UNDELIV"),
        ("id:5 stat:DELIVRD text:see id:6 stat:UNDELIV", "stat", "DELIVRD"),
        # "sid:" is not "id:" (a key starts after a space)
        ("sid:1 id:2 stat:DELIVRD", "id", "2"),
        # no id at all
        ("stat:DELIVRD", "id", None),
        # Text: with capital T (seen from some SMSCs)
        ("id:3 stat:DELIVRD Text:hi", "text", "hi"),
    ],
)
def test_parse_receipt_text(text: str, field: str, expected: str | None) -> None:
    assert getattr(parse_receipt_text(text), field) == expected


@pytest.mark.parametrize(
    ("stat", "expected"),
    [
        ("DELIVRD", "DELIVRD"),
        ("delivrd", "DELIVRD"),  # lower case
        ("DELIVERED", "DELIVRD"),  # spelled out
        ("UNDELIV", "UNDELIV"),
        ("UNDELIVERABLE", "UNDELIV"),
        ("EXPIRED", "EXPIRED"),
        ("REJECTD", "REJECTD"),
        ("REJECTED", "REJECTD"),
        ("DELETED", "DELETED"),
        ("ACCEPTD", "ACCEPTD"),
        ("ENROUTE", "ENROUTE"),
        ("UNKNOWN", "UNKNOWN"),
        ("FAILED", "UNDELIV"),  # aggregators' word for undeliverable
        (" DELIVRD ", "DELIVRD"),  # stray spaces
        ("GARBAGE", "UNKNOWN"),
        ("", "UNKNOWN"),
        (None, "UNKNOWN"),
    ],
)
def test_receipt_status(stat: str | None, expected: str) -> None:
    assert receipt_status(stat) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2409011201", datetime(2024, 9, 1, 12, 1, tzinfo=UTC)),  # YYMMDDhhmm
        ("240901120130", datetime(2024, 9, 1, 12, 1, 30, tzinfo=UTC)),  # with seconds
        ("2413011201", None),  # month 13
        ("24090112", None),  # too short
        ("", None),
        (None, None),
    ],
)
def test_parse_smpp_date(value: str | None, expected: datetime | None) -> None:
    assert parse_smpp_date(value) == expected


@pytest.mark.parametrize(
    ("message_id", "must_include"),
    [
        ("1715004", {"1a2b3c", "1A2B3C", "001a2b3c"}),  # decimal -> hex spellings
        ("1a2b3c", {"1715004", "1A2B3C"}),  # hex -> decimal, other case
        ("1A2B3C", {"1715004", "1a2b3c"}),
        ("00001a2b", {"1a2b", "6699"}),  # hex with leading zeros
        ("0001715004", {"1715004", "1a2b3c"}),  # zero-padded decimal
        ("12", {"c", "18"}),  # both readings of an ambiguous id
    ],
)
def test_id_spellings_cover_hex_and_decimal(message_id: str, must_include: set[str]) -> None:
    spellings = id_spellings(message_id)
    assert must_include <= set(spellings)
    assert message_id not in spellings


def test_id_spellings_of_a_non_numeric_id_are_empty() -> None:
    assert id_spellings("msg-77/x") == ()


def test_parse_receipt_from_text_only() -> None:
    receipt = parse_receipt(STANDARD.encode(), {})
    assert receipt is not None
    assert receipt.carrier_message_id == "1a2b3c4d"
    assert receipt.status == "DELIVRD"
    assert receipt.error_code is None
    assert receipt.done_at == datetime(2024, 9, 1, 12, 1, tzinfo=UTC)
    assert str(0x1A2B3C4D) in receipt.alt_ids


def test_tlvs_win_over_the_text() -> None:
    text = b"id:439041101 sub:001 dlvrd:000 stat:DELIVRD err:000"
    tlvs = {
        Tag.RECEIPTED_MESSAGE_ID: b"1a2b3c4d\x00",
        Tag.MESSAGE_STATE: bytes((5,)),  # UNDELIVERABLE
        Tag.NETWORK_ERROR_CODE: bytes((3, 0, 27)),  # GSM error 27: absent subscriber
    }
    receipt = parse_receipt(text, tlvs)
    assert receipt is not None
    assert receipt.carrier_message_id == "1a2b3c4d"
    assert receipt.status == "UNDELIV"
    assert receipt.error_code == "3:27"
    # the text's decimal spelling of the same id is offered for matching
    assert "439041101" in receipt.alt_ids


@pytest.mark.parametrize(
    ("err", "network_error", "expected"),
    [
        ("000", None, None),  # no error anywhere
        ("001", None, "001"),  # the text's error code
        ("000", bytes((3, 0, 1)), "3:1"),  # the TLV when the text says none
        (None, bytes((3, 0, 0)), None),  # a TLV with error 0
    ],
)
def test_error_code(err: str | None, network_error: bytes | None, expected: str | None) -> None:
    text = "id:1 stat:UNDELIV" + (f" err:{err}" if err else "")
    tlvs = {Tag.NETWORK_ERROR_CODE: network_error} if network_error else {}
    receipt = parse_receipt(text.encode(), tlvs)
    assert receipt is not None
    assert receipt.error_code == expected


def test_receipt_without_any_id_is_none() -> None:
    assert parse_receipt(b"stat:DELIVRD err:000", {}) is None


def test_ucs2_receipt_text() -> None:
    receipt = parse_receipt("id:9 stat:DELIVRD".encode("utf-16-be"), {}, data_coding=8)
    assert receipt is not None
    assert (receipt.carrier_message_id, receipt.status) == ("9", "DELIVRD")


def test_message_state_tlv_alone_gives_the_status() -> None:
    receipt = parse_receipt(b"", {Tag.RECEIPTED_MESSAGE_ID: b"abc\x00", Tag.MESSAGE_STATE: b"\x03"})
    assert receipt is not None
    assert (receipt.carrier_message_id, receipt.status) == ("abc", "EXPIRED")


@pytest.mark.parametrize(
    "text",
    [
        STANDARD,  # the standard text: one regex match
        STANDARD.removesuffix(" text:Hello world"),  # no text: field
        STANDARD + "  ",  # trailing spaces: the text is stripped
        STANDARD.replace("Hello world", "see id:6 stat:UNDELIV"),  # keys inside the text
        STANDARD.replace("sub:001", "sub:"),  # an empty field
        STANDARD.replace("stat:", "STAT:"),  # upper case: the tolerant scan
        STANDARD.replace("done date", "done_date"),  # underscore: the tolerant scan
        STANDARD.replace("submit date:2409011200", "submit date:24-09-01"),  # odd date: scan
        STANDARD.replace(" err:", "  err:"),  # doubled space: the tolerant scan
        STANDARD.replace(" text:", " Text:"),  # capital T: the tolerant scan
    ],
)
def test_standard_text_parses_as_the_tolerant_scan_does(text: str) -> None:
    assert parse_receipt_text(text) == _scan_receipt_text(text)


@given(
    st.from_regex(r"[0-9a-zA-Z]{1,20}", fullmatch=True),
    st.sampled_from(["DELIVRD", "UNDELIV", "EXPIRED", "ENROUTE", "x"]),
    st.from_regex(r"[0-9]{0,12}", fullmatch=True),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)
def test_standard_texts_parse_as_the_tolerant_scan_does(
    message_id: str, stat: str, date: str, body: str
) -> None:
    text = (f"id:{message_id} sub:001 dlvrd:000 submit date:{date} done date:{date} "
            f"stat:{stat} err:000 text:{body}")
    assert parse_receipt_text(text) == _scan_receipt_text(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("6812312359", datetime(2068, 12, 31, 23, 59, tzinfo=UTC)),  # %y: 00-68 are 20xx
        ("6901010000", datetime(1969, 1, 1, 0, 0, tzinfo=UTC)),  # %y: 69-99 are 19xx
        (" 2409011201 ", datetime(2024, 9, 1, 12, 1, tzinfo=UTC)),  # stray spaces
        ("2409011260", None),  # minute 60
        ("240901126030", None),  # second 60 (strptime refuses it too)
        ("2409011201a", None),  # 11 characters
        ("24090112O1", None),  # a letter O for a zero
        ("２４０９０１１２０１", None),  # full-width digits are not receipt digits
    ],
)
def test_parse_smpp_date_edges(value: str, expected: datetime | None) -> None:
    assert parse_smpp_date(value) == expected
