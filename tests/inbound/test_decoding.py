"""Pure logic of inbound SMS: data codings, concatenation markers, keywords, the simulator's
MO parts read back by the receiver's own functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tikosms.inbound import keywords
from tikosms.inbound.concat import Concat, assembly_key, split_user_data
from tikosms.inbound.decoding import decode
from tikosms.inbound.service import join_fragments
from tikosms.smpp.mo import build_mo_parts
from tikosms.smpp.pdu import ESM_UDHI, Tag
from tikosms.text.gsm import GSM7_CHARS

DECODING = [
    # (octets, data_coding, text, encoding)
    (b"Hello", 0, "Hello", "gsm7"),  # GSM-7 basic table, unpacked
    (b"\x00\x01\x02\x11", 0, "@£$_", "gsm7"),  # 0x00 is '@', not NUL
    (b"\x1b\x65 5 \x1b\x28x\x1b\x29", 0, "€ 5 {x}", "gsm7"),  # extension table
    (b"\x1b\x14\x1b\x2f\x1b\x3c\x1b\x3e\x1b\x3d\x1b\x40", 0, "^\\[]~|", "gsm7"),
    (b"a\x1b\x41b", 0, "aAb", "gsm7"),  # unknown escape: the basic character (23.038)
    (b"ab\x1b", 0, "ab ", "gsm7"),  # a trailing escape: a space
    (b"\xc1\xe2", 0, "Ab", "gsm7"),  # top bit set by some SMSCs: the low seven bits
    (b"Hi there", 1, "Hi there", "ascii"),  # IA5
    (b"caf\xe9", 1, "cafi", "ascii"),  # IA5 is 7-bit: 0xE9 & 0x7F is 'i'
    (b"caf\xe9 \xa3", 3, "café £", "latin1"),  # ISO-8859-1
    ("Привіт".encode("utf-16-be"), 8, "Привіт", "ucs2"),
    ("hi 😀".encode("utf-16-be"), 8, "hi 😀", "ucs2"),  # a surrogate pair
    (b"\xd8\x3d\x00A", 8, "\ufffdA", "ucs2"),  # a lone high surrogate: U+FFFD
    (b"\x00\x00\x00A", 8, "\ufffdA", "ucs2"),  # U+0000: PostgreSQL stores no NUL
    (b"\x01\xff", 4, "01ff", "binary"),  # 8-bit data is shown as hex
    ("Шалом".encode("iso8859-5"), 6, "Шалом", "cyrillic"),
    (b"Hello", 0xF0, "Hello", "gsm7"),  # GSM DCS group F: default alphabet
    (b"\x01\x02", 0xF4, "0102", "binary"),  # ... and 8-bit data
    (b"x\xff", 0x99, "x\xff", "latin1"),  # a coding nobody defined: one character an octet
]


@pytest.mark.parametrize(("data", "coding", "text", "encoding"), DECODING)
def test_decoding_by_data_coding(data: bytes, coding: int, text: str, encoding: str) -> None:
    assert decode(data, coding) == (text, encoding)


def test_a_surrogate_pair_split_between_two_parts_is_joined_whole() -> None:
    octets = "ab😀".encode("utf-16-be")  # 61 00 62 00 | D8 3D DE 00
    first, second = octets[:6], octets[6:]  # the pair's halves in two parts
    assert join_fragments([(8, first), (8, second)]) == ("ab😀", "ucs2", 8)


def test_a_gsm_escape_split_between_two_parts_is_joined_whole() -> None:
    assert join_fragments([(0, b"price 5\x1b"), (0, b"\x65")])[0] == "price 5€"


UDH = [
    # (short_message, esm_class, tlvs, data, concat)
    (b"\x05\x00\x03\x2a\x03\x02abc", ESM_UDHI, {}, b"abc", Concat("udh8", 0x2A, 3, 2)),
    (b"\x06\x08\x04\x12\x34\x02\x01xy", ESM_UDHI, {}, b"xy", Concat("udh16", 0x1234, 2, 1)),
    # another element first (port addressing, IEI 0x05), then the concatenation
    (b"\x0b\x05\x04\x0b\x84\x23\xf0\x00\x03\x07\x02\x02z", ESM_UDHI, {}, b"z",
     Concat("udh8", 7, 2, 2)),
    (b"abc", 0, {Tag.SAR_MSG_REF_NUM: b"\x01\x00", Tag.SAR_TOTAL_SEGMENTS: b"\x04",
                 Tag.SAR_SEGMENT_SEQNUM: b"\x04"}, b"abc", Concat("sar", 256, 4, 4)),
    (b"plain", 0, {}, b"plain", None),  # not concatenated
    (b"\x05\x00\x03\x01\x01\x01one", ESM_UDHI, {}, b"one", None),  # total 1: a whole message
    (b"\x05\x00\x03\x01\x02\x03bad", ESM_UDHI, {}, b"bad", None),  # seq beyond total
    (b"\x05\x00\x03\x01\x02\x00bad", ESM_UDHI, {}, b"bad", None),  # seq 0
    (b"\x04\x00\x03\x01", ESM_UDHI, {}, b"", None),  # truncated header
    (b"", 0, {Tag.MESSAGE_PAYLOAD: b"long payload"}, b"long payload", None),
]


@pytest.mark.parametrize(("short_message", "esm", "tlvs", "data", "concat"), UDH)
def test_concatenation_markers(short_message: bytes, esm: int, tlvs: dict[int, bytes],
                               data: bytes, concat: Concat | None) -> None:
    assert split_user_data(short_message, esm, tlvs) == (data, concat)


def test_the_assembly_key_holds_the_sender() -> None:
    info = Concat("udh8", 5, 2, 1)
    assert assembly_key("380501111111", "12345", info) != assembly_key(
        "380502222222", "12345", info)


OPT_OUT = [
    # (text, action or None)
    ("STOP", ("stop", "STOP")),
    ("stop", ("stop", "STOP")),
    ("  Stop.  ", ("stop", "STOP")),
    ("quit", ("stop", "QUIT")),
    ("END", ("stop", "END")),
    ("Revoke", ("stop", "REVOKE")),
    ("opt out", ("stop", "OPT OUT")),
    ("Opt-Out", ("stop", "OPT OUT")),
    ("OPTOUT", ("stop", "OPTOUT")),
    ("cancel", ("stop", "CANCEL")),
    ("Unsubscribe!", ("stop", "UNSUBSCRIBE")),
    ("STOPALL", ("stop_all", "STOPALL")),
    ("stop all", ("stop_all", "STOP ALL")),
    ("START", ("start", "START")),
    ("unstop", ("start", "UNSTOP")),
    ("don't stop", None),  # a keyword among other words is not an opt-out
    ("stop the 3pm reminder", None),
    ("STOPPED", None),
    ("", None),
    ("...", None),
]


@pytest.mark.parametrize(("text", "action"), OPT_OUT)
def test_stop_and_start_keywords(text: str, action: tuple[str, str] | None) -> None:
    assert keywords.opt_out_action(text) == action


def test_an_accounts_own_stop_keyword_counts() -> None:
    extra = keywords.parse_stop_keywords("arret, Halt ,")
    assert extra == ("ARRET", "HALT")
    assert keywords.opt_out_action("Arret", extra) == ("stop", "ARRET")
    assert keywords.opt_out_action("Arret") is None


@pytest.mark.parametrize(("text", "word"), [
    ("PIZZA large please", "PIZZA"), ("pizza", "PIZZA"), ("  Pizza, now", "PIZZA"),
    ("ÉCOLE inscription", "ÉCOLE"), ("", ""), ("!!!", ""),
])
def test_the_routing_keyword_is_the_first_word(text: str, word: str) -> None:
    assert keywords.first_word(text) == word


def _receive(parts: list[tuple[bytes, int, int, dict[int, bytes]]]) -> str:
    """What the receiver makes of the simulator's parts, in the order they were sent."""
    by_seq: dict[int, tuple[int, bytes]] = {}
    total = 1
    for short_message, esm, coding, tlvs in parts:
        data, info = split_user_data(short_message, esm, tlvs)
        if info is None:
            return decode(data, coding)[0]
        by_seq[info.seq] = (coding, data)
        total = info.total
    assert sorted(by_seq) == list(range(1, total + 1))
    return join_fragments([by_seq[s] for s in sorted(by_seq)])[0]


