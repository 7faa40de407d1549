"""From an `OutboundPart` to the fields of its submit_sm (pure: no I/O, no smpp34).

Concatenation (3GPP TS 23.040, 9.2.3.24.1 and .8): the UDH is prepended to the short_message
and esm_class gets the UDHI bit 0x40; the 8-bit reference costs 6 octets (05 00 03 ref total
seq), the 16-bit one 7 (06 08 04 ref_hi ref_lo total seq). SAR TLVs carry the same three
numbers outside the short_message, for SMSCs that want them there.
"""

from __future__ import annotations

from dataclasses import dataclass

from tikosms.delivery.carrier import OutboundPart
from tikosms.smpp.config import ConcatMode, SmppCarrierConfig
from tikosms.smpp.pdu import ESM_UDHI, Tag
from tikosms.text import encode_part

MAX_SHORT_MESSAGE = 254  # octets; longer content goes in the message_payload TLV


@dataclass(frozen=True, slots=True)
class SubmitFields:
    """Everything a submit_sm carries, as plain values (the session turns it into a PDU)."""

    destination_addr: str
    source_addr: str
    short_message: bytes
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    esm_class: int = 0
    data_coding: int = 0
    registered_delivery: int = 1
    validity_period: str = ""
    service_type: str = ""
    tlvs: tuple[tuple[int, bytes], ...] = ()


def build_submit(part: OutboundPart, config: SmppCarrierConfig) -> SubmitFields:
    source_ton, source_npi = config.source_ton_npi_for(part.sender_type)
    payload = encode_text(part.text, part.data_coding)
    esm_class = 0
    tlvs: list[tuple[int, bytes]] = []
    if part.total_parts > 1:
        if config.concat == "sar":
            tlvs.extend(sar_tlvs(part.concat_ref, part.total_parts, part.part_no))
        else:
            payload = udh(config.concat, part.concat_ref, part.total_parts, part.part_no) + payload
            esm_class |= ESM_UDHI
    if len(payload) > MAX_SHORT_MESSAGE:
        tlvs.append((Tag.MESSAGE_PAYLOAD, payload))
        payload = b""
    return SubmitFields(
        destination_addr=part.to,
        source_addr=part.sender,
        short_message=payload,
        source_addr_ton=source_ton,
        source_addr_npi=source_npi,
        dest_addr_ton=config.dest_ton,
        dest_addr_npi=config.dest_npi,
        esm_class=esm_class,
        data_coding=part.data_coding,
        registered_delivery=config.registered_delivery,
        validity_period=relative_validity(config.validity_period),
        service_type=config.service_type,
        tlvs=tuple(tlvs),
    )


def udh(mode: ConcatMode, ref: int, total: int, seq: int) -> bytes:
    """The concatenation UDH (with its length octet) for part `seq` of `total`."""
    if not 1 <= seq <= total <= 255:
        raise ValueError(f"part {seq} of {total}: need 1 <= part <= total <= 255")
    if mode == "udh8":
        return bytes((0x05, 0x00, 0x03, ref & 0xFF, total, seq))
    if mode == "udh16":
        return bytes((0x06, 0x08, 0x04, (ref >> 8) & 0xFF, ref & 0xFF, total, seq))
    raise ValueError(f"no UDH for concat mode {mode!r}")


def sar_tlvs(ref: int, total: int, seq: int) -> list[tuple[int, bytes]]:
    return [
        (Tag.SAR_MSG_REF_NUM, (ref & 0xFFFF).to_bytes(2, "big")),
        (Tag.SAR_TOTAL_SEGMENTS, bytes((total,))),
        (Tag.SAR_SEGMENT_SEQNUM, bytes((seq,))),
    ]


def relative_validity(seconds: int | None) -> str:
    """SMPP relative time "YYMMDDhhmmss000R" (SMPP 3.4, 7.1.1.2); "" for the SMSC default.

    Only days, hours, minutes and seconds are used, so the period is exact; days are capped
    at 99 (the field has two digits), far beyond any SMSC's maximum validity.
    """
    if seconds is None:
        return ""
    if seconds <= 0:
        raise ValueError("validity_period must be positive")
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"0000{min(days, 99):02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def encode_text(text: str, data_coding: int) -> bytes:
    """The short_message octets of a part's text: GSM 03.38 unpacked (0) or UTF-16BE (8)."""
    return encode_part(text, data_coding)
