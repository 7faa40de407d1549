"""Retention by dropping whole partitions (PostgreSQL, after migration 0012).

A partition goes when all of its rows are older than their table's cutoff and nothing in it is
still in flight:

- parts: the partition ends before the history cutoff. Kept while a part in it is waiting
  (SCHEDULED, QUEUED), while a campaign with parts in it is not finished (`completed_at`
  unset: the lifecycle roll-up sets it only once every part is final, so an ENROUTE part keeps
  its campaign, and so its partition), or while a callback of one of its parts is pending.
- callback_events, with the callback_attempts partition of the same range: the partition ends
  before the history cutoff. Kept while an event in it is pending.
- pending_receipts: it ends before now - pending_receipt_expiry_seconds.
- idempotency_keys: it ends before now - idempotency_key_expiry_seconds.

An `_initial` partition (the rows from before 0012) has no time bound: it is old enough when
its newest row is (by `updated_at` for parts, the row of the highest id otherwise), and an
empty one stays (it holds rows inserted with small explicit ids).

How: `DETACH PARTITION ... CONCURRENTLY` (the sends and the worker go on: no ACCESS EXCLUSIVE
lock on the parent), the checks again on the detached table, the export when asked (written
and fsynced), then `DROP TABLE`. If the export fails or the checks now fail, the partition is
attached again and nothing is lost. A detach left half done by an interrupted run is finished
(`FINALIZE`) by the next one. One process at a time (an advisory lock); the ledger and the
campaigns are never partitioned or dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.config import Settings
from tikosms.db import partitions as pt
from tikosms.db.engine import Database
from tikosms.db.export import CsvExport, TableRows
from tikosms.db.models import CallbackAttempt, CallbackEvent, IdempotencyKey, Part, PendingReceipt

log = logging.getLogger("tikosms.db")

MODELS: dict[str, Any] = {"parts": Part, "callback_events": CallbackEvent,
                          "callback_attempts": CallbackAttempt,
                          "pending_receipts": PendingReceipt, "idempotency_keys": IdempotencyKey}
EXPORT_CHUNK = 5000  # rows per export write


class PartitionBusy(Exception):
    """Another process holds the partition upkeep lock."""


@dataclass(slots=True)
class PartitionOutcome:
    table: str
    name: str
    start: datetime | None
    end: datetime | None
    dropped: bool
    reason: str | None = None  # why it was kept
    rows: int = 0  # rows exported (or the planner's estimate when not exported)
    bytes: int = 0
    export_file: str | None = None


@dataclass(frozen=True, slots=True)
class DropCutoffs:
    history: datetime | None  # parts and callbacks (None: not dropped)
    pending_receipts: datetime
    idempotency_keys: datetime

    @classmethod
    def of(cls, now: datetime, history_days: float | None, settings: Settings) -> DropCutoffs:
        return cls(
            None if not history_days else now - timedelta(days=history_days),
            now - timedelta(seconds=settings.pending_receipt_expiry_seconds),
            now - timedelta(seconds=settings.idempotency_key_expiry_seconds))


class ParquetExport:
    """One Parquet file per dropped partition (`parts_p20261101-<stamp>.parquet`): needs
    pyarrow. Written in row groups of EXPORT_CHUNK rows, closed and fsynced before the drop."""

    def __init__(self, directory: Path, stamp: str) -> None:
        import pyarrow  # noqa: F401  (fails here, before anything is dropped, without it)

        self.directory = directory
        self.stamp = stamp
        self.files: dict[str, Path] = {}
        self.rows: dict[str, int] = {}

    def check(self) -> None:
        CsvExport(self.directory, self.stamp).check()

    def path_for(self, name: str) -> Path:
        return self.directory / f"{name}-{self.stamp}.parquet"


@dataclass(slots=True)
class _Run:
    db: Database
    conn: AsyncConnection  # autocommit: DETACH CONCURRENTLY cannot run in a transaction
    cutoffs: DropCutoffs
    dry_run: bool
    export: CsvExport | ParquetExport | None
    outcomes: list[PartitionOutcome] = field(default_factory=list)


async def drop_expired(db: Database, cutoffs: DropCutoffs, *, dry_run: bool = False,
                       export: CsvExport | ParquetExport | None = None,
                       wait_for_lock: bool = True) -> list[PartitionOutcome]:
    """Drop (or, in a dry run, only judge) the partitions the cutoffs let go; the outcome of
    every partition old enough (dropped, or kept and why). Raises PartitionBusy when another
    process holds the upkeep lock and `wait_for_lock` is False."""
    async with upkeep_connection(db, wait_for_lock) as conn:
        run = _Run(db, conn, cutoffs, dry_run, export)
        parts = await pt.list_partitions(conn)
        pending = [p for p in parts if p.detach_pending]
        if pending and not dry_run:
            # a detach an earlier run left half done (stopped, or its statement timed out):
            # finished, then attached again, and judged below like any other (its export may
            # not have been written)
            for p in pending:
                await conn.execute(text(f'ALTER TABLE "{p.table}" DETACH PARTITION '
                                        f'"{p.name}" FINALIZE'))
                await _attach_again(conn, [p])
            parts = await pt.list_partitions(conn)
        by_table: dict[str, list[pt.Partition]] = {}
        for p in parts:
            by_table.setdefault(p.table, []).append(p)
        if cutoffs.history is not None:
            for p in by_table.get("parts", []):
                await _consider(run, p, cutoffs.history, _parts_in_flight)
            attempts = {_suffix(p.name): p for p in by_table.get("callback_attempts", [])}
            for p in by_table.get("callback_events", []):
                await _consider(run, p, cutoffs.history, _events_in_flight,
                                attempts.get(_suffix(p.name)))
        for p in by_table.get("pending_receipts", []):
            await _consider(run, p, cutoffs.pending_receipts, None)
        for p in by_table.get("idempotency_keys", []):
            await _consider(run, p, cutoffs.idempotency_keys, None)
        return run.outcomes


@asynccontextmanager
async def upkeep_connection(db: Database, wait: bool = True) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection holding the partition upkeep lock (session level)."""
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        a, b = pt.MAINTENANCE_LOCK
        if wait:
            await conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": a, "b": b})
        elif not (await conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                                     {"a": a, "b": b})).scalar():
            raise PartitionBusy("another process is creating or dropping partitions")
        try:
            yield conn
        except BaseException:
            # cancelled or failed mid-statement: the connection may be unusable, so it is
            # closed (its session's lock goes with it) and the error, or the cancellation,
            # goes on as it was
            with contextlib.suppress(Exception):
                await conn.invalidate()
            raise
        await conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": a, "b": b})


