"""encode_part / decode_part: SMPP short_message bytes for one part."""

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import pytest

from tikosms.text import GSM7, UCS2, decode_part, encode_part

# Every non-ASCII basic character, ASCII samples, and the whole extension table.
GSM_SAMPLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà^{}\\[~]|€\f"
)


@pytest.mark.parametrize(
    ("text", "data_coding", "data"),
    [
        ("@£$", GSM7, b"\x00\x01\x02"),  # the first basic codes; @ is 0x00
        ("Hi!", GSM7, b"\x48\x69\x21"),  # ASCII letters keep their codes
        ("€", GSM7, b"\x1b\x65"),  # extension: escape + code
        ("\f", GSM7, b"\x1b\x0a"),  # form feed is the extension code 0x0A (LF is basic 0x0A)
        ("a{b}", GSM7, b"\x61\x1b\x28\x62\x1b\x29"),  # braces amid basic characters
        ("¤à", GSM7, b"\x24\x7f"),  # 0x24 is ¤, not $; 0x7F is à
        ("ж", UCS2, b"\x04\x36"),  # BMP character: one big-endian unit
        ("😀", UCS2, b"\xd8\x3d\xde\x00"),  # beyond the BMP: a surrogate pair, high first
        ("A€", UCS2, b"\x00\x41\x20\xac"),  # UCS-2 has no escapes
    ],
)
def test_encode_and_decode_part(text: str, data_coding: int, data: bytes) -> None:
    assert encode_part(text, data_coding) == data
    assert decode_part(data, data_coding) == text


def test_gsm7_encoding_matches_the_gsm0338_codec() -> None:
    assert encode_part(GSM_SAMPLE, GSM7) == GSM_SAMPLE.encode("gsm03.38")


def test_gsm7_decoding_matches_the_gsm0338_codec() -> None:
    data = GSM_SAMPLE.encode("gsm03.38")
    assert decode_part(data, GSM7) == data.decode("gsm03.38")


@pytest.mark.parametrize(
    ("text", "data_coding"),
    [
        ("ж", GSM7),  # not in the GSM alphabet
        ("a\x1b", GSM7),  # a raw escape is not a character
        ("\ud83d", UCS2),  # lone surrogate
        ("a", 4),  # 8-bit binary is not ours to encode
    ],
)
def test_encode_part_rejects(text: str, data_coding: int) -> None:
    with pytest.raises(ValueError):
        encode_part(text, data_coding)


@pytest.mark.parametrize(
    ("data", "data_coding"),
    [
        (b"\x80", GSM7),  # not a septet
        (b"a\x1b", GSM7),  # escape with nothing after it
        (b"\x1b\x41", GSM7),  # escape + a code that is not in the extension table
        (b"\x1b\x1b", GSM7),  # the reserved double escape
        (b"\x00\x41\x00", UCS2),  # odd number of octets
        (b"\xd8\x3d", UCS2),  # high surrogate without its pair
        (b"a", 3),  # Latin-1 is not ours to decode
    ],
)
def test_decode_part_rejects(data: bytes, data_coding: int) -> None:
    with pytest.raises(ValueError):
        decode_part(data, data_coding)
