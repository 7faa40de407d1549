"""Delivery receipts: parse a deliver_sm receipt into a `Receipt` (pure functions).

The receipt text is not part of SMPP 3.4 proper (its Appendix B only suggests it) and every
SMSC spells it a little differently:

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
    err:E text:...

So parsing is tolerant: keys in any case, extra or missing spaces around the colon, missing
fields, "submit_date" for "submit date", dates with or without seconds. The TLVs
receipted_message_id and message_state, when present, win over the text (they are typed).
Ids: one side may give the id in hex and the other in decimal (a submit_sm_resp "1A2B3C" and
a receipt "id:1715004"), so a receipt carries the other spellings of its id in `alt_ids`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tikosms.delivery.carrier import Receipt
from tikosms.smpp.pdu import Tag

FINAL_STATES = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})

# message_state TLV values (SMPP 3.4, 5.2.28) -> the receipt states the API shows.
MESSAGE_STATES: Mapping[int, str] = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
STATE_CODES: Mapping[str, int] = {state: code for code, state in MESSAGE_STATES.items()}

# Recognised by their first five letters, so that DELIVERED, UNDELIVERABLE, REJECTED ... from
# SMSCs that spell the states out map to the same seven-letter states.
_STAT_PREFIXES: Mapping[str, str] = {
    "DELIV": "DELIVRD",
    "UNDEL": "UNDELIV",
    "EXPIR": "EXPIRED",
    "REJEC": "REJECTD",
    "DELET": "DELETED",
    "UNKNO": "UNKNOWN",
    "ACCEP": "ACCEPTD",
    "ENROU": "ENROUTE",
    "FAILE": "UNDELIV",  # "FAILED", seen from some aggregators
}

# The text as SMSCs usually write it (Appendix B, lower-case keys, one space between fields):
# one match instead of the tolerant scan below; anything else falls back to the scan.
_STANDARD = re.compile(
    r"id:(?P<id>\S+) sub:(?P<sub>\S*) dlvrd:(?P<dlvrd>\S*) submit date:(?P<submit_date>\d*)"
    r" done date:(?P<done_date>\d*) stat:(?P<stat>\S*) err:(?P<err>\S*)(?: text:(?P<text>.*))?",
    re.DOTALL,
)
_KEY = re.compile(
    r"(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ReceiptText:
    """The fields of a receipt text, as written (None when missing)."""

    id: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    stat: str | None = None
    err: str | None = None
    text: str | None = None


def parse_receipt(
    short_message: bytes, tlvs: Mapping[int, bytes], data_coding: int = 0
) -> Receipt | None:
    """The receipt in a deliver_sm, or None when it names no message id at all."""
    fields = parse_receipt_text(decode_short_message(short_message, data_coding))
    tlv_id = _c_string(tlvs.get(Tag.RECEIPTED_MESSAGE_ID))
    message_id = tlv_id or fields.id
    if not message_id:
        return None
    message_id = message_id.replace("\x00", "")
    state = tlvs.get(Tag.MESSAGE_STATE)
    if state:
        status = MESSAGE_STATES.get(state[0], "UNKNOWN")
    else:
        status = receipt_status(fields.stat)
    alt_ids = list(id_spellings(message_id))
    if tlv_id and fields.id and fields.id != tlv_id:
        # The text and the TLV disagree in spelling (hex vs decimal): try both.
        alt_ids += [fields.id, *id_spellings(fields.id)]
    return Receipt(
        carrier_message_id=message_id,
        status=status,
        error_code=_error_code(fields.err, tlvs.get(Tag.NETWORK_ERROR_CODE)),
        done_at=parse_smpp_date(fields.done_date),
        alt_ids=tuple(dict.fromkeys(i for i in alt_ids if i != message_id)),
    )


def parse_receipt_text(text: str) -> ReceiptText:
    """Split a receipt text into its fields; unknown keys are ignored, text: takes the rest."""
    standard = _STANDARD.fullmatch(text)
    if standard is not None:
        found = standard.group("id", "sub", "dlvrd", "submit_date", "done_date", "stat", "err",
                               "text")
        if found[7] is not None:
            found = (*found[:7], found[7].strip())
        return ReceiptText(*found)
    return _scan_receipt_text(text)


def _scan_receipt_text(text: str) -> ReceiptText:
    """The tolerant parse: keys in any case and order, spaces around the colon, fields missing."""
    values: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    for index, match in enumerate(matches):
        key = re.sub(r"[ _]", "", match.group(1).lower())
        if key == "text":
            values.setdefault(key, text[match.end() :].strip())
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        values.setdefault(key, text[match.end() : end].strip())
    return ReceiptText(
        id=values.get("id") or None,
        sub=values.get("sub"),
        dlvrd=values.get("dlvrd"),
        submit_date=values.get("submitdate"),
        done_date=values.get("donedate"),
        stat=values.get("stat"),
        err=values.get("err"),
        text=values.get("text"),
    )


def receipt_status(stat: str | None) -> str:
    """The API's receipt state for a `stat:` value; UNKNOWN for what it cannot tell."""
    if not stat:
        return "UNKNOWN"
    return _STAT_PREFIXES.get(stat.strip().upper()[:5], "UNKNOWN")