def _suffix(name: str) -> str:
    return name.rsplit("_", 1)[1]


async def _consider(run: _Run, p: pt.Partition, cutoff: datetime, in_flight: Any,
                    companion: pt.Partition | None = None) -> None:
    table = pt.BY_NAME[p.table]
    conn = run.conn
    if p.start is None and table.by_id:  # `_initial`: as old as its newest row
        newest = await _newest(conn, p)
        if newest is None or newest >= cutoff:
            return
    elif p.end is None or p.end > cutoff:
        return
    outcome = PartitionOutcome(p.table, p.name, p.start, p.end, False, rows=max(p.rows, 0),
                               bytes=p.bytes)
    run.outcomes.append(outcome)
    reason = await in_flight(conn, p.name, _id_range(p)) if in_flight else None
    if reason or run.dry_run:
        outcome.reason = reason
        return
    detached = [p] + ([companion] if companion else [])
    for d in detached:
        await conn.execute(text(f'ALTER TABLE "{d.table}" DETACH PARTITION "{d.name}" '
                                "CONCURRENTLY"))
    try:
        # once detached nothing can reach its rows: what the checks see now stays true
        reason = await in_flight(conn, p.name, _id_range(p)) if in_flight else None
        if reason is None and run.export is not None:
            for d in detached:
                rows, path = await _export(run, d)
                if d is p:
                    outcome.rows, outcome.export_file = rows, path
                else:
                    companion_outcome = PartitionOutcome(
                        d.table, d.name, d.start, d.end, True, rows=rows, bytes=d.bytes,
                        export_file=path)
    except BaseException:
        try:
            await _attach_again(conn, detached)
        except Exception:  # the original error (or cancellation) is the one to raise
            log.exception("partition %s left detached: attach it again by hand (%s)",
                          p.name, p.sql_bound())
        raise
    if reason is not None:
        await _attach_again(conn, detached)
        outcome.reason = reason
        return
    for d in detached:
        await conn.execute(text(f'DROP TABLE "{d.name}"'))
        log.info("partition dropped table=%s partition=%s rows=%d", d.table, d.name,
                 max(d.rows, 0))
    outcome.dropped = True
    if companion is not None:
        run.outcomes.append(companion_outcome if run.export is not None else PartitionOutcome(
            companion.table, companion.name, companion.start, companion.end, True,
            rows=max(companion.rows, 0), bytes=companion.bytes))


