"""The outbox's SQL, on the driver, for PostgreSQL and SQLite.

The worker queues an event for every status change and the dispatcher's turn runs these for
every event it posts; through SQLAlchemy Core the
statement compilation, expanding IN lists and per-row type processing cost more CPU than the
database's own work (about 0.3 ms per event). Here lists go in as one parameter (an array on
PostgreSQL, a JSON list read with `json_each` on SQLite), PostgreSQL updates many rows with
`unnest`, and times are passed as the columns store them (naive UTC; text on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.driver_sql import list_param, run_with_list
from tikosms.db.partitions import SEQ_BITS, SEQ_MASK
from tikosms.db.types import naive_utc, sqlite_time, stored_utc


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event leased to this dispatcher, with what posting and recording it need."""

    id: int
    event_id: str
    part_id: int
    account_id: int
    url: str
    payload: str
    attempts: int  # made before this claim
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A pending event of a part, as the claim weighs it."""

    id: int
    part_id: int
    next_attempt_at: datetime
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One post's outcome for its event (`state` pending: to be retried at `next_attempt_at`)."""

    event_id: int  # callback_events.id
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    attempts: int  # made, this one included
    state: str  # pending | delivered | failed
    next_attempt_at: datetime


_DUE_SQL = (
    "SELECT id, part_id FROM callback_events "
    "WHERE state = 'pending' AND next_attempt_at <= {now} "
    "AND (lease_until IS NULL OR lease_until < {now}) "
    # not by id too: the index alone gives this order, with no sort of the backlog
    "ORDER BY next_attempt_at LIMIT {limit}"
)
_DUE = {
    "postgresql": _DUE_SQL.format(now="$1", limit="$2") + " FOR UPDATE SKIP LOCKED",
    "sqlite": _DUE_SQL.format(now=":now", limit=":limit"),
}
# "Pending" through an expression, so that no index on `state` applies and the planner takes
# `(part_id, id)`. Without statistics (a freshly filled table) both databases may otherwise
# prefer `(state, next_attempt_at)`: every pending event.
_PENDING_OF_PARTS_SQL = (
    "SELECT id, part_id, next_attempt_at, lease_until FROM callback_events "
    "WHERE COALESCE(state, '') = 'pending' AND part_id {parts} ORDER BY part_id, id"
)
# PostgreSQL (partitioned by time-ordered id, db/partitions.py): an event is made after its
# part, so its id is at least the part's id less its sequence bits; an hour less still, for a
# server clock stepped back. The bound lets the query skip the partitions older than the parts
# (an InitPlan: pruned at execution); inbound events (part_id < 0) bound nothing.
_PG_EVENTS_OF_PARTS = (f"= ANY($1::bigint[]) AND id >= (SELECT (min(p) & ~{SEQ_MASK}) - "
                       f"{3600 << SEQ_BITS} FROM unnest($1::bigint[]) p)")
