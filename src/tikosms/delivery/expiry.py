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
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import IdempotencyKey, PendingReceipt

log = logging.getLogger("tikosms.delivery")

BATCH = 1000  # rows per transaction
MAX_BATCHES = 20  # per housekeeping round: the rest waits for the next one


async def expire_old_rows(db: Database, settings: Settings, now: datetime) -> tuple[int, int]:
    """Delete expired pending receipts and idempotency keys; (receipts, keys) deleted."""
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
