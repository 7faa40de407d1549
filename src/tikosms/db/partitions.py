"""Time partitions of the growing tables on PostgreSQL (SQLite keeps plain tables).

Which tables, and by what (migration 0012):

| table | partitioned by | primary key |
| --- | --- | --- |
| parts | RANGE (id) | (id) |
| callback_events | RANGE (id) | (id) |
| callback_attempts | RANGE (event_id): each attempt lives beside its event | (event_id, id) |
| pending_receipts | RANGE (id) | (id) |
| idempotency_keys | RANGE (created_at) | (account_id, key, created_at) |

**Time-ordered ids.** On PostgreSQL the ids of parts, callback events and pending receipts are
`(whole seconds since EPOCH << 22) | (nextval(sequence) & 0x3FFFFF)`, taken from the database
server's clock at insert (the column default, `TIME_ID_SQL`). So an id says when its row was
made, the bounds of a day's partition are computed ahead from the date (`id_bound`), and a
lookup by id (the recorder's updates, receipts, status reads) prunes to one partition, which a
partition by `created_at` with a primary key `(id, created_at)` could not: every id lookup
would probe every partition. Two rows collide only if more than 4,194,304 ids are taken within
one second. Ids stay below 2^53 (exact in JSON doubles) until 2094.

The rows from before 0012 (sequence ids, all far below `LEGACY_BOUND`, the first day after the
epoch) form the partition `<table>_initial`, attached without a copy; it also takes any row
inserted with a small explicit id. `idempotency_keys` (24 h of keys) is partitioned by its
`created_at`; its `_initial` partition ends at the first partition boundary after the
migration and goes once its keys expire.

Partitions are named `<table>_p<YYYYMMDD>` (`_p<YYYYMMDD>T<HHMM>` when a partition does not
start at midnight) and cover `partition_days` days each, aligned on EPOCH; `ensure` creates the
missing ones from the current interval to `partition_ahead_days` ahead (the worker's
housekeeping, `tikosms db partitions --ensure`, the migration), each as a plain table then
ATTACHed: ATTACH takes a SHARE UPDATE EXCLUSIVE lock on the parent (sends go on), where
`CREATE TABLE ... PARTITION OF` would take ACCESS EXCLUSIVE.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH_SECONDS = 1767225600  # EPOCH as a Unix time
SEQ_BITS = 22  # ids per second: 2^22 = 4,194,304
SEQ_MASK = (1 << SEQ_BITS) - 1
# ids below this (the first day after EPOCH) are the sequence ids of rows made before 0012
LEGACY_BOUND = 86_400 << SEQ_BITS

# the column default of the time-ordered ids (PostgreSQL); `{seq}`: the table's sequence
TIME_ID_SQL = ("(((floor(extract(epoch FROM clock_timestamp()))::bigint - "
               f"{EPOCH_SECONDS}) << {SEQ_BITS}) | (nextval('{{seq}}'::regclass) & {SEQ_MASK}))")


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    name: str
    key: str  # the partition key column
    by_id: bool  # True: RANGE over time-ordered ids; False: RANGE over a timestamp column
    time_column: str  # the row's own time (the newest row of an `_initial` partition)
    fillfactor: int = 100  # of each partition's pages (a partitioned table takes none itself)


# parts: each is updated three times (claimed, ENROUTE, its receipt). The claim changes no
# indexed column (it leaves `updated_at` alone), so it can be a HOT update, with no new index
# entries, if its page has room for the new version: a page is filled to PARTS_FILLFACTOR % by
# inserts, the rest kept for the claims (their old versions are pruned as the page fills)
PARTS_FILLFACTOR = 80
PARTS = PartitionedTable("parts", "id", True, "created_at", PARTS_FILLFACTOR)
CALLBACK_EVENTS = PartitionedTable("callback_events", "id", True, "created_at")
CALLBACK_ATTEMPTS = PartitionedTable("callback_attempts", "event_id", True, "attempted_at")
PENDING_RECEIPTS = PartitionedTable("pending_receipts", "id", True, "received_at")
IDEMPOTENCY_KEYS = PartitionedTable("idempotency_keys", "created_at", False, "created_at")
TABLES = (PARTS, CALLBACK_EVENTS, CALLBACK_ATTEMPTS, PENDING_RECEIPTS, IDEMPOTENCY_KEYS)
BY_NAME = {t.name: t for t in TABLES}


def id_bound(at: datetime) -> int:
    """The smallest time-ordered id of a row made at `at` (whole seconds)."""
    return (int((at - EPOCH).total_seconds() // 1) << SEQ_BITS)


def id_time(value: int) -> datetime:
    """When a row with this time-ordered id was made (to the second)."""
    return EPOCH + timedelta(seconds=value >> SEQ_BITS)


def interval_start(at: datetime, days: int) -> datetime:
    """The start of the partition interval holding `at` (intervals of `days` from EPOCH)."""
    n = int((at - EPOCH).total_seconds() // (days * 86_400))
    return EPOCH + timedelta(days=n * days)


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition as the catalogue has it; times are None for an open end (MINVALUE)."""

    table: str
    name: str
    start: datetime | None  # rows made from this time (None: MINVALUE, an `_initial` partition)
    end: datetime | None  # and before this (an `_initial` partition by id: the rows from
    # before 0012 are older than that: its newest row tells their age)
    rows: int  # the planner's estimate (pg_class.reltuples; -1: never analysed)
    bytes: int  # heap, TOAST and indexes
    detach_pending: bool = False

    def sql_bound(self) -> str:
        return _bound_sql(BY_NAME[self.table], self.start, self.end)


