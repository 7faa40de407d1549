"""The traffic roll-up: part events per minute, carrier and MCC/MNC in `traffic_minutes`.

The overview reads only this table, never `parts`. A periodic task (started by `serve` and
`worker`, every `console_rollup_seconds`) has the database count, among the parts changed since
its watermark (`ix_parts_updated_at`), the events whose time falls in [watermark, now - settle):
accepted (created_at), sent (sent_at), delivered (delivered_at, with the time from sent to
delivered in a histogram) and failed (a final status other than DELIVRD/CANCELED, at
updated_at). Every event time of a part is at or before its updated_at, so a part with an event
in the window is always among the rows read. `settle` leaves a few seconds for transactions
that stamped a time and committed a moment later. The counting reads outside any write
transaction; the merge then updates the state row first (its row lock on PostgreSQL, the write
lock on SQLite) and goes on only if the watermark is still the one counted from, so two
processes never add the same window twice.

Known limit: a part submitted twice (a retry) has only its last sent_at, so the earlier
submit is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.engine import Database
from tikosms.db.models import RollupState, TrafficMinute
from tikosms.db.types import naive_utc, sqlite_time, utcnow

log = logging.getLogger("tikosms.console.rollup")

NAME = "traffic"
SETTLE = timedelta(seconds=3)
FIRST_LOOKBACK = timedelta(hours=1)  # how far back a roll-up that never ran starts
FAILED = frozenset({"UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
# upper bounds (ms) of the time-to-deliver buckets; the last bucket has no bound ("inf")
BUCKETS_MS = (250, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
              1_800_000, 3_600_000)
COUNTERS = ("accepted", "sent", "delivered", "failed")


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


def _minute(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"date_trunc('minute', {column})"
    return f"substr({column}, 1, 16)"  # 'YYYY-MM-DD HH:MM' of the text SQLite keeps


def _delivery_ms(dialect: str) -> str:
    """Milliseconds from sent (or created, never sent) to delivered, at least 0."""
    start = "COALESCE(sent_at, created_at)"
    if dialect == "postgresql":
        return f"GREATEST(0, EXTRACT(EPOCH FROM delivered_at - {start}) * 1000)"
    # whole seconds from strftime, the microseconds from the text (julianday's doubles are
    # off by tens of microseconds, enough to move a delivery across a bucket's bound)
    return (f"MAX(0, (strftime('%s', delivered_at) - strftime('%s', {start})) * 1000.0 "
            f"+ (CAST(substr(delivered_at, 20) AS REAL) - CAST(substr({start}, 20) AS REAL))"
            " * 1000)")


@functools.lru_cache(maxsize=2)
def _events_sql(dialect: str) -> str:
    """The events of [lo, hi) by kind, minute, carrier, MCC/MNC (and delivery bucket), from
    the parts changed since lo (`ix_parts_updated_at`): counted by the database, so a pass
    reads a few hundred rows whatever the traffic, not one per part."""
    lo, hi = ("$1", "$2") if dialect == "postgresql" else ("?1", "?2")
    bucket = "CASE " + " ".join(f"WHEN ms <= {b} THEN '{b}'" for b in BUCKETS_MS) + \
        " ELSE 'inf' END"
    failed = ", ".join(f"'{s}'" for s in sorted(FAILED))
    keys = "COALESCE(carrier, '') AS carrier, COALESCE(mccmnc, '') AS mccmnc"

    def kind(what: str, column: str, where: str) -> str:
        return (f"SELECT '{what}' AS what, {_minute(dialect, column)} AS minute, {keys}, "
                f"NULL AS bucket, count(*) AS n FROM parts WHERE updated_at >= {lo} AND "
                f"{where} AND {column} >= {lo} AND {column} < {hi} GROUP BY 2, 3, 4")

    return " UNION ALL ".join([
        kind("accepted", "created_at", "TRUE"),
        kind("sent", "sent_at", "sent_at IS NOT NULL"),
        kind("failed", "updated_at", f"status IN ({failed})"),
        f"SELECT 'delivered', minute, carrier, mccmnc, {bucket}, count(*) FROM ("
        f"SELECT {_minute(dialect, 'delivered_at')} AS minute, {keys}, "
        f"{_delivery_ms(dialect)} AS ms FROM parts WHERE updated_at >= {lo} AND "
        f"status = 'DELIVRD' AND delivered_at >= {lo} AND delivered_at < {hi}) AS d "
        "GROUP BY 2, 3, 4, 5",
    ])


async def count_events(conn: AsyncConnection, lo: datetime, hi: datetime) -> _Tally:
    dialect = conn.dialect.name
    args: tuple[Any, ...] = ((naive_utc(lo), naive_utc(hi)) if dialect == "postgresql" else
                             (sqlite_time(naive_utc(lo)), sqlite_time(naive_utc(hi))))
    tally = _Tally()
    for row in (await conn.exec_driver_sql(_events_sql(dialect), args)).all():
        what, minute, carrier, mccmnc, bucket, n = tuple(row)
        at = (minute if isinstance(minute, datetime)
              else datetime.fromisoformat(minute)).replace(tzinfo=UTC)
        key = (at, carrier, mccmnc)
        tally.counts[key][what] += n
        if bucket is not None:
            hist = tally.hists[key]
            hist[bucket] = hist.get(bucket, 0) + n
    return tally


async def run_once(db: Database, now: datetime | None = None) -> int:
    """One pass; returns the number of (minute, carrier, mccmnc) rows touched.

    The events are counted outside the write transaction (on SQLite it would hold the one
    write lock, and every send, while the parts are read); the write transaction then merges
    them only if the watermark is still the one they were counted from (another process's
    pass meanwhile: this one is dropped, the next counts from the new watermark)."""
    now = now or utcnow()
    hi = now - SETTLE
    async with db.connect() as conn:
        mark = (await conn.execute(select(RollupState.watermark).where(
            RollupState.name == NAME))).scalar_one_or_none()
        lo = now - FIRST_LOOKBACK if mark is None else mark
        if lo >= hi:
            return 0
        tally = await count_events(conn, lo, hi)
    async with db.begin() as conn:
        if await _lock_and_watermark(conn, now, lo) != lo:
            log.info("traffic roll-up: another process rolled up meanwhile; this pass dropped")
            return 0
        await _merge(conn, tally)
        await conn.execute(update(RollupState).where(RollupState.name == NAME)
                           .values(watermark=hi, ran_at=now))
    return len(tally.counts)


async def _lock_and_watermark(conn: AsyncConnection, now: datetime, start: datetime
                              ) -> datetime | None:
    result = await conn.execute(
        update(RollupState).where(RollupState.name == NAME).values(ran_at=now)
        .returning(RollupState.watermark))
    mark = result.scalar_one_or_none()
    if mark is not None:
        return mark  # type: ignore[no-any-return]
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
