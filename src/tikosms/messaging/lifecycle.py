"""Campaign lifecycle: scheduled -> active -> completed (every part final), or canceled; and the
campaign's parts counted by status.

Kept off the hot paths on purpose: the send path writes a campaign `active` and never touches it
again, the recorder never updates campaigns. Instead the delivery worker's housekeeping runs
`roll_up` every few seconds: it counts the parts (by status, through `ix_parts_campaign`) of
campaigns not yet finished (found through the partial index `ix_campaigns_unfinished`), stores
the counts on the campaign, and when every part is final sets `completed_at` and moves an active
campaign to `completed`. A canceled campaign stays `canceled`; it is counted until its parts in
flight at the time of the cancel have their final state too, then gets `completed_at`.

`scheduled` is not stored: a campaign is shown scheduled while its `scheduled_at` is ahead and it
is neither canceled nor completed, so it becomes active the moment its time comes, with no
writer involved (`shown_status`).

Counts are of *parts* (each billed and tracked on its own, as get_message shows them), keyed
by the part statuses of SPEC_NOTES: {"DELIVRD": 2998, "UNDELIV": 2}. They are at most a
housekeeping period old (`counted_at` says when).
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Row, String, any_, bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.engine import Database
from tikosms.db.models import FINAL_STATUSES, SCHEDULED, Campaign, Part
from tikosms.db.types import UTCDateTime, naive_utc, utcnow

log = logging.getLogger("tikosms.messaging.lifecycle")

ACTIVE, COMPLETED, CANCELED, SHOWN_SCHEDULED = "active", "completed", "canceled", "scheduled"
# one round counts campaigns until this many of their parts are reached (a 100,000-part
# campaign is a round of its own), at most ROUND_CAMPAIGNS; rounds follow each other for up to
# `budget` seconds, so single-message campaigns (one per /v1/message) are counted as fast as
# they come
ROUND_PARTS = 200_000
ROUND_CAMPAIGNS = 5000
SQLITE_WRITE_CHUNK = 100  # campaigns written per transaction on SQLite
# PostgreSQL advisory lock taken by the worker that counts this round: the others skip it
ADVISORY_KEY = 0x7469_6B6F_0006  # "tiko" + the migration's number

# where each database's next round starts (campaign ids in order, wrapping around), so a few
# campaigns that never finish (a carrier that sends no receipts) cannot starve the others
_cursors: weakref.WeakKeyDictionary[Database, str] = weakref.WeakKeyDictionary()


def shown_status(status: str, scheduled_at: datetime | None, now: datetime) -> str:
    """The status the API and the console show: the stored one, or `scheduled` for an active
    campaign whose time has not come."""
    if status == ACTIVE and scheduled_at is not None and scheduled_at > now:
        return SHOWN_SCHEDULED
    return status


def shown_counts(counts: str | None, shown: str, total_parts: int) -> dict[str, int] | None:
    """Parts by status as stored by the roll-up; before its first count a scheduled campaign's
    parts are all SCHEDULED (nothing else can have happened to them), any other is None."""
    if counts:
        loaded: dict[str, int] = json.loads(counts)
        return loaded
    if shown == SHOWN_SCHEDULED:
        return {SCHEDULED: total_parts}
    return None


async def roll_up(db: Database, now: datetime | None = None, budget: float = 1.0) -> int:
    """Count the parts of unfinished campaigns, round after round for up to `budget` seconds,
    and store what changed; returns how many campaigns finished. Run by the worker's
    housekeeping (every 5 s)."""
    now = now or utcnow()
    deadline = time.monotonic() + budget
    finished = 0
    while True:
        done, more = await _round(db, now)
        finished += done
        if not more or time.monotonic() > deadline:
            return finished


async def _round(db: Database, now: datetime) -> tuple[int, bool]:
    """One round: (campaigns finished, whether more may wait: the round was full, or it began
    mid-list and the first campaigns are yet to be counted)."""
    async with db.connect(stream=True) as conn:  # a transaction: holds the advisory lock
        if db.is_postgres and not (await conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY})).scalar():
            return 0, False  # another worker is counting this round
        after = _cursors.get(db, "")
        picked, full = await _pick(conn, after, now)
        if full:
            _cursors[db] = picked[-1].id
        else:
            _cursors.pop(db, None)  # the end of the list: the next round starts at the first
        more = full or bool(after)  # a round begun mid-list goes on from the first
        if not picked:
            return 0, more
        by_campaign: dict[str, dict[str, int]] = defaultdict(dict)
        for campaign_id, status, n in (await conn.execute(
            select(Part.campaign_id, Part.status, func.count())
            .where(_among(conn, Part.campaign_id, [c.id for c in picked]))
            .group_by(Part.campaign_id, Part.status)
        )).all():
            by_campaign[campaign_id][status] = int(n)
        await conn.rollback()  # ends the read (and releases the advisory lock)

    changed: list[dict[str, object]] = []
    finished: list[str] = []
    for c in picked:
        counts = dict(sorted(by_campaign.get(c.id, {}).items()))
        done = (sum(counts.values()) >= c.total_parts
                and all(s in FINAL_STATUSES for s in counts))
        stored = json.dumps(counts)
        if done:
            finished.append(c.id)
        elif stored == c.counts:
            continue  # nothing new: no write
        changed.append({"b_id": c.id, "b_counts": stored, "b_done": now if done else None})
    if not changed:
        return 0, more
    # SQLite has one writer: it is held for a chunk at a time (100 campaigns: ~5 ms), so
    # sends are never held up behind a whole round
    step = len(changed) if db.is_postgres else SQLITE_WRITE_CHUNK
    for i in range(0, len(changed), step):
        chunk = changed[i:i + step]
        ids = {c["b_id"] for c in chunk}
        async with db.begin() as conn:
            await _store_counts(conn, chunk, [f for f in finished if f in ids], now)
    # one line per round at INFO: a campaign per /v1/message would otherwise be a line each
    for campaign_id in finished:
        log.debug("campaign %s finished: every part has its final state", campaign_id)
    if finished:
        log.info("%d campaign(s) finished (every part final), e.g. campaign %s",
                 len(finished), finished[0])
    return len(finished), more


# PostgreSQL: every changed campaign in one statement over arrays; a finished one moves
# active -> completed (a cancel committed since the count keeps its status)
_STORE_PG = (
    "UPDATE campaigns AS c SET counts = v.counts, counted_at = $1::timestamp, "
    "completed_at = CASE WHEN v.done THEN $1::timestamp END, "
    "status = CASE WHEN v.done AND c.status = 'active' THEN 'completed' ELSE c.status END, "
    "updated_at = CASE WHEN v.done AND c.status = 'active' THEN $1::timestamp "
    "ELSE c.updated_at END "
    "FROM unnest($2::varchar[], $3::text[], $4::bool[]) AS v(id, counts, done) "
    "WHERE c.id = v.id AND c.completed_at IS NULL"
)


async def _store_counts(conn: AsyncConnection, changed: list[dict[str, object]],
                        finished: list[str], now: datetime) -> None:
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(_STORE_PG, (
            naive_utc(now), [c["b_id"] for c in changed], [c["b_counts"] for c in changed],
            [c["b_done"] is not None for c in changed]))
        return
    # SQLite, in process: an UPDATE for the finished, an executemany for the counts
    unfinished = Campaign.completed_at.is_(None)
    if finished:
        await conn.execute(update(Campaign)
                           .where(Campaign.id.in_(finished), unfinished,
                                  Campaign.status == ACTIVE)
                           .values(status=COMPLETED, updated_at=now))
    await conn.execute(
        update(Campaign)
        .where(Campaign.id == bindparam("b_id"), unfinished)
        .values(counts=bindparam("b_counts"), counted_at=now,
                completed_at=bindparam("b_done", type_=UTCDateTime())),
        changed)


def _among(conn: AsyncConnection, column: Any, ids: list[str]) -> Any:
    """`column IN ids`: one array parameter on PostgreSQL (5,000 binds cost more to send and
    plan than the count itself), expanded binds on SQLite."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", ids, type_=ARRAY(String())))
    return column.in_(ids)


async def _pick(conn: AsyncConnection, after: str, now: datetime) -> tuple[list[Row], bool]:
    """The next unfinished campaigns after `after`, in id order, up to ROUND_PARTS parts, and
    whether a limit cut the round. A scheduled campaign whose time has not come is counted
    once (its parts wait), and again once it starts or is canceled."""
    rows = (await conn.execute(
        select(Campaign.id, Campaign.total_parts, Campaign.counts)
        .where(Campaign.completed_at.is_(None), Campaign.id > after,
               or_(Campaign.scheduled_at.is_(None), Campaign.scheduled_at <= now,
                   Campaign.counts.is_(None), Campaign.status != ACTIVE))
        .order_by(Campaign.id)
        .limit(ROUND_CAMPAIGNS)
    )).all()
    picked: list[Row] = []
    parts = 0
    for row in rows:
        if picked and parts + row.total_parts > ROUND_PARTS:
            return picked, True
        picked.append(row)
        parts += row.total_parts
    return picked, len(rows) == ROUND_CAMPAIGNS