@functools.lru_cache(maxsize=256)  # receipts of the same minute carry the same done date
def parse_smpp_date(value: str | None) -> datetime | None:
    """A receipt date "YYMMDDhhmm" or "YYMMDDhhmmss", taken as UTC; None if malformed."""
    if not value:
        return None
    digits = value.strip()
    if len(digits) not in (10, 12) or not (digits.isascii() and digits.isdigit()):
        return None
    year = int(digits[0:2])
    year += 2000 if year < 69 else 1900  # as strptime's %y: 69-99 are 1969-1999
    try:
        return datetime(year, int(digits[2:4]), int(digits[4:6]), int(digits[6:8]),
                        int(digits[8:10]), int(digits[10:12] or 0), tzinfo=UTC)
    except ValueError:  # month 13, hour 24 ...
        return None


def id_spellings(message_id: str) -> tuple[str, ...]:
    """Other spellings of a message id: its decimal value read as hex and the other way round,
    hex in both cases, without leading zeros, hex zero-padded to 8 digits. Excludes the id."""
    value = message_id.strip()
    spellings: list[str] = [value]
    if value.isdecimal() and len(value) <= 20:
        number = int(value)
        spellings += [str(number), f"{number:x}", f"{number:X}", f"{number:08x}", f"{number:08X}"]
    if value and len(value) <= 16 and all(c in "0123456789abcdefABCDEF" for c in value):
        number = int(value, 16)
        stripped = value.lstrip("0") or "0"
        spellings += [str(number), value.lower(), value.upper(), stripped.lower(), stripped.upper()]
    return tuple(s for s in dict.fromkeys(spellings) if s != message_id)


def decode_short_message(data: bytes, data_coding: int) -> str:
    """Receipt texts are ASCII in practice; UCS-2 (8) is honoured, anything else is latin-1."""
    if data_coding == 8:
        return data.decode("utf-16-be", errors="replace")
    return data.decode("latin-1")


def _c_string(value: bytes | None) -> str | None:
    if not value:
        return None
    return value.split(b"\x00", 1)[0].decode("latin-1").strip() or None


MAX_MESSAGE_ID = 64  # characters: parts.carrier_message_id; a longer id can never match
MAX_ERROR_CODE = 32  # characters kept of a receipt's error code


def printable(value: str, limit: int) -> str:
    """Printable ASCII only (anything else becomes '?'), at most `limit` characters."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value[:limit])


def _error_code(err: str | None, network_error: bytes | None) -> str | None:
    code = _raw_error_code(err, network_error)
    return printable(code, MAX_ERROR_CODE) if code is not None else None


def _raw_error_code(err: str | None, network_error: bytes | None) -> str | None:
    """The text's err when not zero ("001"); else the network_error_code TLV as
    "network_type:error_code" (e.g. "3:1", GSM error 1); None when both say no error."""
    if err and err.strip("0 "):
        return err.strip()
    if network_error and len(network_error) == 3:
        code = int.from_bytes(network_error[1:], "big")
        if code:
            return f"{network_error[0]}:{code}"
    return None
