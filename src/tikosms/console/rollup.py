"""The traffic roll-up: part events per minute, carrier and MCC/MNC in `traffic_minutes`.

The overview reads only this table, never `parts`. A periodic task (started by `serve` and
`worker`, every `console_rollup_seconds`) reads the parts changed since its watermark through
`ix_parts_updated_at` and counts the events whose time falls in [watermark, now - settle):
accepted (created_at), sent (sent_at), delivered (delivered_at, with the time from sent to
delivered in a histogram) and failed (a final status other than DELIVRD/CANCELED, at
updated_at). Every event time of a part is at or before its updated_at, so a part with an event
in the window is always among the rows read. `settle` leaves a few seconds for transactions
that stamped a time and committed a moment later. One process at a time runs it: the first
statement updates the state row, which takes its row lock (PostgreSQL) or the write lock
(SQLite) until commit.

Known limit: a part submitted twice (a retry) has only its last sent_at, so the earlier
submit is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.engine import Database
from tikosms.db.models import Part, RollupState, TrafficMinute
from tikosms.db.types import utcnow

log = logging.getLogger("tikosms.console.rollup")

NAME = "traffic"
SETTLE = timedelta(seconds=3)
FIRST_LOOKBACK = timedelta(hours=1)  # how far back a roll-up that never ran starts
FAILED = frozenset({"UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
# upper bounds (ms) of the time-to-deliver buckets; the last bucket has no bound ("inf")
BUCKETS_MS = (250, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
              1_800_000, 3_600_000)
COUNTERS = ("accepted", "sent", "delivered", "failed")


def minute_of(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def bucket_of(ms: float) -> str:
    for bound in BUCKETS_MS:
        if ms <= bound:
            return str(bound)
    return "inf"


def median_ms(hist: dict[str, int]) -> int | None:
    """The upper bound of the bucket holding the median (None: no deliveries; -1: over the
    last bound)."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for bound in [*map(str, BUCKETS_MS), "inf"]:
        seen += hist.get(bound, 0)
        if seen * 2 >= total:
            return -1 if bound == "inf" else int(bound)
    return -1


class _Tally:
    def __init__(self) -> None:
        self.counts: dict[tuple[datetime, str, str], dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(COUNTERS, 0))
        self.hists: dict[tuple[datetime, str, str], dict[str, int]] = defaultdict(dict)

    def add(self, at: datetime, carrier: str, mccmnc: str, what: str) -> tuple[Any, ...]:
        key = (minute_of(at), carrier, mccmnc)
        self.counts[key][what] += 1
        return key


def count_events(rows: Any, lo: datetime, hi: datetime) -> _Tally:
    tally = _Tally()
    for r in rows:
        carrier, mccmnc = r.carrier or "", r.mccmnc or ""
        if lo <= r.created_at < hi:
            tally.add(r.created_at, carrier, mccmnc, "accepted")
        if r.sent_at is not None and lo <= r.sent_at < hi:
            tally.add(r.sent_at, carrier, mccmnc, "sent")
        if r.status == "DELIVRD" and r.delivered_at is not None and lo <= r.delivered_at < hi:
            key = tally.add(r.delivered_at, carrier, mccmnc, "delivered")
            start = r.sent_at or r.created_at
            ms = max(0.0, (r.delivered_at - start).total_seconds() * 1000)
            hist = tally.hists[key]
            b = bucket_of(ms)
            hist[b] = hist.get(b, 0) + 1
        if r.status in FAILED and lo <= r.updated_at < hi:
            tally.add(r.updated_at, carrier, mccmnc, "failed")
    return tally


async def run_once(db: Database, now: datetime | None = None) -> int:
    """One pass; returns the number of (minute, carrier, mccmnc) rows touched."""
    now = now or utcnow()
    hi = now - SETTLE
    async with db.begin() as conn:
        lo = await _lock_and_watermark(conn, now)
        if lo is None or lo >= hi:
            return 0
        stmt = (select(Part.created_at, Part.sent_at, Part.delivered_at, Part.updated_at,
                       Part.status, Part.carrier, Part.mccmnc)
                .where(Part.updated_at >= lo))
        rows = (await conn.execute(stmt)).all()
        tally = count_events(rows, lo, hi)
        await _merge(conn, tally)
        await conn.execute(update(RollupState).where(RollupState.name == NAME)
                           .values(watermark=hi, ran_at=now))
    return len(tally.counts)


async def _lock_and_watermark(conn: AsyncConnection, now: datetime) -> datetime | None:
    result = await conn.execute(
        update(RollupState).where(RollupState.name == NAME).values(ran_at=now)
        .returning(RollupState.watermark))
    mark = result.scalar_one_or_none()
    if mark is not None:
        return mark  # type: ignore[no-any-return]
    start = now - FIRST_LOOKBACK
    await conn.execute(insert(RollupState).values(name=NAME, watermark=start, ran_at=now))
    return start


async def _merge(conn: AsyncConnection, tally: _Tally) -> None:
    if not tally.counts:
        return
    minutes = sorted({k[0] for k in tally.counts})
    existing = {
        (r.minute, r.carrier, r.mccmnc): r
        for r in (await conn.execute(
            select(TrafficMinute).where(TrafficMinute.minute.in_(minutes)))).all()
    }
    for key, counts in tally.counts.items():
        hist = tally.hists.get(key, {})
        old = existing.get(key)
        if old is None:
            await conn.execute(insert(TrafficMinute).values(
                minute=key[0], carrier=key[1], mccmnc=key[2], dlv_hist=json.dumps(hist),
                **counts))
            continue
        merged = json.loads(old.dlv_hist or "{}")
        for b, n in hist.items():
            merged[b] = merged.get(b, 0) + n
        await conn.execute(
            update(TrafficMinute)
            .where(TrafficMinute.minute == key[0], TrafficMinute.carrier == key[1],
                   TrafficMinute.mccmnc == key[2])
            .values(dlv_hist=json.dumps(merged),
                    **{c: getattr(TrafficMinute, c) + n for c, n in counts.items()}))


@asynccontextmanager
async def periodic(db: Database, seconds: float) -> AsyncIterator[None]:
    """Run the roll-up every `seconds` for the life of the block (0: not at all)."""
    if seconds <= 0:
        yield
        return

    async def loop() -> None:
        while True:
            try:
                await run_once(db)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a missed pass is made up by the next: logged, not fatal
                log.warning("traffic roll-up failed: %s", exc)
            await asyncio.sleep(seconds)

    task = asyncio.create_task(loop(), name="console-rollup")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
