"""Rows that only wait to be forgotten: unmatched receipts and old idempotency keys.

- pending_receipts: a receipt that matched no part is kept in case its submit is recorded late
  (another worker); after `pending_receipt_expiry_seconds` (72 h) no submit will come.
- idempotency_keys: they replay for 24 h (messaging/idempotency.py); older ones are deleted
  after `idempotency_key_expiry_seconds`.

Deleted in batches of BATCH rows, one short transaction each, so that housekeeping never holds
a long transaction or many locks beside the sends.
"""

from __future__ import annotations

import logging
import time
import weakref
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_

from tikosms.config import Settings
from tikosms.db import partitions as pt
from tikosms.db.engine import Database
from tikosms.db.models import IdempotencyKey, PendingReceipt
from tikosms.db.partition_retention import (
    DropCutoffs,
    PartitionBusy,
    drop_expired,
    upkeep_connection,
)

log = logging.getLogger("tikosms.delivery")

BATCH = 1000  # rows per transaction
MAX_BATCHES = 20  # per housekeeping round: the rest waits for the next one
# when each database's partition upkeep last ran in this process (time.monotonic())
_last_upkeep: weakref.WeakKeyDictionary[Database, float] = weakref.WeakKeyDictionary()


async def upkeep(db: Database, settings: Settings, now: datetime) -> None:
    """PostgreSQL partitions: create those missing up to `partition_ahead_days` ahead, then
    drop the expired partitions of pending receipts and idempotency keys and, when
    `retention_days` is set, the history partitions past it with nothing in flight (no export:
    `tikosms db prune --export` for that). Skipped while another process does it."""
    try:
        async with upkeep_connection(db, wait=False) as conn:
            if not await pt.is_partitioned(conn):
                return
            created = await pt.ensure(conn, now, settings.partition_days,
                                      settings.partition_ahead_days)
            found = await pt.list_partitions(conn)
        for name in created:
            log.info("partition created partition=%s", name)
        for table in pt.TABLES:
            until = pt.covered_until(found, table.name, now)
            if until is None or until - now < timedelta(days=1):
                log.warning("partitions of %s end %s: inserts past that fail", table.name,
                            until or "now")
        outcomes = await drop_expired(db, DropCutoffs.of(now, settings.retention_days,
                                                         settings), wait_for_lock=False)
    except PartitionBusy:
        return
    for o in outcomes:
        if not o.dropped:
            log.info("partition kept table=%s partition=%s reason=%s", o.table, o.name,
                     o.reason)


async def expire_old_rows(db: Database, settings: Settings, now: datetime) -> tuple[int, int]:
    """Delete expired pending receipts and idempotency keys; (receipts, keys) deleted. On
    PostgreSQL, every `partition_upkeep_seconds`, the partition upkeep too (`upkeep`)."""
    if db.is_postgres:
        last = _last_upkeep.get(db)
        if last is None or time.monotonic() - last >= settings.partition_upkeep_seconds:
            _last_upkeep[db] = time.monotonic()
            await upkeep(db, settings, now)
    receipts = await _delete_pending_receipts(
        db, now - timedelta(seconds=settings.pending_receipt_expiry_seconds))
    keys = await _delete_idempotency_keys(
        db, now - timedelta(seconds=settings.idempotency_key_expiry_seconds))
    if receipts:
        log.warning("%d receipts that matched no part for %.0f h were deleted", receipts,
                    settings.pending_receipt_expiry_seconds / 3600)
    if keys:
        log.info("%d idempotency keys older than %.0f h were deleted", keys,
                 settings.idempotency_key_expiry_seconds / 3600)
    return receipts, keys


async def _delete_pending_receipts(db: Database, cutoff: datetime) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        async with db.begin() as conn:
            ids = select(PendingReceipt.id).where(PendingReceipt.received_at < cutoff) \
                .limit(BATCH).scalar_subquery()
            n = (await conn.execute(delete(PendingReceipt).where(PendingReceipt.id.in_(ids)))
                 ).rowcount or 0
        total += n
        if n < BATCH:
            break
    return total


async def _delete_idempotency_keys(db: Database, cutoff: datetime) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        async with db.begin() as conn:
            keys = (await conn.execute(
                select(IdempotencyKey.account_id, IdempotencyKey.key)
                .where(IdempotencyKey.created_at < cutoff).limit(BATCH))).all()
            if keys:
                await conn.execute(delete(IdempotencyKey).where(
                    tuple_(IdempotencyKey.account_id, IdempotencyKey.key).in_(
                        [tuple(k) for k in keys])))
        total += len(keys)
        if len(keys) < BATCH:
            break
    return total