_PENDING_OF_PARTS = {
    "postgresql": _PENDING_OF_PARTS_SQL.format(parts=_PG_EVENTS_OF_PARTS),
    "sqlite": _PENDING_OF_PARTS_SQL.format(parts="IN (SELECT value FROM json_each(?))"),
}
_CLAIMED_COLUMNS = "id, event_id, part_id, account_id, url, payload, attempts, created_at"
_LEASE = {
    "postgresql": "UPDATE callback_events SET lease_until = $1, next_attempt_at = $1 "
                  "WHERE id = ANY($2::bigint[]) AND state = 'pending' "
                  f"RETURNING {_CLAIMED_COLUMNS}",
    "sqlite": "UPDATE callback_events SET lease_until = ?, next_attempt_at = ? "
              "WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending' "
              f"RETURNING {_CLAIMED_COLUMNS}",
}
# next_attempt_at of each event; `lease_until` cleared too when the event was ours (given back)
_SET_DUE = {
    "postgresql": "UPDATE callback_events SET next_attempt_at = v.due{clear} "
                  "FROM unnest($1::bigint[], $2::timestamp[]) AS v(id, due) "
                  "WHERE callback_events.id = v.id",
    "sqlite": "UPDATE callback_events SET next_attempt_at = ?{clear} WHERE id = ?",
}
_PG_RECORD = (
    "UPDATE callback_events SET attempts = v.made, lease_until = NULL, "
    "last_status_code = v.code, last_error = v.err, state = v.st, finished_at = v.fin, "
    "next_attempt_at = v.nxt "
    "FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::varchar[], "
    "$6::timestamp[], $7::timestamp[]) AS v(id, made, code, err, st, fin, nxt) "
    "WHERE callback_events.id = v.id"
)
_SQLITE_RECORD = (
    "UPDATE callback_events SET attempts = ?, lease_until = NULL, last_status_code = ?, "
    "last_error = ?, state = ?, finished_at = ?, next_attempt_at = ? WHERE id = ?"
)
_PG_ATTEMPTS = (
    "INSERT INTO callback_attempts (event_id, attempted_at, status_code, error, duration_ms) "
    "SELECT * FROM unnest($1::bigint[], $2::timestamp[], $3::int[], $4::text[], $5::int[])"
)
_SQLITE_ATTEMPTS = (
    "INSERT INTO callback_attempts (event_id, attempted_at, status_code, error, duration_ms) "
    "VALUES (?, ?, ?, ?, ?)"
)
# A leased event (the next of a chain this dispatcher holds) keeps its lease's end.
_RELEASE_SQL = (
    "UPDATE callback_events SET next_attempt_at = {now} "
    "WHERE COALESCE(state, '') = 'pending' AND part_id {parts} "
    "AND (lease_until IS NULL OR lease_until < {now})"
)
_RELEASE = {
    "postgresql": _RELEASE_SQL.format(now="$1", parts=_PG_EVENTS_OF_PARTS.replace(
        "$1", "$2")),
    "sqlite": _RELEASE_SQL.format(now=":now", parts="IN (SELECT value FROM json_each(:parts))"),
}
_PG_INSERT_EVENTS = (
    "INSERT INTO callback_events (event_id, part_id, account_id, url, payload, state, attempts, "
    "next_attempt_at, created_at) "
    "SELECT v.*, 'pending', 0, $6::timestamp, $6::timestamp "
    "FROM unnest($1::varchar[], $2::bigint[], $3::int[], $4::text[], $5::text[]) "
    "AS v(event_id, part_id, account_id, url, payload)"
)
_SQLITE_INSERT_EVENTS = (
    "INSERT INTO callback_events (event_id, part_id, account_id, url, payload, state, attempts, "
    "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
)
_CAMPAIGNS = {
    "postgresql": "SELECT id, sender, callback_url FROM campaigns WHERE id = ANY($1::varchar[])",
    "sqlite": "SELECT id, sender, callback_url FROM campaigns "
              "WHERE id IN (SELECT value FROM json_each(?))",
}
_SECRETS = {
    "postgresql": "SELECT id, signing_secret FROM accounts WHERE id = ANY($1::int[])",
    "sqlite": "SELECT id, signing_secret FROM accounts "
              "WHERE id IN (SELECT value FROM json_each(?))",
}


async def insert_events(conn: AsyncConnection,
                        rows: Sequence[tuple[str, int, int, str, str]], at: datetime) -> None:
    """New pending events, due at `at`: (event_id, part_id, account_id, url, payload) each,
    written in this order (ids follow it: a part's events are posted in id order)."""
    if not rows:
        return
    if _is_pg(conn):
        await conn.exec_driver_sql(_PG_INSERT_EVENTS, (
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            [r[3] for r in rows], [r[4] for r in rows], naive_utc(at)))
    else:
        when = _text(at)
        await conn.exec_driver_sql(_SQLITE_INSERT_EVENTS,  # type: ignore[arg-type]
                                   [(*r, when, when) for r in rows])


async def campaign_senders(conn: AsyncConnection, campaign_ids: Sequence[str]
                           ) -> dict[str, tuple[str, str | None]]:
    """(sender, callback_url) by campaign id."""
    return {i: (sender, url) for i, sender, url in
            await run_with_list(conn, _CAMPAIGNS, campaign_ids)}


