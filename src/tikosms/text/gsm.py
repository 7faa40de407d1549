"""The GSM 03.38 default alphabet (3GPP TS 23.038, 6.2.1) and its extension table.

SMPP carries GSM-7 text unpacked, one septet per octet (the SMSC packs it for the air
interface). An extension character is sent as the escape septet 0x1B followed by its code
in the extension table, so it costs two septets of a part's budget.
"""

# The basic table in code order: the character at index i is septet i. 0x1B is the escape to
# the extension table, not a character: its slot holds U+001B, which is left out of the
# lookups below (a text containing U+001B is not GSM-7 and goes out as UCS-2).
_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F: Ç is the capital, as in 23.038 (phones show either)
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # 0x10-0x1F: Greek capitals (U+0394 ...), not lookalike symbols
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F: 0x24 is the currency sign ¤, not the dollar
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)
_ESCAPE = 0x1B

# Extension table: character -> the code that follows the escape. 0x0A is form feed.
_EXTENSION_TABLE: dict[str, int] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_BASIC_CODES: dict[str, int] = {
    char: code for code, char in enumerate(_BASIC_TABLE) if code != _ESCAPE
}

BASIC_CHARS: frozenset[str] = frozenset(_BASIC_CODES)
EXTENSION_CHARS: frozenset[str] = frozenset(_EXTENSION_TABLE)
GSM7_CHARS: frozenset[str] = BASIC_CHARS | EXTENSION_CHARS

# str.translate tables. Every code is below 0x80, so the translated text encodes to the septet
# octets one-to-one with latin-1, at C speed.
_TO_SEPTETS: dict[int, str] = {ord(char): chr(code) for char, code in _BASIC_CODES.items()} | {
    ord(char): chr(_ESCAPE) + chr(code) for char, code in _EXTENSION_TABLE.items()
}
_FROM_BASIC: dict[int, str] = {code: char for char, code in _BASIC_CODES.items()}
_FROM_EXTENSION: dict[int, str] = {code: char for char, code in _EXTENSION_TABLE.items()}


def is_gsm7(text: str) -> bool:
    """True when every character is in the basic or the extension table ("" is GSM-7)."""
    return GSM7_CHARS.issuperset(text)


def count_septets(text: str) -> int:
    """Septets of a GSM-7 text: one per character, two per extension character."""
    return len(text) + sum(text.count(char) for char in EXTENSION_CHARS)


def encode_gsm7(text: str) -> bytes:
    """Unpacked GSM 03.38 septets, one per octet, extension characters as 0x1B + code."""
    if not is_gsm7(text):
        bad = next(char for char in text if char not in GSM7_CHARS)
        raise ValueError(f"character U+{ord(bad):04X} is not in the GSM 03.38 alphabet")
    return text.translate(_TO_SEPTETS).encode("latin-1")


def decode_gsm7(data: bytes) -> str:
    """Inverse of encode_gsm7; strict, so a malformed short_message is reported, not guessed.

    23.038 tells a handset to show the basic character for an unknown escape code; the
    simulator would rather see the sender's bug, so that is a ValueError here.
    """
    chars: list[str] = []
    escaped = False
    for position, octet in enumerate(data):
        if escaped:
            char = _FROM_EXTENSION.get(octet)
            if char is None:
                raise ValueError(f"0x1B 0x{octet:02X} at octet {position - 1} is not an extension")
            escaped = False
        elif octet == _ESCAPE:
            escaped = True
            continue
        else:
            char = _FROM_BASIC.get(octet)
            if char is None:
                raise ValueError(f"octet 0x{octet:02X} at {position} is not a GSM 03.38 septet")
        chars.append(char)
    if escaped:
        raise ValueError("GSM 03.38 data ends with an escape (0x1B) and no extension code")
    return "".join(chars)
