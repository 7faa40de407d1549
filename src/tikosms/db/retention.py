"""Retention: forgetting delivery history older than a cutoff (`tikosms db prune`).

What goes, in this order, each in batches of `batch` rows, one short transaction per batch (the
send path and the worker go on beside it; on SQLite each batch holds the write lock for a few
milliseconds only):

1. parts whose status is final (FINAL_STATUSES), last changed (`updated_at`) before the cutoff,
   whose campaign is finished (`completed_at` set by the lifecycle roll-up: every part final)
   and that have no callback still to post; with them their callback events and the events'
   attempts. A part that is not final is never deleted, nor any part of a campaign that is not
   finished: the roll-up counts an unfinished campaign's parts, and they must all be there.
2. callback events finished (delivered or failed) before the cutoff, with their attempts.
3. campaigns finished, created before the cutoff, with no part left.
4. pending receipts older than `pending_receipt_expiry_seconds` and idempotency keys older than
   `idempotency_key_expiry_seconds` (the worker's housekeeping deletes those too; here they are
   exported first when asked).

Never touched: the ledger (`ledger_entries`: every charge and refund stays, with the campaign id
it names, so balances and statements stay whole; no foreign key points from it to parts or
campaigns), accounts, rates, carriers and the console's roll-ups.

`updated_at` is at least `created_at`, so a pruned part is older than the cutoff by both. Rows
are picked in index order (parts by `ix_parts_updated_at`, campaigns by
`ix_campaigns_kind_created`, callback events by id up to the last one made before the cutoff),
never by a scan of the whole table per batch.

With an export (`CsvExport`), each batch's deleted rows (taken from `DELETE ... RETURNING`, so
exactly what was deleted) are on disk, fsynced, before the batch commits; a failed write rolls
the batch back. A failed COMMIT is the one case left open: the rows are in the export and may
or may not still be in the database (PruneError says so); a later run exports again what is left.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    FromClause,
    Table,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from tikosms.config import Settings
from tikosms.db import partitions as pt
from tikosms.db.engine import Database
from tikosms.db.export import CsvExport, TableRows
from tikosms.db.models import (
    FINAL_STATUSES,
    CallbackAttempt,
    CallbackEvent,
    Campaign,
    IdempotencyKey,
    Part,
    PendingReceipt,
)
from tikosms.db.partition_retention import (
    DropCutoffs,
    ParquetExport,
    PartitionOutcome,
    drop_expired,
)

# the tables prune deletes from, in the order of the report
TABLES = ("parts", "callback_events", "callback_attempts", "campaigns", "pending_receipts",
          "idempotency_keys")
# callback event states after which nothing more will be posted (callbacks/dispatcher.py)
CALLBACK_FINISHED = ("delivered", "failed")
DEFAULT_BATCH = 1000  # rows per transaction
IN_LIST = 5000  # values per IN list (5,000 key pairs: 10,000 parameters)

Progress = Callable[[str, dict[str, int]], None]  # (phase, rows so far per table)


class PruneError(Exception):
    """A batch could not be completed; what was committed before it stays deleted (`report`:
    the rows of the batches before)."""

    report: PruneReport | None = None


@dataclass(frozen=True, slots=True)
class Cutoffs:
    history: datetime  # parts, finished callbacks and campaigns from before this go
    pending_receipts: datetime  # unmatched receipts received before this go
    idempotency_keys: datetime  # keys made before this go

    @classmethod
    def of(cls, now: datetime, days: float, settings: Settings) -> Cutoffs:
        return cls(
            history=now - timedelta(days=days),
            pending_receipts=now - timedelta(seconds=settings.pending_receipt_expiry_seconds),
            idempotency_keys=now - timedelta(seconds=settings.idempotency_key_expiry_seconds),
        )


@dataclass(slots=True)
class PruneReport:
    cutoffs: Cutoffs
    dry_run: bool
    # rows deleted per table (in a dry run: rows that would be deleted now)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    seconds: float = 0.0
    # PostgreSQL: the partitions old enough to go, dropped or kept (and why)
    partitions: list[PartitionOutcome] = field(default_factory=list)


async def prune(db: Database, cutoffs: Cutoffs, *, batch: int = DEFAULT_BATCH,
                dry_run: bool = False, export: CsvExport | None = None,
                progress: Progress | None = None,
                partition_export: CsvExport | ParquetExport | None = None) -> PruneReport:
    """Delete (or, with `dry_run`, count) what the cutoffs let go; see the module docstring.

    PostgreSQL (partitioned, 0012): first the partitions entirely older than the cutoffs, with
    nothing in flight, are dropped whole (db/partition_retention.py; exported first to
    `partition_export`, by default `export`: one file per partition); then the batches below
    delete what is left, with the history cutoff moved back to the start of the partition it
    falls in: the rows of the partition the cutoff cuts wait for it to be dropped whole, rather
    than being deleted row by row. The batches then find only rows that partitions kept (a
    partition with one part in flight), and those of `_initial`."""
    started = time.monotonic()
    dropped: list[PartitionOutcome] = []
    async with db.connect() as conn:
        partitioned = await pt.is_partitioned(conn)
        if partitioned:
            cutoffs = replace(cutoffs, history=_partition_floor(
                await pt.list_partitions(conn, ["parts"]), cutoffs.history))
    if partitioned:
        progress_of = progress or (lambda _p, _r: None)
        progress_of("partitions", {})
        dropped = await drop_expired(
            db, DropCutoffs(cutoffs.history, cutoffs.pending_receipts,
                            cutoffs.idempotency_keys),
            dry_run=dry_run, export=partition_export or export)
    pruner = _Pruner(db, cutoffs, batch, dry_run, export, progress or (lambda _p, _r: None))
    pruner.report.partitions = dropped
    try:
        await pruner.parts()
        await pruner.finished_callbacks()
        await pruner.campaigns()
        await pruner.pending_receipts()
        await pruner.idempotency_keys()
    except PruneError as exc:
        exc.report = pruner.report
        raise
    finally:
        pruner.report.seconds = time.monotonic() - started
    return pruner.report


@dataclass(slots=True)
class _Step:
    """One batch: the candidates picked, and what was deleted (or counted in a dry run)."""

    picked: int
    cursor: Any = None
    deleted: dict[str, TableRows] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)


class _Pruner:
    def __init__(self, db: Database, cutoffs: Cutoffs, batch: int, dry_run: bool,
                 export: CsvExport | None, progress: Progress) -> None:
        self.db = db
        self.cutoffs = cutoffs
        self.batch = batch
        self.dry_run = dry_run
        self.export = export
        self.progress = progress
        self.report = PruneReport(cutoffs, dry_run)

    # --- 1. parts, with their callback events and attempts -----------------------------------

    async def parts(self) -> None:
        async def step(conn: AsyncConnection, cursor: Any) -> _Step:
            picked = (await conn.execute(
                select(Part.id, Part.updated_at)
                .where(self._part_prunable(), _after(cursor, Part.updated_at, Part.id))
                .order_by(Part.updated_at, Part.id).limit(self.batch))).all()
            ids = [r.id for r in picked]
            result = _Step(len(picked), _cursor_of(picked))
            if not ids:
                return result
            if self.dry_run:
                result.counted = {"parts": len(ids), **await _count_callbacks(
                    conn, CallbackEvent.part_id, ids, _callback_finished())}
                return result
            parts = await _delete_returning(
                conn, Part, Part.id, ids, self._part_prunable())
            part_ids = parts.values("id")
            events = await _delete_returning(
                conn, CallbackEvent, CallbackEvent.part_id, part_ids, _callback_finished())
            attempts = await _delete_returning(
                conn, CallbackAttempt, CallbackAttempt.event_id, events.values("id"))
            result.deleted = {"parts": parts, "callback_events": events,
                              "callback_attempts": attempts}
            return result

        await self._batches("parts", step)

    def _part_prunable(self, of_finished_campaign: bool = True) -> ColumnElement[bool]:
        # an alias: never correlated to a callback_events of an enclosing query
        event = aliased(CallbackEvent)
        unposted = exists().where(event.part_id == Part.id,
                                  or_(event.state.is_(None), event.state.not_in(CALLBACK_FINISHED)))
        condition = and_(Part.updated_at < self.cutoffs.history,
                         Part.status.in_(sorted(FINAL_STATUSES)), ~unposted)
        if of_finished_campaign:
            condition = condition & exists().where(Campaign.id == Part.campaign_id,
                                                   Campaign.completed_at.is_not(None))
        return condition

    # --- 2. finished callback events -----------------------------------------------------------

    async def finished_callbacks(self) -> None:
        cutoff = self.cutoffs.history
        async with self.db.connect() as conn:
            bound = await _last_id_before(conn, CallbackEvent.__table__, CallbackEvent.id,
                                          CallbackEvent.created_at, cutoff)
        old_and_done = (CallbackEvent.id <= bound) & _callback_finished() & (
            CallbackEvent.finished_at < cutoff)
        if self.dry_run:
            # the events of parts that go are counted with their parts (phase 1)
            old_and_done = old_and_done & ~exists().where(
                Part.id == CallbackEvent.part_id, self._part_prunable())

        async def step(conn: AsyncConnection, cursor: Any) -> _Step:
            ids = list((await conn.execute(
                select(CallbackEvent.id)
                .where(old_and_done, CallbackEvent.id > (cursor or 0))
                .order_by(CallbackEvent.id).limit(self.batch))).scalars())
            result = _Step(len(ids), ids[-1] if ids else None)
            if not ids:
                return result
            if self.dry_run:
                result.counted = await _count_callbacks(conn, CallbackEvent.id, ids)
                return result
            events = await _delete_returning(
                conn, CallbackEvent, CallbackEvent.id, ids, old_and_done)
            attempts = await _delete_returning(
                conn, CallbackAttempt, CallbackAttempt.event_id, events.values("id"))
            result.deleted = {"callback_events": events, "callback_attempts": attempts}
            return result

        await self._batches("callback_events", step)

    # --- 3. campaigns left without parts -------------------------------------------------------

    async def campaigns(self) -> None:
        if self.dry_run:
            # parts are still there: a campaign goes if none of its parts would stay
            staying = ~self._part_prunable(of_finished_campaign=False)
            no_parts_left = ~exists().where(Part.campaign_id == Campaign.id, staying)
        else:
            no_parts_left = ~exists().where(Part.campaign_id == Campaign.id)
        finished_and_empty = and_(Campaign.created_at < self.cutoffs.history,
                                  Campaign.completed_at.is_not(None), no_parts_left)
        for kind in await self._campaign_kinds():
            of_kind = (Campaign.kind == kind) & finished_and_empty

            async def step(conn: AsyncConnection, cursor: Any, of_kind: Any = of_kind) -> _Step:
                picked = (await conn.execute(
                    select(Campaign.id, Campaign.created_at)
                    .where(of_kind, _after(cursor, Campaign.created_at, Campaign.id))
                    .order_by(Campaign.created_at, Campaign.id).limit(self.batch))).all()
                result = _Step(len(picked), _cursor_of(picked))
                if not picked:
                    return result
                if self.dry_run:
                    result.counted = {"campaigns": len(picked)}
                    return result
                result.deleted = {"campaigns": await _delete_returning(
                    conn, Campaign, Campaign.id, [r.id for r in picked], of_kind)}
                return result

            await self._batches("campaigns", step)

    async def _campaign_kinds(self) -> list[str]:
        """The distinct kinds (single, bulk, ...), one index probe each (a loose index scan of
        `ix_campaigns_kind_created`): no scan of the table."""
        kinds: list[str] = []
        async with self.db.connect() as conn:
            while True:
                after = (Campaign.kind > kinds[-1]) if kinds else true()
                kind = (await conn.execute(select(func.min(Campaign.kind)).where(after))).scalar()
                if kind is None:
                    return kinds
                kinds.append(kind)

    # --- 4. expired receipts and idempotency keys -------------------------------------------

    async def pending_receipts(self) -> None:
        old = PendingReceipt.received_at < self.cutoffs.pending_receipts
        if self.dry_run:
            await self._count_only("pending_receipts", PendingReceipt, old)
            return

        async def step(conn: AsyncConnection, _cursor: Any) -> _Step:
            # every row picked is deleted (nothing old is kept): no cursor needed
            ids = list((await conn.execute(
                select(PendingReceipt.id).where(old)
                .order_by(PendingReceipt.received_at, PendingReceipt.id)
                .limit(self.batch))).scalars())
            result = _Step(len(ids))
            if ids:
                result.deleted = {"pending_receipts": await _delete_returning(
                    conn, PendingReceipt, PendingReceipt.id, ids, old)}
            return result

        await self._batches("pending_receipts", step)

    async def idempotency_keys(self) -> None:
        old = IdempotencyKey.created_at < self.cutoffs.idempotency_keys
        if self.dry_run:
            await self._count_only("idempotency_keys", IdempotencyKey, old)
            return

        async def step(conn: AsyncConnection, _cursor: Any) -> _Step:
            keys = [tuple(k) for k in (await conn.execute(
                select(IdempotencyKey.account_id, IdempotencyKey.key).where(old)
                .order_by(IdempotencyKey.created_at).limit(self.batch))).all()]
            result = _Step(len(keys))
            if keys:
                result.deleted = {"idempotency_keys": await _delete_returning(
                    conn, IdempotencyKey,
                    tuple_(IdempotencyKey.account_id, IdempotencyKey.key), keys, old)}
            return result

        await self._batches("idempotency_keys", step)

    # --- batches ------------------------------------------------------------------------------

    async def _batches(self, phase: str,
                       step: Callable[[AsyncConnection, Any], Awaitable[_Step]]) -> None:
        """Run `step` batch after batch (each in its own transaction) until one picks fewer
        rows than a batch."""
        cursor: Any = None
        while True:
            done = await self._one(step, cursor)
            cursor = done.cursor
            if done.picked:
                self.report.batches += 1
                for table, n in (done.counted or {t: len(r.rows) for t, r in
                                                  done.deleted.items()}).items():
                    self.report.rows[table] += n
                self.progress(phase, self.report.rows)
            if done.picked < self.batch:
                return

    async def _one(self, step: Callable[[AsyncConnection, Any], Awaitable[_Step]],
                   cursor: Any) -> _Step:
        if self.dry_run:
            async with self.db.connect() as conn:
                return await step(conn, cursor)
        exported = False
        try:
            async with self.db.begin() as conn:
                done = await step(conn, cursor)
                if self.export is not None and any(r.rows for r in done.deleted.values()):
                    try:  # durable before the commit, or it raises and the batch rolls back
                        self.export.write(done.deleted)
                    except OSError as exc:
                        raise PruneError(f"writing the export failed, so this batch was not "
                                         f"deleted: {exc}") from exc
                    exported = True
        except PruneError:
            raise
        except Exception as exc:
            if exported:
                raise PruneError(
                    "a batch was exported but its commit failed: its rows are in the export "
                    "and may still be in the database (a later run exports again what is "
                    f"left): {exc}") from exc
            raise
        return done

    async def _count_only(self, table: str, model: Any, condition: ColumnElement[bool]) -> None:
        async with self.db.connect() as conn:
            n = int((await conn.execute(
                select(func.count()).select_from(model).where(condition))).scalar_one())
        self.report.rows[table] += n
        self.progress(table, self.report.rows)


def _partition_floor(parts: Sequence[pt.Partition], cutoff: datetime) -> datetime:
    """The start of the time partition `cutoff` falls in (itself when none holds it)."""
    for p in parts:
        if p.start is not None and p.end is not None and p.start <= cutoff < p.end:
            return p.start
    return cutoff


def _cursor_of(picked: Sequence[Any]) -> tuple[Any, Any] | None:
    """The (time, id) keyset cursor after the last row picked (rows of id, time)."""
    return (picked[-1][1], picked[-1][0]) if picked else None


def _callback_finished() -> ColumnElement[bool]:
    return CallbackEvent.state.in_(CALLBACK_FINISHED)


def _after(cursor: tuple[Any, Any] | None, time_column: Any, id_column: Any
           ) -> ColumnElement[bool]:
    """Keyset: rows after (time, id) `cursor` in (time, id) order, written so that an index on
    the time column bounds the scan (`time >= t` first)."""
    if cursor is None:
        return true()
    t, i = cursor
    return and_(time_column >= t, or_(time_column > t, id_column > i))


async def _delete_returning(conn: AsyncConnection, model: Any, key: Any, values: Sequence[Any],
                            condition: ColumnElement[bool] | None = None) -> TableRows:
    """DELETE the rows whose `key` is among `values` and that match `condition`; the rows
    deleted (every column, in table order)."""
    table: Table = model.__table__
    columns: Sequence[Column[Any]] = list(table.c)
    rows: list[tuple[Any, ...]] = []
    for chunk in _chunks(values):
        where = key.in_(chunk) if condition is None else key.in_(chunk) & condition
        rows += [tuple(r) for r in await conn.execute(
            delete(table).where(where).returning(*columns))]
    return TableRows([c.name for c in columns], rows)


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    """IN lists of at most IN_LIST values: a batch's callbacks may be several per part, and
    a statement takes at most 32,767 parameters (asyncpg) or 32,766 (SQLite)."""
    return [values[i:i + IN_LIST] for i in range(0, len(values), IN_LIST)]


async def _count_callbacks(conn: AsyncConnection, key: Any, values: Sequence[Any],
                           condition: ColumnElement[bool] | None = None) -> dict[str, int]:
    ids: list[int] = []
    for chunk in _chunks(values):
        where = key.in_(chunk) if condition is None else key.in_(chunk) & condition
        ids += (await conn.execute(select(CallbackEvent.id).where(where))).scalars()
    attempts = 0
    for chunk in _chunks(ids):
        attempts += int((await conn.execute(
            select(func.count()).select_from(CallbackAttempt)
            .where(CallbackAttempt.event_id.in_(chunk)))).scalar_one())
    return {"callback_events": len(ids), "callback_attempts": attempts}


async def _last_id_before(conn: AsyncConnection, table: FromClause, id_column: Any,
                          time_column: Any, cutoff: datetime) -> int:
    """The largest id of a row made before `cutoff`, by a binary search over the primary key
    (~40 index probes for a billion rows) rather than a scan: ids are given in insert order,
    so they grow with the time a row was made. Rows made within the same moment may be a few
    ids out of order; a row near the bound is then left to the next run, never deleted early
    (the rows' own conditions still apply)."""
    lo, hi = (await conn.execute(select(func.min(id_column), func.max(id_column)))).one()
    if lo is None:
        return 0
    hi += 1  # the first id whose row is at or after the cutoff lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        row = (await conn.execute(
            select(id_column, time_column).select_from(table).where(id_column >= mid)
            .order_by(id_column).limit(1))).first()
        if row is None or row[1] >= cutoff:
            hi = mid
        else:
            lo = row[0] + 1
    return int(lo) - 1
