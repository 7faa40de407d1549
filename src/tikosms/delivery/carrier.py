"""The carrier interface: what the delivery worker needs from anything that carries SMS.

A carrier takes one *part* at a time (`submit`) and reports its fate later through the
`on_receipt` callback given to `start`. Implementations: the built-in simulated carrier
(`tikosms.delivery.simulated`) and the SMPP 3.4 connector (`tikosms.smpp.connector`).

The module has no database imports so that carriers can be written and tested alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutboundPart:
    """One SMS part as it goes to a carrier.

    `text` is this part's own text (already split); `data_coding` is 0 (GSM 03.38) or 8 (UCS-2).
    For a concatenated message (`total_parts` > 1) the carrier adds the UDH (or SAR TLVs) with
    `concat_ref` as the reference number shared by all parts of the message (0-255 for an 8-bit
    reference, 0-65535 for a 16-bit one).
    """

    part_id: int
    to: str  # digits only, international, no '+': "380501234567"
    sender: str
    sender_type: str  # "Alpha" | "Numeric" | "Shortcode"
    text: str
    data_coding: int  # 0 | 8
    part_no: int  # 1-based
    total_parts: int
    concat_ref: int
    mccmnc: str = ""


class SubmitResult(StrEnum):
    ACCEPTED = "accepted"  # the carrier took the part: carrier_message_id is set
    RETRY = "retry"  # temporary (throttled, queue full, bind lost): submit again later
    REJECTED = "rejected"  # permanent (invalid destination or source ...): refund, REJECTD
    FAILOVER = "failover"  # this carrier cannot route it (down, routing error): try the next one


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    result: SubmitResult
    carrier_message_id: str | None = None
    error_code: str | None = None  # carrier's error, e.g. SMPP command_status "0x0000000b"
    retry_after: float | None = None  # seconds, for RETRY
    detail: str = ""  # human-readable, for the logs
    # RETRY only: the carrier may have taken (and sent) the part although it gave no usable
    # answer (no response, bind lost after the submit left, ROK without a message id). The
    # worker caps such attempts per part: each one is possibly a real SMS to the handset.
    maybe_sent: bool = False

    @classmethod
    def accepted(cls, carrier_message_id: str) -> SubmitOutcome:
        return cls(SubmitResult.ACCEPTED, carrier_message_id=carrier_message_id)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery report from a carrier, matched to a part by `carrier_message_id`.

    `status` is one of the SMPP receipt states the API shows: ACCEPTD, DELIVRD, UNDELIV,
    EXPIRED, REJECTD, DELETED, UNKNOWN (ENROUTE for an intermediate report).
    `alt_ids` are other spellings of the same id (hex vs decimal) to try when matching.
    Message ids are unique per carrier only: a receipt matches parts its `carrier` took.
    """

    carrier_message_id: str
    status: str
    error_code: str | None = None
    done_at: datetime | None = None
    alt_ids: tuple[str, ...] = field(default=())
    carrier: str | None = None  # set by the router: the carrier that reported it


ReceiptHandler = Callable[[Receipt], Awaitable[None]]
"""Called for each receipt. The carrier must acknowledge the receipt to its peer (SMPP
deliver_sm_resp) only after this coroutine returns: it returns once the receipt is durably
recorded."""


@dataclass(frozen=True, slots=True)
class InboundPdu:
    """A mobile-originated deliver_sm from a carrier (not a receipt), as it came: one part of
    a message when it is concatenated. `tikosms.inbound.service` reassembles and decodes."""

    source_addr: str  # the handset
    destination_addr: str  # our number or short code
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]
    carrier: str | None = None


InboundHandler = Callable[[InboundPdu], Awaitable[None]]
"""Called for each MO; as for receipts, the carrier acknowledges it only after this returns
(the MO is then durably stored); if it raises, the carrier answers an error and the SMSC
delivers it again."""


@runtime_checkable
class Carrier(Protocol):
    name: str

    async def start(self, on_receipt: ReceiptHandler) -> None:
        """Connect (or begin connecting) and start delivering receipts to `on_receipt`."""

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        """Submit one part; return once the carrier has answered (or failed to)."""

    @property
    def available(self) -> bool:
        """False while the carrier cannot take parts (all binds down): routing fails over."""

    async def stop(self) -> None:
        """Stop taking parts, wait for answers in flight (briefly), unbind, close."""
