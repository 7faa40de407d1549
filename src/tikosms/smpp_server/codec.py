"""The PDUs of the customers' server that the client side does not have (pure functions).

submit_sm arrives through smpp34's decoder and becomes an `SmppMessage` for the messaging
service: the text decoded by its data_coding, the customer's concatenation (UDH 8- or 16-bit
reference, or SAR TLVs) kept, message_payload taken for long texts. Receipts and MO leave as
deliver_sm encoded by smpp34; query_sm, cancel_sm and their responses are a few C-strings.

data_coding (SMPP 3.4, 5.2.19):
- 0, "SMSC default alphabet": GSM 03.38 unpacked, one septet per octet (as smpplib and our own
  carriers send it); octets above 0x7F cannot be septets, so such a text is read as UTF-8 when
  it is valid UTF-8, else as Latin-1 (clients that send ASCII/Latin-1 under 0 exist);
- 1, IA5 (ASCII), read as Latin-1 so that a stray high octet is not a refusal;
- 3, Latin-1 (ISO-8859-1);
- 8, UCS-2, read as UTF-16BE (surrogate pairs, i.e. emoji, included).
An escape (0x1B) followed by no extension character is dropped (23.038 lets a handset show
the next character plainly, which is what remains).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import smpp34

from tikosms.messaging.smpp_send import (
    RECEIPTS_ALL,
    RECEIPTS_FAILURES,
    RECEIPTS_NONE,
    Segment,
    SmppMessage,
)
from tikosms.smpp.pdu import ESM_SMSC_RECEIPT, ESM_UDHI, Status, Tag, c_string, read_c_string
from tikosms.text.gsm import EXTENSION_CHARS, decode_gsm7, encode_gsm7, is_gsm7

# source_addr_ton -> the API's sender_type (SMPP 3.4, 5.2.5); other TONs: inferred as HTTP does
TON_SENDER_TYPES = {1: "Numeric", 3: "Shortcode", 5: "Alpha"}
_ESCAPE = 0x1B
_EXTENSION_CODES = frozenset(encode_gsm7(c)[1] for c in EXTENSION_CHARS)


class Refused(Exception):
    """A PDU the server answers with an error status (the session goes on)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True, slots=True)
class DecodedSubmit:
    message: SmppMessage
    data_coding: int