def plan_missing(table: PartitionedTable, existing: Sequence[Partition], now: datetime,
                 days: int, ahead_days: int) -> list[tuple[str, datetime, datetime]]:
    """(name, start, end) of the partitions to create so that every moment from the current
    interval to `ahead_days` after now is covered; existing partitions are left as they are
    (a range already covered, in part, gets only its gaps)."""
    first = interval_start(now, days)
    last = now + timedelta(days=ahead_days)
    wanted: list[tuple[datetime, datetime]] = []
    start = first
    while start <= last:
        wanted.append((start, start + timedelta(days=days)))
        start += timedelta(days=days)
    covered = [(p.start or datetime.min.replace(tzinfo=UTC), p.end) for p in existing
               if p.end is not None]
    out: list[tuple[str, datetime, datetime]] = []
    for lo, hi in wanted:
        for gap_lo, gap_hi in _gaps(lo, hi, covered):
            out.append((partition_name(table.name, gap_lo), gap_lo, gap_hi))
    return out


def _gaps(lo: datetime, hi: datetime, covered: Sequence[tuple[datetime, datetime]]
          ) -> list[tuple[datetime, datetime]]:
    gaps = [(lo, hi)]
    for c_lo, c_hi in covered:
        nxt = []
        for g_lo, g_hi in gaps:
            if c_hi <= g_lo or c_lo >= g_hi:
                nxt.append((g_lo, g_hi))
                continue
            if g_lo < c_lo:
                nxt.append((g_lo, c_lo))
            if c_hi < g_hi:
                nxt.append((c_hi, g_hi))
        gaps = nxt
    return gaps


def partition_name(table: str, start: datetime) -> str:
    stamp = f"{start:%Y%m%d}" if (start.hour, start.minute) == (0, 0) else f"{start:%Y%m%dT%H%M}"
    return f"{table}_p{stamp}"


def create_sql(table: PartitionedTable, name: str, start: datetime, end: datetime) -> list[str]:
    """A new empty table, then ATTACHed (a SHARE UPDATE EXCLUSIVE lock on the parent only)."""
    return [
        # IF NOT EXISTS: a round that created the table and failed before its ATTACH (the
        # upkeep runs in autocommit) is finished by the next one
        f'CREATE TABLE IF NOT EXISTS "{name}" '
        f'(LIKE "{table.name}" INCLUDING DEFAULTS INCLUDING STORAGE)'
        + (f" WITH (fillfactor = {table.fillfactor})" if table.fillfactor != 100 else ""),
        f'ALTER TABLE "{table.name}" ATTACH PARTITION "{name}" '
        f"{_bound_sql(table, start, end)}",
    ]


