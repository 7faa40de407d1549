"""Claiming due parts from the parts table, the durable queue.

A claim sets a lease (`lease_until`, `lease_owner`) on due, waiting parts; a worker that dies
leaves its leases to expire, and its parts are claimed again. On PostgreSQL the candidate rows are
picked `FOR UPDATE SKIP LOCKED`, so concurrent workers never claim the same part; on SQLite the
claim runs under `BEGIN IMMEDIATE`, one writer at a time.

Claims are keyed by account: each statement claims one account's parts, so the queue never
needs a lock across accounts (a database sharded by account, such as Citus, routes each to one
shard). Fairness: single messages (priority 0, one-time codes) are claimed first; campaign parts
are then shared out across the accounts that have due parts, so one account's 100,000-part
campaign does not hold another account's parts back.

Bind slots: a worker claims only the parts it can submit (`RouteFilter`: the parts whose route
goes to a carrier it holds a slot of, see `delivery.slots`); a separate condition of the
candidates, absent when the worker can submit everything (the usual `*`-only routes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.driver_sql import list_param
from tikosms.db.models import ATTEMPTS_CAP, WAITING_STATUSES, Part
from tikosms.db.types import naive_utc, sqlite_time


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
    callback_url: str | None  # the part's own; its campaign's may apply (`campaign_callback`)
    sender: str = ""  # its campaign's (read in the same statement as the claim)
    sender_type: str = ""
    campaign_callback: bool = False  # its campaign has a callback URL


@dataclass(frozen=True, slots=True)
class RouteFilter:
    """The parts a worker may claim, by their mccmnc: the longest prefix of `cases` that the
    mccmnc starts with decides (True: claim it); none of them: `default`."""

    cases: tuple[tuple[str, bool], ...] = ()  # (MCC or MCC+MNC prefix, claim), longest first
    default: bool = True

    @property
    def everything(self) -> bool:
        return self.default and all(claim for _p, claim in self.cases)

    @property
    def nothing(self) -> bool:
        return not self.default and not any(claim for _p, claim in self.cases)

    def claims(self, mccmnc: str) -> bool:
        """The same decision as the SQL, in Python (tests, logs)."""
        for prefix, claim in self.cases:
            if mccmnc.startswith(prefix):
                return claim
        return self.default

    def sql(self) -> str:
        """The condition on `mccmnc` ("" when everything may be claimed). The prefixes are
        digits (routes' matches are checked on write), inlined so the statement is cached."""
        return "" if self.everything else _route_sql(self.cases, self.default)


@functools.lru_cache(maxsize=64)
def _route_sql(cases: tuple[tuple[str, bool], ...], default: bool) -> str:
    for prefix, _claim in cases:
        if not _DIGITS.fullmatch(prefix):
            raise ValueError(f"route prefix {prefix!r} is not digits")
    whens = " ".join(f"WHEN mccmnc LIKE '{p}%' THEN {int(c)}" for p, c in cases)
    return f" AND CASE {whens} ELSE {int(default)} END = 1"


EVERYTHING = RouteFilter()
_DIGITS = re.compile(r"\d{1,6}")


@dataclass(slots=True)
class Claim:
    parts: list[ClaimedPart]
    # the accounts that gave fewer parts than asked: nothing more of theirs is due now
    drained_singles: set[int]
    drained_campaigns: set[int]


async def claim_due_parts(
    conn: AsyncConnection, owner: str, limit: int, now: datetime, lease_seconds: float,
    routes: RouteFilter = EVERYTHING,
) -> list[ClaimedPart]:
    """Claim up to `limit` due parts of any account (the accounts looked up first).
    `routes`: only parts this worker can submit (its carriers' slots)."""
    if routes.nothing:
        return []
    singles, campaigns = await accounts_with_due_parts(conn, now)
    claimed = await claim(conn, owner, limit, now, lease_seconds, singles, campaigns, routes)
    return claimed.parts


async def claim(
    conn: AsyncConnection, owner: str, limit: int, now: datetime, lease_seconds: float,
    singles: Sequence[int], campaigns: Sequence[int], routes: RouteFilter = EVERYTHING,
) -> Claim:
    """Claim up to `limit` due parts by account: first the single sends (priority 0) of the
    accounts in `singles`, then the campaign parts of those in `campaigns` (the accounts with
    due parts of each kind: `accounts_with_due_parts`, or the wake-up signals), in the order
    given (the caller rotates it, so that no account always comes first).

    Keyed by account: each account's candidates are its own index range of the queue, locked
    there (`SKIP LOCKED`), never a scan or a lock across accounts: the shape a database
    sharded by account needs. All the accounts of a round go in one statement (one round
    trip; on PostgreSQL a LATERAL subquery per account), each with its share of the room;
    what one account leaves goes to the others in a further pass. `routes` (bind slots): only
    the parts this worker can submit."""
    lease_until = now + timedelta(seconds=lease_seconds)
    result = Claim([], set(), set())
    room = limit
    for priority, accounts, drained in ((0, singles, result.drained_singles),
                                        (1, campaigns, result.drained_campaigns)):
        active = list(dict.fromkeys(accounts))
        while room > 0 and active:
            turn = active[:room]  # more accounts than room: one each, the rest next round
            share, extra = divmod(room, len(turn))
            asked = {a: share + (1 if n < extra else 0) for n, a in enumerate(turn)}
            got = await _claim_many(conn, asked, owner, now, lease_until, priority, routes)
            result.parts += got
            room -= len(got)
            counts: dict[int, int] = {}
            for part in got:
                counts[part.account_id] = counts.get(part.account_id, 0) + 1
            drained.update(a for a, n in asked.items() if counts.get(a, 0) < n)
            if len(turn) < len(active):
                break  # the room is spent on this round's accounts
            active = [a for a in active if a not in drained]
    result.parts.sort(key=lambda p: (p.due_at, p.id))
    return result


async def accounts_with_due_parts(conn: AsyncConnection,
                                  now: datetime) -> tuple[list[int], list[int]]:
    """The accounts with due single sends, and those with due campaign parts: an index skip
    scan over the accounts with waiting parts (one index probe each), then a probe of each
    for a part due now, so that parts waiting for later (retries, scheduled campaigns) are
    never read one by one."""
    params: tuple[Any, ...]
    if conn.dialect.name == "postgresql":
        sql, params = _DUE_ACCOUNTS_PG, (naive_utc(now),)
    else:
        sql, params = _DUE_ACCOUNTS_SQLITE, (sqlite_time(naive_utc(now)),)
    singles: list[int] = []
    campaigns: list[int] = []
    for row in await conn.exec_driver_sql(sql, params):
        priority, account_id = tuple(row)
        (singles if priority == 0 else campaigns).append(int(account_id))
    return singles, campaigns


_WAITING = "status IN ('SCHEDULED', 'QUEUED')"
# the next account (by id) with a waiting part of a priority: one probe of the queue's index
_NEXT_ACCOUNT = (
    f"(SELECT account_id FROM parts WHERE priority = {{priority}} AND {_WAITING} "
    "AND account_id > {after} ORDER BY account_id LIMIT 1)"
)
_HAS_DUE = (
    f"EXISTS (SELECT 1 FROM parts d WHERE d.priority = {{priority}} AND d.{_WAITING} "
    "AND d.account_id = {table}.a AND d.due_at <= {now} "
    "AND (d.lease_until IS NULL OR d.lease_until < {now}))"
)
_DUE_ACCOUNTS = (
    "WITH RECURSIVE s(a) AS (SELECT " + _NEXT_ACCOUNT.format(priority=0, after=-1)
    + " UNION ALL SELECT " + _NEXT_ACCOUNT.format(priority=0, after="s.a")
    + " FROM s WHERE s.a IS NOT NULL), "
    "c(a) AS (SELECT " + _NEXT_ACCOUNT.format(priority=1, after=-1)
    + " UNION ALL SELECT " + _NEXT_ACCOUNT.format(priority=1, after="c.a")
    + " FROM c WHERE c.a IS NOT NULL) "
    "SELECT 0, a FROM s WHERE a IS NOT NULL AND "
    + _HAS_DUE.format(priority=0, table="s", now="{now}")
    + " UNION ALL SELECT 1, a FROM c WHERE a IS NOT NULL AND "
    + _HAS_DUE.format(priority=1, table="c", now="{now}")
)
_DUE_ACCOUNTS_PG = _DUE_ACCOUNTS.format(now="$1::timestamp")
_DUE_ACCOUNTS_SQLITE = _DUE_ACCOUNTS.format(now="?1")


# One statement per claim, on the driver (at a claim per few single sends, SQLAlchemy's
# statement building cost more than the database's work): the due candidates (SKIP LOCKED on
# PostgreSQL), their lease, and what the submit needs of their campaign (sender, whether it has
# a callback URL), read in the same statement instead of a query of their own.
# attempts: LEAST(attempts + 1, cap), spelled so that SQLite runs it too: a part claimed every
# second for years never overflows the column (and every claim with it).
_RETURNING = (
    "parts.id, parts.campaign_id, parts.account_id, parts.\"to\", parts.text, "
    "parts.data_coding, parts.part_no, parts.total_parts, parts.concat_ref, parts.mccmnc, "
    "parts.attempts, parts.due_at, parts.callback_url"
)
_SET = (
    "lease_until = {p1}, lease_owner = {p2}, "
    f"attempts = CASE WHEN parts.attempts < {ATTEMPTS_CAP} THEN parts.attempts + 1 "
    "ELSE parts.attempts END"
)
# one account's candidates: its index range of the queue, oldest due first
_CANDIDATES = (
    "SELECT id FROM parts WHERE priority = {priority} AND status IN ('SCHEDULED', 'QUEUED') "
    "AND account_id = {account} AND due_at <= {now} "
    "AND (lease_until IS NULL OR lease_until < {now}){routes} ORDER BY due_at, id LIMIT {limit}"
)
# PostgreSQL: the accounts and their shares as arrays, a LATERAL subquery per account. The
# campaign of each claimed part is looked up by its key (LIMIT 1 keeps the subquery from being
# flattened into a join): as an UPDATE ... FROM campaigns, the planner hashed every campaign
# (a single send is one) on each claim while the table was small enough, a seq scan that grew
# with the day's sends (auto_explain: 1.7 ms of a 392-part claim at 5,761 campaigns). A part
# whose campaign is gone is still claimed, with an empty sender: the carrier's refusal says so,
# where a join would leave it unclaimed for ever without a word.
_PG_CLAIM = (
    "WITH u AS (UPDATE parts SET " + _SET.format(p1="$1", p2="$2") + " "
    "WHERE parts.id IN (SELECT q.id FROM "
    "unnest($4::int[], $5::int[]) AS a(account_id, n) CROSS JOIN LATERAL ("
    + _CANDIDATES.format(priority="{priority}", account="a.account_id", now="$3",
                         limit="a.n", routes="{routes}")
    + f" FOR UPDATE SKIP LOCKED) q) RETURNING {_RETURNING}) "
    "SELECT u.*, COALESCE(c.sender, ''), COALESCE(c.sender_type, ''), COALESCE(c.cb, false) "
    "FROM u LEFT JOIN LATERAL (SELECT sender, sender_type, COALESCE(callback_url, '') <> '' "
    "AS cb FROM campaigns WHERE campaigns.id = u.campaign_id LIMIT 1) c ON true"
)
# SQLite: RETURNING cannot name the tables of UPDATE ... FROM, and a subquery there scans its
# table (3.40): the campaigns are read by a second statement. No LATERAL: a UNION ALL of the
# accounts' ranges (one writer at a time: nothing to skip)
_SQLITE_CLAIM = (
    "UPDATE parts SET " + _SET.format(p1="?1", p2="?2") + " WHERE id IN ({ranges}) "
    f"RETURNING {_RETURNING}"
)
_SQLITE_CAMPAIGNS = (
    "SELECT id, sender, sender_type, COALESCE(callback_url, '') <> '' FROM campaigns "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
SQLITE_ACCOUNTS_PER_CLAIM = 100  # accounts per statement (two parameters each)


@functools.lru_cache(maxsize=64)
def _pg_claim_sql(priority: int, routes: str = "") -> str:
    """`routes`: the RouteFilter's condition ("" for the usual `*` routes; a few distinct ones
    per process: the slots it holds change rarely)."""
    return _PG_CLAIM.format(priority=priority, routes=routes)


@functools.lru_cache(maxsize=256)
def _sqlite_claim_sql(priority: int, accounts: int, routes: str = "") -> str:
    ranges = " UNION ALL ".join(
        "SELECT id FROM (" + _CANDIDATES.format(priority=priority, account=f"?{4 + 2 * n}",
                                                now="?3", limit=f"?{5 + 2 * n}",
                                                routes=routes) + ")"
        for n in range(accounts))
    return _SQLITE_CLAIM.format(ranges=ranges)


async def _claim_many(
    conn: AsyncConnection, asked: dict[int, int], owner: str, now: datetime,
    lease_until: datetime, priority: int, routes: RouteFilter = EVERYTHING,
) -> list[ClaimedPart]:
    """One statement: UPDATE ... WHERE id IN (each account's due candidates, up to its
    share) RETURNING: single sends (priority 0) or campaign parts (1)."""
    now_n, until_n = naive_utc(now), naive_utc(lease_until)
    if conn.dialect.name == "postgresql":
        result = await conn.exec_driver_sql(_pg_claim_sql(priority, routes.sql()), (
            until_n, owner, now_n, list(asked), list(asked.values())))
        return [ClaimedPart(*tuple(row)) for row in result]
    rows: list[tuple[Any, ...]] = []
    items = list(asked.items())
    for start in range(0, len(items), SQLITE_ACCOUNTS_PER_CLAIM):
        chunk = items[start:start + SQLITE_ACCOUNTS_PER_CLAIM]
        params: tuple[Any, ...] = (sqlite_time(until_n), owner, sqlite_time(now_n))
        for account_id, n in chunk:
            params += (account_id, n)
        result = await conn.exec_driver_sql(
            _sqlite_claim_sql(priority, len(chunk), routes.sql()), params)
        rows += [tuple(row) for row in result]
    if not rows:
        return []
    found = await conn.exec_driver_sql(
        _SQLITE_CAMPAIGNS, (list_param(conn, list({r[1] for r in rows})),))
    campaigns: dict[str, tuple[Any, ...]] = {
        c[0]: (c[1], c[2], bool(c[3])) for c in (tuple(row) for row in found)}
    # SQLite gives the time back as the text it stores
    # a part whose campaign is gone is claimed with an empty sender, as on PostgreSQL
    rows = [(*r[:11], datetime.fromisoformat(r[11]), r[12], *campaigns.get(r[1], ("", "", False)))
            for r in rows]
    return [ClaimedPart(*row) for row in rows]


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
