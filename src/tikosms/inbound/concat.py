"""Which part of which message a deliver_sm is: the UDH's concatenation element or SAR TLVs.

UDH (esm_class bit 0x40): the first octet is the header length, then elements (IEI, length,
data). IEI 0x00: 8-bit reference (`00 03 ref total seq`); IEI 0x08: 16-bit reference
(`08 04 ref_hi ref_lo total seq`). Other elements (port numbers, language shift ...) are skipped.
SAR TLVs: sar_msg_ref_num (2 octets), sar_total_segments, sar_segment_seqnum.
A concatenation marker that makes no sense (total < 2, seq 0 or above total) is ignored: the
deliver_sm is taken as a message of its own rather than wait forever for parts that never come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tikosms.smpp.pdu import ESM_UDHI, Tag


@dataclass(frozen=True, slots=True)
class Concat:
    kind: str  # "udh8" | "udh16" | "sar"
    ref: int
    total: int
    seq: int  # 1-based


def split_user_data(short_message: bytes, esm_class: int, tlvs: Mapping[int, bytes]
                    ) -> tuple[bytes, Concat | None]:
    """(the user data without its UDH, the concatenation info or None)."""
    data = short_message or tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    concat: Concat | None = None
    if esm_class & ESM_UDHI and data:
        length = data[0]
        header, data = data[1:1 + length], data[1 + length:]
        concat = _from_udh(header)
    if concat is None:
        concat = _from_sar(tlvs)
    if concat is not None and not (concat.total >= 2 and 1 <= concat.seq <= concat.total):
        concat = None
    return data, concat


def _from_udh(header: bytes) -> Concat | None:
    i = 0
    while i + 2 <= len(header):
        iei, length = header[i], header[i + 1]
        value = header[i + 2:i + 2 + length]
        if len(value) < length:
            return None  # truncated header
        if iei == 0x00 and length == 3:
            return Concat("udh8", value[0], value[1], value[2])
        if iei == 0x08 and length == 4:
            return Concat("udh16", int.from_bytes(value[:2], "big"), value[2], value[3])
        i += 2 + length
    return None


def _from_sar(tlvs: Mapping[int, bytes]) -> Concat | None:
    ref, total, seq = (tlvs.get(t) for t in (Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS,
                                             Tag.SAR_SEGMENT_SEQNUM))
    if not (ref and total and seq):
        return None
    return Concat("sar", int.from_bytes(ref, "big"), total[0], seq[0])


def assembly_key(sender: str, recipient: str, concat: Concat) -> str:
    """The key the parts of one message share. The sender is part of it (Jasmin keys on the
    reference alone: two handsets texting one short code with the same reference got their
    parts mixed), and so are the reference's kind and the total."""
    return f"{sender}|{recipient}|{concat.kind}:{concat.ref}|{concat.total}"
