"""SMPP 3.4 PDU framing: the command ids, command_status codes and the small PDUs.

submit_sm and deliver_sm (the PDUs with many fields, TLVs and a short_message) are encoded
and decoded by smpp34's codec; this module only adds what smpp34 exposes as raw bytes: the
16-octet header and the bodies of bind, bind_resp, submit_sm_resp, enquire_link, unbind and
generic_nack, which are a few C-strings or nothing at all (SMPP 3.4, sections 4.1-4.7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct(">IIII")  # command_length, command_id, command_status, sequence_number
HEADER_SIZE = HEADER.size  # 16 octets
MAX_PDU_SIZE = 64 * 1024  # far above any real PDU; a larger length means a broken peer
MAX_SEQUENCE = 0x7FFFFFFF  # sequence numbers run 0x00000001-0x7FFFFFFF (SMPP 3.4, 3.2)
RESPONSE_BIT = 0x80000000
INTERFACE_VERSION = 0x34


class Command(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    # answered by the customers' server (tikosms.smpp_server); the client never sends them
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    OUTBIND = 0x0000000B
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


BIND_COMMANDS = {
    Command.BIND_RECEIVER,
    Command.BIND_TRANSMITTER,
    Command.BIND_TRANSCEIVER,
}


class Status(IntEnum):
    """command_status values of SMPP 3.4 (section 5.1.3) that this package names."""

    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVESMCLASS = 0x00000043
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF


def status_name(status: int) -> str:
    """`ESME_RINVPASWD (0x0000000e)`, or just the hex for a vendor-specific code."""
    try:
        return f"{Status(status).name} ({status:#010x})"
    except ValueError:
        return f"{status:#010x}"


@dataclass(frozen=True, slots=True)
class Header:
    command_length: int
    command_id: int
    command_status: int
    sequence_number: int


def parse_header(data: bytes) -> Header:
    return Header(*HEADER.unpack_from(data))


def encode_pdu(command_id: int, sequence_number: int, body: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(HEADER_SIZE + len(body), command_id, status, sequence_number) + body


def c_string(value: str) -> bytes:
    """A C-Octet String: ASCII, NUL-terminated."""
    return value.encode("ascii") + b"\x00"


def read_c_string(body: bytes, offset: int = 0) -> tuple[str, int]:
    """The C-string at `offset` and the offset after its NUL (tolerates a missing NUL)."""
    end = body.find(b"\x00", offset)
    if end < 0:
        return body[offset:].decode("latin-1"), len(body)
    return body[offset:end].decode("latin-1"), end + 1


@dataclass(frozen=True, slots=True)
class BindRequest:
    system_id: str
    password: str
    system_type: str = ""
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def encode_body(self) -> bytes:
        return (
            c_string(self.system_id)
            + c_string(self.password)
            + c_string(self.system_type)
            + bytes((INTERFACE_VERSION, self.addr_ton, self.addr_npi))
            + c_string(self.address_range)
        )

    @classmethod
    def decode_body(cls, body: bytes) -> BindRequest:
        system_id, offset = read_c_string(body)
        password, offset = read_c_string(body, offset)
        system_type, offset = read_c_string(body, offset)
        # interface_version, addr_ton, addr_npi: three single octets
        addr_ton = body[offset + 1] if len(body) > offset + 1 else 0
        addr_npi = body[offset + 2] if len(body) > offset + 2 else 0
        address_range, _ = read_c_string(body, offset + 3) if len(body) > offset + 3 else ("", 0)
        return cls(system_id, password, system_type, addr_ton, addr_npi, address_range)


class Tag(IntEnum):
    """TLV (optional parameter) tags used here (SMPP 3.4, section 5.3.2)."""

    RECEIPTED_MESSAGE_ID = 0x001E
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


# esm_class bits (SMPP 3.4, 5.2.12)
ESM_UDHI = 0x40  # the short_message starts with a User Data Header
ESM_TYPE_MASK = 0x3C
ESM_SMSC_RECEIPT = 0x04  # deliver_sm carries an SMSC delivery receipt
ESM_SME_ACK = 0x08
ESM_INTERMEDIATE = 0x20  # intermediate delivery notification
