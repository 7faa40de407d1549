"""Claiming due parts from the parts table, the durable queue.

A claim sets a lease (`lease_until`, `lease_owner`) on due, waiting parts; a worker that dies
leaves its leases to expire, and its parts are claimed again. On PostgreSQL the candidate rows are
picked `FOR UPDATE SKIP LOCKED`, so concurrent workers never claim the same part; on SQLite the
claim runs under `BEGIN IMMEDIATE`, one writer at a time.

Fairness: single messages (priority 0, one-time codes) are claimed first; campaign parts are then
shared out across the accounts that have due parts, so one account's 100,000-part campaign does
not hold another account's parts back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import ATTEMPTS_CAP, WAITING_STATUSES, Campaign, Part


@dataclass(frozen=True, slots=True)
class ClaimedPart:
    id: int
    campaign_id: str
    account_id: int
    to: str
    text: str
    data_coding: int
    part_no: int
    total_parts: int
    concat_ref: int
    mccmnc: str
    attempts: int
    due_at: datetime
    callback_url: str | None  # the part's own; its campaign's may apply (`senders`)


def _due(now: datetime) -> list:  # type: ignore[type-arg]
    return [
        Part.status.in_(WAITING_STATUSES),
        Part.due_at <= now,
        or_(Part.lease_until.is_(None), Part.lease_until < now),
    ]


async def claim_due_parts(
    conn: AsyncConnection, owner: str, limit: int, now: datetime, lease_seconds: float,
    accounts: list[int] | None = None,
) -> list[ClaimedPart]:
    """Claim up to `limit` due parts. `accounts`: the accounts with due campaign parts, when
    the caller knows them (a recent `accounts_with_due_parts`); looked up otherwise."""
    lease_until = now + timedelta(seconds=lease_seconds)
    claimed = await _claim(conn, _candidates(now, priority=0), limit, owner, now, lease_until)
    room = limit - len(claimed)
    if room <= 0:
        return claimed
    if accounts is None:
        accounts = await accounts_with_due_parts(conn, now)
    if not accounts:
        return claimed
    share = max(1, math.ceil(room / len(accounts)))
    for account_id in accounts:
        if room <= 0:
            break
        got = await _claim(
            conn, _candidates(now, priority=1, account_id=account_id), min(share, room),
            owner, now, lease_until,
        )
        claimed += got
        room -= len(got)
    return claimed


async def accounts_with_due_parts(conn: AsyncConnection, now: datetime) -> list[int]:
    return [
        a for (a,) in await conn.execute(
            select(Part.account_id).distinct().where(Part.priority == 1, *_due(now))
        )
    ]


def _candidates(now: datetime, priority: int, account_id: int | None = None) -> Select:  # type: ignore[type-arg]
    conds = [Part.priority == priority, *_due(now)]
    if account_id is not None:
        conds.append(Part.account_id == account_id)
    return select(Part.id).where(and_(*conds)).order_by(Part.due_at, Part.id)


# LEAST(attempts + 1, cap), spelled so that SQLite runs it too: a part claimed every second for
# years never overflows the column (and every claim with it)
_COUNT_CLAIM = case((Part.attempts < ATTEMPTS_CAP, Part.attempts + 1), else_=Part.attempts)


async def _claim(
    conn: AsyncConnection, candidates: Select, limit: int, owner: str,  # type: ignore[type-arg]
    now: datetime, lease_until: datetime,
) -> list[ClaimedPart]:
    """One statement: UPDATE ... WHERE id IN (the due candidates, SKIP LOCKED) RETURNING."""
    candidates = candidates.limit(limit)
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(Part)
        .where(Part.id.in_(candidates.scalar_subquery()))
        .values(lease_until=lease_until, lease_owner=owner, attempts=_COUNT_CLAIM,
                updated_at=now)
        .returning(
            Part.id, Part.campaign_id, Part.account_id, Part.to, Part.text, Part.data_coding,
            Part.part_no, Part.total_parts, Part.concat_ref, Part.mccmnc, Part.attempts,
            Part.due_at, Part.callback_url,
        )
    )
    return sorted((ClaimedPart(*tuple(row)) for row in result), key=lambda p: (p.due_at, p.id))


async def renew_leases(
    conn: AsyncConnection, owner: str, ids: list[int], until: datetime
) -> None:
    if ids:
        await conn.execute(
            update(Part)
            .where(Part.id.in_(ids), Part.lease_owner == owner, Part.status.in_(WAITING_STATUSES))
            .values(lease_until=until)
        )


async def release_leases(conn: AsyncConnection, owner: str, ids: list[int]) -> int:
    """Give claimed parts back to the queue at once (clean shutdown)."""
    if not ids:
        return 0
    result = await conn.execute(
        update(Part)
        .where(Part.id.in_(ids), Part.lease_owner == owner, Part.status.in_(WAITING_STATUSES))
        .values(lease_until=None, lease_owner=None)
    )
    return int(result.rowcount or 0)


@dataclass(frozen=True, slots=True)
class Sender:
    """What a campaign gives each of its parts on the way out (a campaign never changes these)."""

    sender: str
    sender_type: str
    has_callback: bool  # the campaign has a callback URL: every status change is announced


async def senders(conn: AsyncConnection, campaign_ids: set[str]) -> dict[str, Sender]:
    rows = await conn.execute(
        select(Campaign.id, Campaign.sender, Campaign.sender_type, Campaign.callback_url).where(
            Campaign.id.in_(campaign_ids)
        )
    )
    return {r.id: Sender(r.sender, r.sender_type, bool(r.callback_url)) for r in rows}