async def _attach_again(conn: AsyncConnection, detached: Sequence[pt.Partition]) -> None:
    for d in detached:
        await conn.execute(text(f'ALTER TABLE "{d.table}" ATTACH PARTITION "{d.name}" '
                                f"{d.sql_bound()}"))


def _id_range(p: pt.Partition) -> tuple[int, int]:
    lo = 0 if p.start is None else pt.id_bound(p.start)
    hi = pt.LEGACY_BOUND if p.end is None else pt.id_bound(p.end)
    return lo, hi


async def _newest(conn: AsyncConnection, p: pt.Partition) -> datetime | None:
    if p.table == "parts":  # ix_parts_updated_at
        sql = f'SELECT max(updated_at) FROM "{p.name}"'
    else:
        table = pt.BY_NAME[p.table]
        sql = (f'SELECT "{table.time_column}" FROM "{p.name}" '
               f'ORDER BY "{table.key}" DESC LIMIT 1')
    value = (await conn.execute(text(sql))).scalar()
    return None if value is None else pt.as_utc(value)


async def _parts_in_flight(conn: AsyncConnection, name: str, ids: tuple[int, int]
                           ) -> str | None:
    waiting = (await conn.execute(text(
        f"SELECT id FROM \"{name}\" WHERE status IN ('SCHEDULED', 'QUEUED') LIMIT 1"))).first()
    if waiting:
        return f"part {waiting[0]} is still waiting to be sent"
    # ix_campaigns_unfinished, then the partition's ix_parts_campaign for each
    unfinished = (await conn.execute(text(
        f'SELECT c.id FROM campaigns c WHERE c.completed_at IS NULL AND EXISTS '
        f'(SELECT 1 FROM "{name}" p WHERE p.campaign_id = c.id) LIMIT 1'))).first()
    if unfinished:
        return (f"campaign {unfinished[0]} is not finished (a part not final, or not yet "
                "counted by the roll-up)")
    pending = (await conn.execute(text(
        "SELECT id, part_id FROM callback_events WHERE (state = 'pending' OR state IS NULL) "
        "AND part_id >= :lo AND part_id < :hi LIMIT 1"), {"lo": ids[0], "hi": ids[1]})).first()
    if pending:
        return f"callback event {pending[0]} of part {pending[1]} is still to be posted"
    return None


async def _events_in_flight(conn: AsyncConnection, name: str, _ids: tuple[int, int]
                            ) -> str | None:
    pending = (await conn.execute(text(
        f"SELECT id FROM \"{name}\" WHERE state = 'pending' OR state IS NULL LIMIT 1"))).first()
    return f"callback event {pending[0]} is still to be posted" if pending else None


async def _export(run: _Run, p: pt.Partition) -> tuple[int, str | None]:
    """Every row of the detached partition `p` on disk (fsynced): (rows, file)."""
    model = MODELS[p.table]
    columns = [Column(c.name, c.type) for c in model.__table__.c]
    table = Table(p.name, MetaData(), *columns)
    export = run.export
    assert export is not None
    stmt = select(table).execution_options(yield_per=EXPORT_CHUNK)
    names = [c.name for c in columns]
    total = 0
    async with run.db.connect(stream=True) as conn:
        result = await conn.stream(stmt)
        if isinstance(export, ParquetExport):
            path = export.path_for(p.name)
            total = await _write_parquet(result, names, path)
            export.files[p.name] = path
            export.rows[p.name] = total
            return total, str(path)
        async for chunk in result.partitions(EXPORT_CHUNK):
            rows = [tuple(r) for r in chunk]
            export.write({p.name: TableRows(names, rows)})
            total += len(rows)
    if total == 0:
        return 0, None
    return total, str(export.files[p.name])


async def _write_parquet(result: Any, names: list[str], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: Any = None
    total = 0
    try:
        async for chunk in result.partitions(EXPORT_CHUNK):
            columns = list(zip(*[tuple(r) for r in chunk], strict=True))
            batch = pa.table({n: pa.array([_plain(v) for v in col])
                              for n, col in zip(names, columns, strict=True)})
            if writer is None:
                writer = pq.ParquetWriter(str(path), batch.schema)
            writer.write_table(batch.cast(writer.schema))
            total += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return total


def _plain(value: Any) -> Any:
    from decimal import Decimal

    return str(value) if isinstance(value, Decimal) else value