def decode_submit(raw: bytes) -> DecodedSubmit:
    """A whole submit_sm PDU (header included) -> the message to send; Refused otherwise."""
    try:
        pdu = smpp34.decode(raw)
    except smpp34.SmppError as exc:
        raise Refused(Status.ESME_RINVCMDLEN, f"malformed submit_sm: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(Status.ESME_RINVPARLEN, f"malformed submit_sm: {exc}") from None
    if not isinstance(pdu, smpp34.SubmitSm):
        raise Refused(Status.ESME_RINVCMDID, "not a submit_sm")
    tlvs = {tlv.tag: tlv.value for tlv in pdu.tlvs}
    data = pdu.short_message
    payload = tlvs.get(Tag.MESSAGE_PAYLOAD)
    if payload:
        if data:
            raise Refused(Status.ESME_RINVOPTPARAMVAL,
                          "short_message and message_payload both set")
        data = payload
    segment = None
    if pdu.esm_class & ESM_UDHI:
        segment, data = split_udh(data)
    elif Tag.SAR_MSG_REF_NUM in tlvs or Tag.SAR_TOTAL_SEGMENTS in tlvs:
        segment = sar_segment(tlvs)
    if segment is not None and segment.total == 1:
        segment = None  # "part 1 of 1": a message like any other
    text = decode_text(data, pdu.data_coding)
    if "\x00" in text:
        raise Refused(Status.ESME_RSUBMITFAIL, "the text contains NUL characters")
    source = pdu.source_addr.strip()
    if not source or "\ufffd" in source:  # empty, or octets that are not ASCII
        raise Refused(Status.ESME_RINVSRCADR, "source_addr is empty or not ASCII")
    if "\ufffd" in pdu.destination_addr:
        raise Refused(Status.ESME_RINVDSTADR, "destination_addr is not ASCII")
    wanted = pdu.registered_delivery & 0x03
    kind = {0: RECEIPTS_NONE, 2: RECEIPTS_FAILURES}.get(wanted, RECEIPTS_ALL)
    message = SmppMessage(
        sender=source,
        sender_type=TON_SENDER_TYPES.get(pdu.source_addr_ton),
        to=pdu.destination_addr.strip(),
        text=text,
        kind=kind,
        segment=segment,
        ucs2=pdu.data_coding == 8,
    )
    return DecodedSubmit(message, pdu.data_coding)


def split_udh(data: bytes) -> tuple[Segment | None, bytes]:
    """The concatenation of a User Data Header (IE 0x00: 8-bit reference, 0x08: 16-bit), and
    the octets after the header. Other IEs (ports, ...) are skipped."""
    if not data or data[0] + 1 > len(data):
        raise Refused(Status.ESME_RINVESMCLASS, "UDHI set but no valid User Data Header")
    end = data[0] + 1
    position = 1
    segment = None
    while position + 2 <= end:
        iei, length = data[position], data[position + 1]
        value = data[position + 2:position + 2 + length]
        if position + 2 + length > end:
            raise Refused(Status.ESME_RINVESMCLASS, "User Data Header element overruns it")
        if iei == 0x00 and length == 3:
            segment = _segment(value[0], value[1], value[2], Status.ESME_RINVESMCLASS)
        elif iei == 0x08 and length == 4:
            segment = _segment(int.from_bytes(value[:2], "big"), value[2], value[3],
                               Status.ESME_RINVESMCLASS)
        position += 2 + length
    return segment, data[end:]


def sar_segment(tlvs: dict[int, bytes]) -> Segment:
    ref, total, seq = (tlvs.get(t) for t in (Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS,
                                              Tag.SAR_SEGMENT_SEQNUM))
    if not ref or not total or not seq:
        raise Refused(Status.ESME_RMISSINGOPTPARAM, "SAR TLVs must come as all three")
    return _segment(int.from_bytes(ref, "big"), total[0], seq[0], Status.ESME_RINVOPTPARAMVAL)


def _segment(ref: int, total: int, seq: int, status: int) -> Segment:
    if not 1 <= seq <= total:
        raise Refused(status, f"segment {seq} of {total}")
    return Segment(ref, total, seq)


def decode_text(data: bytes, data_coding: int) -> str:
    if data_coding == 8:
        if len(data) % 2:
            raise Refused(Status.ESME_RINVMSGLEN, "UCS-2 text of an odd number of octets")
        try:
            return data.decode("utf-16-be")
        except UnicodeDecodeError:
            raise Refused(Status.ESME_RSUBMITFAIL, "UCS-2 text with a lone surrogate") from None
    if data_coding == 0:
        if all(octet < 0x80 for octet in data):
            return _gsm7(data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    if data_coding in (1, 3):
        return data.decode("latin-1")
    raise Refused(Status.ESME_RSUBMITFAIL, f"data_coding {data_coding} is not supported "
                  "(0, 1, 3 and 8 are)")


def _gsm7(data: bytes) -> str:
    try:
        return decode_gsm7(data)
    except ValueError:  # an escape to no extension character: dropped
        kept = bytearray()
        for i, octet in enumerate(data):
            if octet == _ESCAPE and (i + 1 >= len(data) or data[i + 1] not in _EXTENSION_CODES):
                continue
            kept.append(octet)
        return decode_gsm7(bytes(kept))


# --- query_sm / cancel_sm ----------------------------------------------------------------------

def parse_query(body: bytes) -> tuple[str, str]:
    """query_sm: (message_id, source_addr)."""
    message_id, offset = read_c_string(body)
    source, _ = read_c_string(body, offset + 2) if len(body) > offset + 2 else ("", 0)
    return message_id.strip(), source


def parse_cancel(body: bytes) -> tuple[str, str, str]:
    """cancel_sm: (message_id, source_addr, destination_addr)."""
    _service_type, offset = read_c_string(body)
    message_id, offset = read_c_string(body, offset)
    source, offset = read_c_string(body, offset + 2) if len(body) > offset + 2 else ("", offset)
    dest, _ = read_c_string(body, offset + 2) if len(body) > offset + 2 else ("", 0)
    return message_id.strip(), source, dest


def query_resp_body(message_id: str, final_at: datetime | None, state: int,
                    error: int = 0) -> bytes:
    """message_id, final_date (absolute SMPP time, or empty while not final), message_state,
    error_code (SMPP 3.4, 4.8.2)."""
    final = f"{final_at:%y%m%d%H%M%S}000+" if final_at is not None else ""
    return c_string(message_id) + c_string(final) + bytes((state & 0xFF, error & 0xFF))


# --- deliver_sm ----------------------------------------------------------------------------------

def receipt_text(payload: dict[str, Any]) -> str:
    """The receipt in the form of SMPP 3.4 Appendix B that strict clients parse:
    `id:... sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD
    err:000 text:...` (text: the first 20 characters, ASCII)."""
    stat = str(payload["stat"])
    return (
        f"id:{payload['id']} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
        f"submit date:{payload['submit_date']} done date:{payload['done_date']} "
        f"stat:{stat} err:{payload['err']} text:{payload['text']}"
    )


def deliver_pdu(kind: str, payload: dict[str, Any], sequence: int) -> bytes:
    """The deliver_sm of an outbox item (`receipt` or `mo`)."""
    if kind == "receipt":
        return smpp34.DeliverSm(
            str(payload["src"]), str(payload["dst"]),
            receipt_text(payload).encode("ascii", "replace"),
            esm_class=ESM_SMSC_RECEIPT,
            source_addr_ton=1, source_addr_npi=1,
            dest_addr_ton=int(payload.get("dst_ton", 0)),
            dest_addr_npi=int(payload.get("dst_npi", 0)),
            tlvs=[
                smpp34.Tlv(Tag.RECEIPTED_MESSAGE_ID, c_string(str(payload["id"]))),
                smpp34.Tlv(Tag.MESSAGE_STATE, bytes((int(payload["state"]),))),
            ],
            sequence_number=sequence,
        ).encode()
    data = bytes.fromhex(str(payload["data"]))
    tlvs = []
    short = data
    if len(data) > 254:
        tlvs.append(smpp34.Tlv(Tag.MESSAGE_PAYLOAD, data))
        short = b""
    return smpp34.DeliverSm(
        str(payload["src"]), str(payload["dst"]), short,
        esm_class=int(payload.get("esm_class", 0)),
        data_coding=int(payload.get("data_coding", 0)),
        source_addr_ton=int(payload.get("src_ton", 1)),
        source_addr_npi=int(payload.get("src_npi", 1)),
        dest_addr_ton=int(payload.get("dst_ton", 1)),
        dest_addr_npi=int(payload.get("dst_npi", 1)),
        tlvs=tlvs,
        sequence_number=sequence,
    ).encode()


def encode_mo_text(text: str, data_coding: int | None) -> tuple[bytes, int]:
    """An MO text as deliver_sm octets: GSM 03.38 when it can be (or when asked), else UCS-2."""
    if data_coding == 8 or (data_coding is None and not is_gsm7(text)):
        return text.encode("utf-16-be"), 8
    if data_coding in (None, 0) and is_gsm7(text):
        return encode_gsm7(text), 0
    if data_coding == 3:
        return text.encode("latin-1", "replace"), 3
    return text.encode("utf-16-be"), 8
