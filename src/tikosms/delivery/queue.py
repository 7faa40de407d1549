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

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
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


@lru_cache(maxsize=64)
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
    """Claim up to `limit` due parts, account by account: first the single sends (priority 0)
    of the accounts in `singles`, then the campaign parts of those in `campaigns` (the
    accounts with due parts of each kind: `accounts_with_due_parts`, or the wake-up signals).
    Every statement touches one account's rows (no lock across accounts: the shape a database
    sharded by account needs). The room is shared out between the accounts, and what one
    account leaves goes to the others in a further pass. `routes` (bind slots): only the parts
    of the carriers this worker holds; "drained" then means nothing more due for this worker."""
    lease_until = now + timedelta(seconds=lease_seconds)
    result = Claim([], set(), set())
    room = limit
    for priority, accounts, drained in ((0, singles, result.drained_singles),
                                        (1, campaigns, result.drained_campaigns)):
        active = list(accounts)
        while room > 0 and active:
            share = max(1, math.ceil(room / len(active)))
            for account_id in active:
                if room <= 0:
                    break
                asked = min(share, room)
                got = await _claim(conn, asked, owner, now, lease_until, account_id, priority,
                                   routes)
                result.parts += got
                room -= len(got)
                if len(got) < asked:
                    drained.add(account_id)
            active = [a for a in active if a not in drained]
    return result


async def accounts_with_due_parts(conn: AsyncConnection,
                                  now: datetime) -> tuple[list[int], list[int]]:
    """The accounts with due single sends, and those with due campaign parts: an index skip
    scan (a few index probes per account, however many parts are queued)."""
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


# the next account (by id) with a due part of a priority, from the queue's partial index
_NEXT_ACCOUNT = (
    "(SELECT account_id FROM parts WHERE priority = {priority} "
    "AND status IN ('SCHEDULED', 'QUEUED') AND account_id > {after} AND due_at <= {now} "
    "AND (lease_until IS NULL OR lease_until < {now}) ORDER BY account_id LIMIT 1)"
)
_DUE_ACCOUNTS = (
    "WITH RECURSIVE s(a) AS (SELECT " + _NEXT_ACCOUNT.format(priority=0, after=-1, now="{now}")
    + " UNION ALL SELECT " + _NEXT_ACCOUNT.format(priority=0, after="s.a", now="{now}")
    + " FROM s WHERE s.a IS NOT NULL), "
    "c(a) AS (SELECT " + _NEXT_ACCOUNT.format(priority=1, after=-1, now="{now}")
    + " UNION ALL SELECT " + _NEXT_ACCOUNT.format(priority=1, after="c.a", now="{now}")
    + " FROM c WHERE c.a IS NOT NULL) "
    "SELECT 0, a FROM s WHERE a IS NOT NULL UNION ALL SELECT 1, a FROM c WHERE a IS NOT NULL"
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
    "lease_until = {p1}, lease_owner = {p2}, updated_at = {p3}, "
    f"attempts = CASE WHEN parts.attempts < {ATTEMPTS_CAP} THEN parts.attempts + 1 "
    "ELSE parts.attempts END"
)
_CANDIDATES = (
    "SELECT id FROM parts WHERE priority = {priority} AND status IN ('SCHEDULED', 'QUEUED') "
    "AND due_at <= {p3} AND (lease_until IS NULL OR lease_until < {p3}){account}{routes} "
    "ORDER BY due_at, id LIMIT {p4}"
)
_PG_CLAIM = (
    "UPDATE parts SET " + _SET.format(p1="$1", p2="$2", p3="$3") + " FROM campaigns c "
    "WHERE c.id = parts.campaign_id AND parts.id IN ("
    + _CANDIDATES.format(priority="{priority}", p3="$3", p4="$4", account="{account}",
                         routes="{routes}")
    + " FOR UPDATE SKIP LOCKED) "
    f"RETURNING {_RETURNING}, c.sender, c.sender_type, COALESCE(c.callback_url, '') <> ''"
)
# SQLite: RETURNING cannot name the tables of UPDATE ... FROM, and a subquery there scans its
# table (3.40): the campaigns are read by a second statement
_SQLITE_CLAIM = (
    "UPDATE parts SET " + _SET.format(p1="?1", p2="?2", p3="?3") + " WHERE id IN ("
    + _CANDIDATES.format(priority="{priority}", p3="?3", p4="?4", account="{account}",
                         routes="{routes}")
    + f") RETURNING {_RETURNING}"
)
_SQLITE_CAMPAIGNS = (
    "SELECT id, sender, sender_type, COALESCE(callback_url, '') <> '' FROM campaigns "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
@lru_cache(maxsize=64)
def _claim_sql(dialect: str, priority: int, routes: str = "") -> str:
    """The claim statement; `routes`: the RouteFilter's condition ("" for the usual `*`
    routes; a few distinct ones per process: the slots it holds change rarely)."""
    sql, p5 = (_PG_CLAIM, "$5") if dialect == "postgresql" else (_SQLITE_CLAIM, "?5")
    return sql.format(priority=priority, account=f" AND account_id = {p5}", routes=routes)


async def _claim(
    conn: AsyncConnection, limit: int, owner: str, now: datetime, lease_until: datetime,
    account_id: int, priority: int, routes: RouteFilter = EVERYTHING,
) -> list[ClaimedPart]:
    """One statement: UPDATE ... WHERE id IN (the due candidates) RETURNING: one account's
    single sends (priority 0) or campaign parts (1)."""
    dialect = conn.dialect.name
    now_n, until_n = naive_utc(now), naive_utc(lease_until)
    if dialect == "postgresql":
        params: tuple[Any, ...] = (until_n, owner, now_n, limit)
    else:
        params = (sqlite_time(until_n), owner, sqlite_time(now_n), limit)
    params += (account_id,)
    result = await conn.exec_driver_sql(_claim_sql(dialect, priority, routes.sql()), params)
    rows = [tuple(row) for row in result]
    if dialect != "postgresql" and rows:
        found = await conn.exec_driver_sql(
            _SQLITE_CAMPAIGNS, (list_param(conn, list({r[1] for r in rows})),))
        campaigns: dict[str, tuple[Any, ...]] = {
            c[0]: (c[1], c[2], bool(c[3])) for c in (tuple(row) for row in found)}
        # SQLite gives the time back as the text it stores
        rows = [(*r[:11], datetime.fromisoformat(r[11]), r[12], *campaigns[r[1]])
                for r in rows]
    return sorted((ClaimedPart(*row) for row in rows), key=lambda p: (p.due_at, p.id))


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