@pytest.mark.parametrize("concat", ["udh8", "udh16", "sar"])
@pytest.mark.parametrize("order", ["in-order", "reverse", "shuffle"])
def test_simulator_parts_read_back(concat: str, order: str) -> None:
    text = "Ünïcödé 😀 " * 30  # UCS-2, 4 parts of 134 octets; a pair falls on a boundary
    parts = build_mo_parts(text, concat=concat, order=order, ref=300, seed=1)
    assert len(parts) > 2
    if order != "in-order":
        assert [p.seq for p in parts] != sorted(p.seq for p in parts)
    assert _receive([(p.short_message, p.esm_class, p.data_coding, dict(p.tlvs))
                     for p in parts]) == text


@given(st.text(alphabet=sorted(GSM7_CHARS - {"\x1b"}), min_size=1, max_size=600),
       st.integers(min_value=10, max_value=153), st.sampled_from(["udh8", "udh16", "sar"]))
def test_any_gsm_text_cut_anywhere_comes_back_whole(text: str, size: int, concat: str) -> None:
    parts = build_mo_parts(text, 0, concat=concat, part_octets=size, order="reverse",
                           ref=9)
    assert _receive([(p.short_message, p.esm_class, p.data_coding, dict(p.tlvs))
                     for p in parts]) == text


@given(st.text(min_size=1, max_size=300).filter(lambda t: "\x00" not in t),
       st.integers(min_value=2, max_value=134))
def test_any_text_in_ucs2_cut_anywhere_comes_back_whole(text: str, size: int) -> None:
    text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF) or "x"
    parts = build_mo_parts(text, 8, concat="udh16", part_octets=size, order="shuffle",
                           ref=1, seed=3)
    assert _receive([(p.short_message, p.esm_class, p.data_coding, dict(p.tlvs))
                     for p in parts]) == text