def _bound_sql(table: PartitionedTable, start: datetime | None, end: datetime | None) -> str:
    def value(at: datetime | None) -> str:
        if at is None:
            return "MINVALUE"
        if table.by_id:
            return str(id_bound(at))
        return f"'{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}'"

    return f"FOR VALUES FROM ({value(start)}) TO ({value(end)})"


# --- reading the catalogue -------------------------------------------------------------------

_LIST = text("""
SELECT parent.relname AS parent, child.relname AS name,
       pg_get_expr(child.relpartbound, child.oid) AS bound,
       child.reltuples::bigint AS rows, pg_total_relation_size(child.oid) AS bytes,
       i.inhdetachpending AS pending
FROM pg_inherits i
JOIN pg_class parent ON parent.oid = i.inhparent
JOIN pg_class child ON child.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = parent.relnamespace AND n.nspname = current_schema()
WHERE parent.relname = ANY(:tables) AND parent.relkind = 'p'
""")
_BOUND = re.compile(r"FOR VALUES FROM \((.+)\) TO \((.+)\)")


async def list_partitions(conn: AsyncConnection, tables: Sequence[str] | None = None
                          ) -> list[Partition]:
    """The partitions of the partitioned tables (all of them by default), oldest first."""
    names = list(tables or BY_NAME)
    rows = (await conn.execute(_LIST, {"tables": names})).all()
    out = []
    for r in rows:
        m = _BOUND.match(r.bound or "")
        if m is None:
            continue
        table = BY_NAME[r.parent]
        out.append(Partition(r.parent, r.name, _parse_bound(table, m.group(1)),
                             _parse_bound(table, m.group(2)), int(r.rows), int(r.bytes),
                             bool(r.pending)))
    start_of = datetime.min.replace(tzinfo=UTC)
    out.sort(key=lambda p: (names.index(p.table), p.start or start_of))
    return out


def _parse_bound(table: PartitionedTable, raw: str) -> datetime | None:
    raw = raw.strip()
    if raw == "MINVALUE":
        return None
    value = raw.strip("'")
    if table.by_id:
        return id_time(int(value))
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


async def is_partitioned(conn: AsyncConnection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return bool((await conn.execute(text(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'parts' AND n.nspname = current_schema()"))).scalar())


async def ensure(conn: AsyncConnection, now: datetime, days: int, ahead_days: int,
                 tables: Sequence[PartitionedTable] = TABLES) -> list[str]:
    """Create the partitions missing from the current interval to `ahead_days` ahead; the
    names created. Run it holding `MAINTENANCE_LOCK` (two processes creating the same
    partition: the second fails on the name)."""
    existing = await list_partitions(conn, [t.name for t in tables])
    created = []
    for table in tables:
        of_table = [p for p in existing if p.table == table.name]
        for name, start, end in plan_missing(table, of_table, now, days, ahead_days):
            for sql in create_sql(table, name, start, end):
                await conn.execute(text(sql))
            created.append(name)
    return created


def covered_until(parts: Sequence[Partition], table: str, now: datetime) -> datetime | None:
    """The end of the contiguous run of partitions of `table` from `now` on (None: `now`
    itself has no partition: inserts would fail)."""
    lowest = datetime.min.replace(tzinfo=UTC)
    spans = sorted((p.start or lowest, p.end) for p in parts
                   if p.table == table and p.end is not None)
    until: datetime | None = None
    for lo, hi in spans:
        if until is None:
            if lo <= now < hi:
                until = hi
        elif lo == until:
            until = hi
    return until


# an advisory lock (two int4 keys: apart from every single-bigint lock) held by the one process
# creating or dropping partitions at a time
MAINTENANCE_LOCK = (0x74696B6F, 0x70617274)  # "tiko", "part"


def pg_quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def as_utc(value: Any) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
