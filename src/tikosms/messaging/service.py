"""Sending: number -> price -> reserve -> split -> parts stored as the delivery queue.

One request is one transaction: the cost is reserved from the balance and every part is written
in the same transaction, so a request is either accepted whole (and paid) or changes nothing.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tikosms.accounts import service as accounts
from tikosms.db.engine import Database
from tikosms.db.models import QUEUED, SCHEDULED
from tikosms.db.types import naive_utc, to_micros, utcnow
from tikosms.errors import (
    MSG_INVALID_NUMBER,
    MSG_NO_RATE_FOR_ACCOUNT,
    AccountSuspended,
    InvalidNumberError,
    NoRateForAccount,
    ValidationFailed,
)
from tikosms.messaging.resolver import resolve_many
from tikosms.messaging.schemas import CampaignSend, Sender, SingleSend
from tikosms.numbering import numbering_plan
from tikosms.numbers import Destination, InvalidNumber, resolve
from tikosms.rates.service import load_rate_book
from tikosms.text import SplitText, split_text

MAX_INVALID_LISTED = 100


@dataclass(slots=True)
class SendResult:
    campaign_id: str
    message_ids: list[str]
    recipients: int
    parts: int
    cost: Decimal
    encoding: str
    duplicates_removed: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)
    invalid_removed: int = 0
    scheduled: bool = False


def split_or_fail(message: str) -> SplitText:
    try:
        return split_text(message)
    except ValueError as exc:
        raise ValidationFailed(
            f"The message cannot be sent: {exc}.", errors={"message": [str(exc)]}
        ) from None


@dataclass(slots=True)
class PreparedSend:
    """A send checked, priced and laid out, ready to be stored in one transaction."""

    account_id: int
    campaign: dict[str, Any]
    rows: list[tuple[Any, ...]]
    result: SendResult


async def prepare_single(
    db: Database, account: accounts.AuthenticatedAccount, req: SingleSend
) -> PreparedSend:
    """Resolve, split and price one message (reads only: no lock is held meanwhile)."""
    if account.status != "active":
        raise AccountSuspended()
    async with db.connect() as conn:
        plan = await numbering_plan(conn)
        try:
            dest = resolve(req.to, plan)
        except InvalidNumber as exc:
            raise InvalidNumberError(errors={"to": [str(exc)]}) from None
        split = split_or_fail(req.message)
        book = await load_rate_book(conn, account.id, [dest.mcc])
    rate = book.find(dest.mcc, dest.mnc)
    if rate is None:
        raise NoRateForAccount()
    now = utcnow()
    campaign_id = str(uuid.uuid4())
    message_id = str(uuid.uuid4())
    cost = rate.rate * len(split.parts)
    campaign = _campaign_values(
        campaign_id, account.id, "single", req.sender, req.message, 1, len(split.parts), cost,
        None, None, 10, now,
    )
    rows = _part_rows(
        campaign_id, message_id, account.id, dest, split, rate.rate, req.client_ref,
        req.callback_url, QUEUED, 0, now, now,
    )
    result = SendResult(campaign_id, [message_id], 1, len(split.parts), cost, split.encoding)
    return PreparedSend(account.id, campaign, rows, result)


async def prepare_campaign(
    db: Database, account: accounts.AuthenticatedAccount, req: CampaignSend, now: datetime,
) -> PreparedSend:
    """Dedupe, validate, price and lay out a campaign (reads only; `store` then writes it).

    Invalid numbers and destinations without a rate are left out and reported (the first 100);
    if nobody is left the request is a 422. Memory: one tuple per part, no ORM objects.
    """
    if account.status != "active":
        raise AccountSuspended()
    split = split_or_fail(req.message)
    async with db.connect() as conn:
        plan = await numbering_plan(conn)
    invalid: list[tuple[int, str, str]] = list(req.invalid)
    resolved = await resolve_many([r.to for r in req.recipients], plan)
    seen: set[str] = set()
    duplicates = 0
    accepted: list[tuple[int, Destination, str | None, str | None]] = []
    for r, dest in zip(req.recipients, resolved, strict=True):
        if dest is None:
            invalid.append((r.index, r.to, MSG_INVALID_NUMBER))
            continue
        if dest.number in seen:
            duplicates += 1
            continue
        seen.add(dest.number)
        accepted.append((r.index, dest, r.client_ref, r.callback_url))
    del seen, resolved

    async with db.connect() as conn:
        book = await load_rate_book(conn, account.id, {d.mcc for _, d, _, _ in accepted})
    n_parts = len(split.parts)
    campaign_id = str(uuid.uuid4())
    scheduled = req.scheduled_at is not None
    status = SCHEDULED if scheduled else QUEUED
    due_n, now_n = naive_utc(req.scheduled_at or now), naive_utc(now)
    coding = split.data_coding
    texts = list(enumerate(split.parts, start=1))
    micros: dict[Decimal, int] = {}
    rows: list[tuple[Any, ...]] = []
    message_ids: list[str] = []
    total = Decimal(0)
    for index, dest, client_ref, callback_url in accepted:
        rate = book.find(dest.mcc, dest.mnc)
        if rate is None:
            invalid.append((index, dest.number, MSG_NO_RATE_FOR_ACCOUNT))
            continue
        message_id = str(uuid.uuid4())
        message_ids.append(message_id)
        cost = micros.get(rate.rate)
        if cost is None:
            cost = micros[rate.rate] = to_micros(rate.rate)
        total += rate.rate * n_parts
        ref = secrets.randbelow(65536) if n_parts > 1 else 0
        mccmnc = dest.mccmnc
        for no, text in texts:
            rows.append((
                campaign_id, message_id, account.id, no, n_parts, dest.number, text, coding,
                mccmnc, cost, client_ref, callback_url, status, 1, due_n, 0, ref, now_n, now_n,
            ))
    invalid.sort(key=lambda item: item[0])
    if not message_ids:
        # SPEC_NOTES: nobody left is a 422 with the number sentence, whatever removed them
        raise InvalidNumberError(errors={"recipients": sorted({err for _, _, err in invalid})})

    campaign = _campaign_values(
        campaign_id, account.id, "bulk", req.sender, req.message, len(message_ids), len(rows),
        total, req.callback_url, req.scheduled_at, req.concurrency, now,
        duplicates_removed=duplicates, invalid_removed=len(invalid),
    )
    result = SendResult(
        campaign_id=campaign_id,
        message_ids=message_ids,
        recipients=len(message_ids),
        parts=len(rows),
        cost=total,
        encoding=split.encoding,
        duplicates_removed=duplicates,
        invalid=[
            {"index": i, "to": to, "error": err}
            for i, to, err in invalid[:MAX_INVALID_LISTED]
        ],
        invalid_removed=len(invalid),
        scheduled=scheduled,
    )
    return PreparedSend(account.id, campaign, rows, result)


def _campaign_values(
    campaign_id: str, account_id: int, kind: str, sender: Sender, message: str,
    recipients: int, total_parts: int, cost: Decimal, callback_url: str | None,
    scheduled_at: datetime | None, concurrency: int, now: datetime,
    duplicates_removed: int = 0, invalid_removed: int = 0,
) -> dict[str, Any]:
    return {
        "id": campaign_id, "account_id": account_id, "kind": kind, "sender": sender.value,
        "sender_type": sender.type, "message": message, "recipients": recipients,
        "duplicates_removed": duplicates_removed, "invalid_removed": invalid_removed,
        "total_parts": total_parts, "cost": cost, "callback_url": callback_url,
        "scheduled_at": scheduled_at, "concurrency": concurrency, "status": "active",
        "created_at": now, "updated_at": now,
    }


def _part_rows(
    campaign_id: str, message_id: str, account_id: int, dest: Destination, split: SplitText,
    rate: Decimal, client_ref: str | None, callback_url: str | None, status: str,
    priority: int, due: datetime, now: datetime,
) -> list[tuple[Any, ...]]:
    total = len(split.parts)
    cost = to_micros(rate)
    due_n, now_n = naive_utc(due), naive_utc(now)
    # one reference number shared by the parts of a message (16 bits; 8-bit UDH uses the low byte)
    ref = secrets.randbelow(65536) if total > 1 else 0
    return [
        (campaign_id, message_id, account_id, no, total, dest.number, text, split.data_coding,
         dest.mccmnc, cost, client_ref, callback_url, status, priority, due_n, 0, ref, now_n,
         now_n)
        for no, text in enumerate(split.parts, start=1)
    ]
