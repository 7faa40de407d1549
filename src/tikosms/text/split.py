"""Choosing the coding of a text and cutting it into SMS parts.

A part is 140 octets. Alone it holds 160 septets or 70 UTF-16 units; in a concatenated
message the 6-octet UDH (reference, count, index) leaves 153 septets (7 septets go to the UDH
and its fill bits) or 67 units. A part never ends inside an escape sequence or a surrogate
pair: both are one Python character here, so cutting between characters keeps them whole.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from tikosms.text.codec import GSM7, UCS2
from tikosms.text.gsm import EXTENSION_CHARS, count_septets, is_gsm7

SINGLE_PART_SEPTETS = 160
CONCAT_PART_SEPTETS = 153
SINGLE_PART_UNITS = 70
CONCAT_PART_UNITS = 67

# A campaign reuses one text for up to 100,000 recipients; texts are at most 1,600 characters,
# so 256 entries stay within a few megabytes.
_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class SplitText:
    data_coding: int  # SMPP data_coding: GSM7 (0) or UCS2 (8)
    encoding: str  # "GSM-7" or "UCS-2", as shown to the customer
    parts: tuple[str, ...]  # each part's text; "".join(parts) is the original text
    units: int  # total septets (GSM-7) or UTF-16 code units (UCS-2)


def split_text(text: str) -> SplitText:
    """Coding and parts of a message text; ValueError for "" or a lone surrogate.

    Greedy: every part but the last is filled as far as its limit allows; an extension
    character or a surrogate pair that would not fit opens the next part.
    """
    if not text:
        raise ValueError("text is empty")
    return _split_cached(text)


@lru_cache(maxsize=_CACHE_SIZE)
def _split_cached(text: str) -> SplitText:
    if is_gsm7(text):
        septets = count_septets(text)
        parts = _cut(
            text, septets, SINGLE_PART_SEPTETS, CONCAT_PART_SEPTETS, EXTENSION_CHARS.__contains__
        )
        return SplitText(data_coding=GSM7, encoding="GSM-7", parts=parts, units=septets)
    units = _utf16_units(text)
    parts = _cut(text, units, SINGLE_PART_UNITS, CONCAT_PART_UNITS, _is_astral)
    return SplitText(data_coding=UCS2, encoding="UCS-2", parts=parts, units=units)


def _cut(
    text: str, units: int, single_limit: int, part_limit: int, is_double: Callable[[str], bool]
) -> tuple[str, ...]:
    """Greedy parts of a text of `units` units where `is_double` characters cost two."""
    if units <= single_limit:
        return (text,)
    if units == len(text):  # no double-width character: plain slices
        return tuple(text[start : start + part_limit] for start in range(0, len(text), part_limit))
    parts: list[str] = []
    start = 0
    used = 0
    for index, char in enumerate(text):
        cost = 2 if is_double(char) else 1
        if used + cost > part_limit:
            parts.append(text[start:index])
            start = index
            used = 0
        used += cost
    parts.append(text[start:])
    return tuple(parts)


def _utf16_units(text: str) -> int:
    try:
        return len(text.encode("utf-16-le")) // 2
    except UnicodeEncodeError as error:
        # Only a lone surrogate (U+D800-U+DFFF), e.g. from a JSON "\ud83d" escape, gets here.
        raise ValueError("text contains a lone surrogate, which UTF-16 cannot encode") from error


def _is_astral(char: str) -> bool:
    """Beyond the BMP: two UTF-16 code units (a surrogate pair)."""
    return char > "\uffff"