async def due_events(conn: AsyncConnection, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(id, part_id) of up to `limit` due, unleased pending events, earliest first; locked on
    PostgreSQL (`SKIP LOCKED`: those another dispatcher is claiming are left to it)."""
    result: CursorResult[Any]
    if _is_pg(conn):
        result = await conn.exec_driver_sql(_DUE["postgresql"], (naive_utc(now), limit))
    else:
        result = await conn.exec_driver_sql(_DUE["sqlite"],
                                            {"now": _text(now), "limit": limit})
    rows: Sequence[Any] = result.all()
    return [(row[0], row[1]) for row in rows]


async def pending_of_parts(conn: AsyncConnection, part_ids: Sequence[int]
                           ) -> list[PendingEvent]:
    """Every pending event of these parts, by part and id (index `(part_id, id)`)."""
    result = await run_with_list(conn, _PENDING_OF_PARTS, part_ids)
    return [PendingEvent(i, p, stored_utc(due), None if lease is None else stored_utc(lease))
            for i, p, due, lease in result]


async def lease(conn: AsyncConnection, ids: Sequence[int], until: datetime
                ) -> list[ClaimedEvent]:
    """Lease these events until `until` (their next_attempt_at too, so that events in flight
    leave the due range); the ones still pending, with what posting them needs."""
    result: CursorResult[Any]
    if _is_pg(conn):
        result = await conn.exec_driver_sql(_LEASE["postgresql"], (naive_utc(until), list(ids)))
    else:
        when = _text(until)
        result = await conn.exec_driver_sql(_LEASE["sqlite"], (when, when, list_param(conn, ids)))
    rows: Sequence[Any] = result.all()
    return [ClaimedEvent(i, eid, part, account, url, payload, attempts, stored_utc(created))
            for i, eid, part, account, url, payload, attempts, created in rows]


async def set_due(conn: AsyncConnection, dues: Sequence[tuple[int, datetime]], *,
                  give_back: bool = False) -> None:
    """Set each event's next_attempt_at; `give_back` ends this dispatcher's lease too."""
    if not dues:
        return
    clear = ", lease_until = NULL" if give_back else ""
    if _is_pg(conn):
        await conn.exec_driver_sql(_SET_DUE["postgresql"].format(clear=clear), (
            [i for i, _ in dues], [naive_utc(due) for _, due in dues]))
    else:
        await conn.exec_driver_sql(_SET_DUE["sqlite"].format(clear=clear),  # type: ignore[arg-type]
                                   [(_text(due), i) for i, due in dues])


async def record_attempts(conn: AsyncConnection, records: Sequence[AttemptRecord]) -> None:
    """Each post's attempt row, and its event's new state, lease ended."""
    if not records:
        return
    if _is_pg(conn):
        ids = [r.event_id for r in records]
        codes = [r.status_code for r in records]
        errors = [r.error for r in records]
        await conn.exec_driver_sql(_PG_RECORD, (
            ids, [r.attempts for r in records], codes, errors, [r.state for r in records],
            [None if r.state == "pending" else naive_utc(r.attempted_at) for r in records],
            [naive_utc(r.next_attempt_at) for r in records],
        ))
        await conn.exec_driver_sql(_PG_ATTEMPTS, (
            ids, [naive_utc(r.attempted_at) for r in records], codes, errors,
            [r.duration_ms for r in records],
        ))
        return
    rows = []
    attempts = []
    for r in records:
        at = _text(r.attempted_at)
        rows.append((r.attempts, r.status_code, r.error, r.state,
                     None if r.state == "pending" else at, _text(r.next_attempt_at), r.event_id))
        attempts.append((r.event_id, at, r.status_code, r.error, r.duration_ms))
    await conn.exec_driver_sql(_SQLITE_RECORD, rows)  # type: ignore[arg-type]
    await conn.exec_driver_sql(_SQLITE_ATTEMPTS, attempts)  # type: ignore[arg-type]


async def release_parts(conn: AsyncConnection, part_ids: Sequence[int], now: datetime) -> None:
    """Make the unleased pending events of these parts due now: the event before them has
    just finished. Only the first of each part will be posted; a claim holds back the others
    again. None of them waits for a retry (only a part's first pending event is attempted)."""
    if _is_pg(conn):
        await conn.exec_driver_sql(_RELEASE["postgresql"], (naive_utc(now), list(part_ids)))
    else:
        await conn.exec_driver_sql(_RELEASE["sqlite"],
                                   {"now": _text(now), "parts": list_param(conn, part_ids)})


async def signing_secrets(conn: AsyncConnection, account_ids: Sequence[int]) -> dict[int, str]:
    return {i: secret for i, secret in await run_with_list(conn, _SECRETS, account_ids)}


def _is_pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def _text(value: datetime) -> str:
    return sqlite_time(naive_utc(value))



