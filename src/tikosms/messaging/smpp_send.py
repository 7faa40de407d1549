"""A customer's submit_sm as a send: the same number, price, reserve and parts as an HTTP send.

The SMPP server decodes the PDU (`tikosms.smpp_server.codec`) and hands the result here; what
is stored goes through the same group-commit writer as `POST /v1/message` (reserve with its
ledger row, the parts as the delivery queue, fairness across accounts by the queue's claim).

Each submit_sm is one message of its own campaign (kind `smpp`, `smpp-f` or `smpp-n` after its
registered_delivery: a receipt for every final state, for failures only, or none). Segmentation:

- a submit_sm that is itself one segment of the customer's concatenated message (a UDH or SAR
  TLVs) becomes exactly one part, keeping the customer's reference, count and sequence number,
  so the carrier sends the very segments the customer made and each has the id and receipt of
  its own submit_sm. It must fit one concatenated part (153 septets or 67 UCS-2 units);
- a whole text (short_message, or message_payload up to 1,600 characters) is split as an HTTP
  send is (`tikosms.text.split_text`): one message of one or more parts, each billed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.accounts.service import AuthenticatedAccount
from tikosms.db.models import QUEUED
from tikosms.db.types import naive_utc_now
from tikosms.errors import (
    AccountSuspended,
    ValidationFailed,
)
from tikosms.inbound.optouts import opt_out_key
from tikosms.messaging.schemas import MAX_CAMPAIGN_CHARS, Sender, parse_sender
from tikosms.messaging.service import (
    PreparedSend,
    SendResult,
    _campaign_values,
    _part_rows,
    new_ids,
    rate_or_fail,
    resolve_or_fail,
    split_or_fail,
)
from tikosms.text import GSM7, UCS2, SplitText, is_gsm7
from tikosms.text.gsm import count_septets
from tikosms.text.split import CONCAT_PART_SEPTETS, CONCAT_PART_UNITS

SMPP_KINDS = ("smpp", "smpp-f", "smpp-n")  # campaigns.kind of SMPP sends, by receipts wanted
RECEIPTS_ALL, RECEIPTS_FAILURES, RECEIPTS_NONE = SMPP_KINDS
PRIORITY = 1  # the queue's fair share across accounts, as campaign parts have
CODE_SEGMENT_TOO_LONG = "segment_too_long"


@dataclass(frozen=True, slots=True)
class Segment:
    """The customer's own concatenation of a submit_sm: part `seq` of `total`, reference `ref`
    (8 or 16 bits)."""

    ref: int
    total: int
    seq: int


@dataclass(frozen=True, slots=True)
class SmppMessage:
    sender: str
    sender_type: str | None  # Alpha | Numeric | Shortcode from the TON; None: as HTTP infers
    to: str
    text: str
    kind: str = RECEIPTS_ALL  # one of SMPP_KINDS
    segment: Segment | None = None
    ucs2: bool = False  # the customer sent UCS-2 (data_coding 8): a segment stays UCS-2


async def prepare_smpp_send(conn: AsyncConnection, account: AuthenticatedAccount,
                            msg: SmppMessage) -> PreparedSend:
    """Check, resolve, split and price one submit_sm; raises the API's domain errors."""
    if account.status != "active":
        raise AccountSuspended()
    sender = _sender(msg)
    dest = await resolve_or_fail(conn, msg.to)
    split = _segment_split(msg) if msg.segment is not None else _whole_split(msg)
    rate = await rate_or_fail(conn, account.id, dest)
    now = naive_utc_now()
    campaign_id, message_id = new_ids(2)
    cost = rate.rate * len(split.parts)
    campaign = _campaign_values(
        campaign_id, account.id, msg.kind, sender, msg.text, 1, len(split.parts), cost, None,
        None, 1, now,
    )
    rows = _part_rows(campaign_id, message_id, account.id, dest, split, rate.rate, None, None,
                      QUEUED, PRIORITY, now, now)
    if msg.segment is not None:
        # the customer's own numbering and reference (column order: messaging.repository)
        seg = msg.segment
        row = list(rows[0])
        row[3], row[4], row[16] = seg.seq, seg.total, seg.ref
        rows = [tuple(row)]
    result = SendResult(campaign_id, [message_id], 1, len(split.parts), cost, split.encoding)
    # token 0: the bind was authenticated; opted-out recipients are refused by the writer
    return PreparedSend(account.id, campaign, rows, result, 0, opt_out_key(dest.number, sender))


def _sender(msg: SmppMessage) -> Sender:
    body: dict[str, object] = {"from": msg.sender}
    if msg.sender_type is not None:
        body["sender_type"] = msg.sender_type
    return parse_sender(body)


def _whole_split(msg: SmppMessage) -> SplitText:
    if len(msg.text) > MAX_CAMPAIGN_CHARS:
        raise ValidationFailed(
            f"The message must not be longer than {MAX_CAMPAIGN_CHARS:,} characters.",
            code="message_too_long")
    return split_or_fail(msg.text)


def _segment_split(msg: SmppMessage) -> SplitText:
    """One part holding the customer's segment, in GSM-7 when it can be (and the customer did
    not ask for UCS-2), else UCS-2; ValidationFailed when it does not fit one part."""
    text = msg.text
    if not text:
        raise ValidationFailed("The message field must not be empty.")
    if not msg.ucs2 and is_gsm7(text):
        if count_septets(text) <= CONCAT_PART_SEPTETS:
            return SplitText(GSM7, "GSM-7", (text,), count_septets(text))
    else:
        try:
            units = len(text.encode("utf-16-le")) // 2
        except UnicodeEncodeError:
            raise ValidationFailed("The message contains a lone surrogate.") from None
        if units <= CONCAT_PART_UNITS:
            return SplitText(UCS2, "UCS-2", (text,), units)
    raise ValidationFailed(
        "A segment of a concatenated message must fit one part (153 GSM-7 septets or 67 "
        "UCS-2 units).", code=CODE_SEGMENT_TOO_LONG)

