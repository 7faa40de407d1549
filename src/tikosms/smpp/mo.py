"""Mobile-originated messages as an SMSC sends them: the deliver_sm parts of one MO (pure).

Used by the SMSC simulator (`SmscSimulator.send_mo`) to try the gateway's inbound side without
a carrier. Parts are cut at octet boundaries, as some handsets and SMSCs do, so a UTF-16
surrogate pair or a GSM-7 escape may straddle two parts: the receiver must join the octets
before decoding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tikosms.smpp.pdu import ESM_UDHI, Tag
from tikosms.text.gsm import encode_gsm7, is_gsm7

SINGLE_OCTETS = {0: 160, 1: 160, 3: 140, 8: 140}  # short_message octets of a message alone
PART_OCTETS = {0: 153, 1: 153, 3: 134, 8: 134}  # of each part (a UDH takes 6 or 7 octets)
CONCAT_KINDS = ("udh8", "udh16", "sar")
ORDERS = ("in-order", "reverse", "shuffle")


@dataclass(frozen=True, slots=True)
class MoPart:
    short_message: bytes
    esm_class: int
    data_coding: int
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)
    seq: int = 1


def encode_mo(text: str, data_coding: int | None = None) -> tuple[bytes, int]:
    """(octets, data_coding): GSM-7 when every character allows, else UCS-2 (UTF-16BE)."""
    if data_coding is None:
        data_coding = 0 if is_gsm7(text) else 8
    if data_coding == 0:
        return encode_gsm7(text), 0
    if data_coding == 1:
        return text.encode("ascii"), 1
    if data_coding == 3:
        return text.encode("latin-1"), 3
    if data_coding == 8:
        return text.encode("utf-16-be"), 8
    raise ValueError(f"the simulator sends data_coding 0, 1, 3 or 8, not {data_coding}")


def build_mo_parts(text: str, data_coding: int | None = None, *, concat: str = "udh8",
                   ref: int = 0, part_octets: int | None = None, order: str = "in-order",
                   seed: int | None = None) -> list[MoPart]:
    """The deliver_sm parts of one MO, in the order they are to be sent."""
    if concat not in CONCAT_KINDS:
        raise ValueError(f"concat is one of {', '.join(CONCAT_KINDS)}")
    if order not in ORDERS:
        raise ValueError(f"order is one of {', '.join(ORDERS)}")
    data, coding = encode_mo(text, data_coding)
    size = part_octets or PART_OCTETS[coding]
    if coding == 8 and size % 2:
        size -= 1  # whole UTF-16 code units (a pair may still be split between two parts)
    if part_octets is None and len(data) <= SINGLE_OCTETS[coding]:
        return [MoPart(data, 0, coding)]
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    if len(chunks) == 1:
        return [MoPart(data, 0, coding)]
    if len(chunks) > 255:
        raise ValueError("an MO has at most 255 parts")
    total = len(chunks)
    parts = []
    for seq, chunk in enumerate(chunks, start=1):
        if concat == "udh8":
            udh = bytes((5, 0x00, 3, ref & 0xFF, total, seq))
            parts.append(MoPart(udh + chunk, ESM_UDHI, coding, seq=seq))
        elif concat == "udh16":
            udh = bytes((6, 0x08, 4, (ref >> 8) & 0xFF, ref & 0xFF, total, seq))
            parts.append(MoPart(udh + chunk, ESM_UDHI, coding, seq=seq))
        else:
            tlvs: list[tuple[int, bytes]] = [
                (Tag.SAR_MSG_REF_NUM, (ref & 0xFFFF).to_bytes(2, "big")),
                (Tag.SAR_TOTAL_SEGMENTS, bytes((total,))),
                (Tag.SAR_SEGMENT_SEQNUM, bytes((seq,)))]
            parts.append(MoPart(chunk, 0, coding, tlvs, seq=seq))
    if order == "reverse":
        parts.reverse()
    elif order == "shuffle":
        rng = random.Random(seed)
        while True:  # never the original order when there is another one
            rng.shuffle(parts)
            if [p.seq for p in parts] != sorted(p.seq for p in parts):
                break
    return parts
