"""The text of an MO from its octets and data_coding (SMPP 3.4, 5.2.19), never failing.

A carrier's MO is whatever the handset and the SMSC made of it, so decoding is tolerant where
`tikosms.text` (our own parts) is strict: an unknown GSM escape gives the basic character (as
3GPP TS 23.038 tells a handset to do), a lone UTF-16 surrogate gives U+FFFD, NUL becomes U+FFFD
(PostgreSQL cannot store it). Parts of a long message are joined as octets *before* decoding,
so a surrogate pair or an escape split between two parts comes out whole.
"""

from __future__ import annotations

from collections.abc import Mapping

from tikosms.text.gsm import BASIC_CHARS, EXTENSION_CHARS, encode_gsm7

_ESCAPE = 0x1B
# septet -> character, from the same tables our sends use (tikosms.text.gsm)
_BASIC: dict[int, str] = {encode_gsm7(c)[0]: c for c in BASIC_CHARS}
_EXTENSION: dict[int, str] = {encode_gsm7(c)[1]: c for c in EXTENSION_CHARS}

# data_coding -> (encoding name shown to customers, Python codec); None: 8-bit binary
CODINGS: Mapping[int, tuple[str, str | None]] = {
    0: ("gsm7", "gsm7"),  # SMSC default alphabet: GSM 03.38, unpacked, one septet an octet
    1: ("ascii", "ascii"),  # IA5 (CCITT T.50) = ASCII
    2: ("binary", None),  # octet unspecified (8-bit binary)
    3: ("latin1", "latin-1"),  # ISO-8859-1
    4: ("binary", None),  # octet unspecified (8-bit binary)
    5: ("jis", "shift_jis"),  # JIS (X 0208-1990); Shift-JIS in practice
    6: ("cyrillic", "iso8859-5"),
    7: ("hebrew", "iso8859-8"),
    8: ("ucs2", "utf-16-be"),  # UCS-2; UTF-16BE in practice (emoji as surrogate pairs)
    10: ("iso2022jp", "iso2022_jp"),
    13: ("jis", "shift_jis"),  # extended kanji JIS (X 0212-1990)
    14: ("ksc5601", "euc_kr"),
}


def coding_of(data_coding: int) -> tuple[str, str | None]:
    """(encoding name, codec) for a data_coding, including the GSM 03.38 DCS groups that some
    SMSCs pass through unchanged (0xF0-0xFF: bit 2 says 8-bit data, else default alphabet;
    0x00-0x3F "general" with bits 3-2 the alphabet when the message class bit is set)."""
    if data_coding in CODINGS:
        return CODINGS[data_coding]
    if data_coding & 0xF0 == 0xF0:
        return CODINGS[4] if data_coding & 0x04 else CODINGS[0]
    if data_coding < 0x40 and data_coding & 0x10:
        alphabet = (data_coding >> 2) & 0x03
        return {0: CODINGS[0], 1: CODINGS[4], 2: CODINGS[8]}.get(alphabet, CODINGS[3])
    return ("latin1", "latin-1")  # unknown: one character per octet, nothing lost


def decode(data: bytes, data_coding: int) -> tuple[str, str]:
    """(text, encoding name). Binary data is shown as hex (it is not text)."""
    name, codec = coding_of(data_coding)
    if codec is None:
        return data.hex(), name
    if codec == "gsm7":
        text = decode_gsm7_tolerant(data)
    elif codec == "ascii":
        text = bytes(b & 0x7F for b in data).decode("ascii")  # IA5 is 7-bit
    else:
        text = data.decode(codec, errors="replace")
    return text.replace("\x00", "\ufffd"), name


def decode_gsm7_tolerant(data: bytes) -> str:
    """Unpacked GSM 03.38: the basic table, 0x1B + code from the extension table; an unknown
    extension code shows its basic character, a trailing escape a space, octets above 0x7F
    are read as their low 7 bits (some SMSCs set the top bit)."""
    out: list[str] = []
    escaped = False
    for octet in data:
        septet = octet & 0x7F
        if escaped:
            escaped = False
            out.append(_EXTENSION.get(septet) or _BASIC.get(septet, " "))
        elif septet == _ESCAPE:
            escaped = True
        else:
            out.append(_BASIC.get(septet, " "))
    if escaped:
        out.append(" ")
    return "".join(out)
