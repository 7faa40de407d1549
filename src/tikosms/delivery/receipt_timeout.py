"""Parts a carrier accepted whose final receipt never came.

A carrier may lose a receipt (an SMSC restarted, a route without delivery reports). Such a part
would stay ENROUTE (or in the intermediate state a receipt reported) for good: its campaign
never completes, `tikosms db prune` never drops it (nor its campaign's other parts), and the
customer never hears of it. When no news of it came for `receipt_timeout_seconds`
(TIKOSMS_RECEIPT_TIMEOUT_SECONDS, 72 h by default, longer than any SMS validity period; 0:
never) it ends UNKNOWN with error_code `receipt_timeout`, charged (the
carrier took it), and its status change is announced as any other (callback, SMPP receipt). A
receipt that still comes later does not change it (a final state is never overwritten).

Cheap at any size: the delivery worker's housekeeping reads each part once, in the order of its
last change, when that change passes the timeout (`ix_parts_updated_at`; up to SCAN rows a
batch), and moves a watermark on (`rollup_state`, row `receipt_timeout`, which is also the lock
that lets one process at a time run it). A worker that was down catches up batch by batch.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import FINAL_STATUSES, WAITING_STATUSES, Part, RollupState
from tikosms.delivery import transitions

log = logging.getLogger("tikosms.delivery")

NAME = "receipt_timeout"
ERROR_CODE = "receipt_timeout"
SCAN = 5000  # parts read per batch (by the time of their last change)
MAX_BATCHES = 20  # per housekeeping round: the rest waits for the next one
# with a carrier, not final: ENROUTE, or an intermediate state a receipt reported (ACCEPTD ...)
_NOT_WITH_CARRIER = frozenset({*FINAL_STATUSES, *WAITING_STATUSES})


async def expire_unreceipted(db: Database, settings: Settings, now: datetime) -> int:
    """End UNKNOWN the parts ENROUTE for longer than the timeout; returns how many."""
    timeout = settings.receipt_timeout_seconds
    if timeout <= 0:
        return 0
    cutoff = now - timedelta(seconds=timeout)
    total = 0
    for _ in range(MAX_BATCHES):
        async with db.begin() as conn:
            lo = await _lock_and_watermark(conn, now)
            if lo is None or lo >= cutoff:
                break
            ids, mark = await _next_batch(conn, lo, cutoff)
            rows = await _finish(conn, ids, now) if ids else []
            await conn.execute(update(RollupState).where(RollupState.name == NAME)
                               .values(watermark=mark, ran_at=now))
        total += len(rows)
    if total:
        log.warning("%d parts had no receipt %.0f h after their carrier took them: UNKNOWN "
                    "(error_code %s), charged", total, timeout / 3600, ERROR_CODE)
    return total


async def _next_batch(conn: AsyncConnection, lo: datetime,
                      cutoff: datetime) -> tuple[list[int], datetime]:
    """The parts with a carrier and not final among the next SCAN changed from `lo` on, and the
    watermark after them. Bounded by rows read, not by time: as cheap in a busy hour as in a
    quiet one."""
    columns = (Part.id, Part.updated_at, Part.status)
    found = (await conn.execute(
        select(*columns).where(Part.updated_at >= lo, Part.updated_at < cutoff)
        .order_by(Part.updated_at).limit(SCAN))).all()
    mark = cutoff
    if len(found) == SCAN:
        last = found[-1][1]
        if last == lo:  # one instant holds more than a batch (one big write): read it whole
            found = (await conn.execute(select(*columns).where(Part.updated_at == lo))).all()
            mark = lo + timedelta(microseconds=1)
        else:  # the last instant may go on past the batch: read whole by the next one
            found = [r for r in found if r[1] < last]
            mark = last
    return [r[0] for r in found if r[2] not in _NOT_WITH_CARRIER], mark


async def _finish(conn: AsyncConnection, ids: list[int], now: datetime) -> list[dict[str, Any]]:
    result = await conn.execute(
        update(Part).where(Part.id.in_(ids), Part.status.not_in(list(_NOT_WITH_CARRIER)))
        .values(status="UNKNOWN", error_code=ERROR_CODE, updated_at=now)
        .returning(*transitions.PART_FIELDS))
    rows = [dict(r) for r in result.mappings()]
    await transitions.announce(conn, rows, now)
    return rows


async def _lock_and_watermark(conn: AsyncConnection, now: datetime) -> datetime | None:
    """The watermark, its row locked until commit; on the first run, the oldest change."""
    result = await conn.execute(
        update(RollupState).where(RollupState.name == NAME).values(ran_at=now)
        .returning(RollupState.watermark))
    mark = result.scalar_one_or_none()
    if mark is not None:
        return mark  # type: ignore[no-any-return]
    oldest = (await conn.execute(select(func.min(Part.updated_at)))).scalar_one_or_none()
    if oldest is None:
        return None
    await conn.execute(insert(RollupState).values(name=NAME, watermark=oldest, ran_at=now))
    return oldest  # type: ignore[no-any-return]
