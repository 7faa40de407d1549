"""Figures read from the database at scrape time: the same whichever process is scraped.

Queue depth (due parts by priority) is a range scan of the partial queue index; callbacks
pending use `(state, next_attempt_at)`. Parts by status and carrier counts the table: on a
table of millions of rows it is the dearest query here, so every figure is kept for
`metrics_database_seconds` and a scrape storm costs one query per period per process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from tikosms.db.engine import Database
from tikosms.db.models import CallbackEvent, Part
from tikosms.db.types import utcnow
from tikosms.delivery import heartbeats_repo


class Snapshot(Collector):
    """Families computed beforehand (the SQL is async; prometheus collectors are not)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self.families


class DatabaseFigures:
    def __init__(self, db: Database, max_age: float = 5.0, stale_after: float = 15.0) -> None:
        self.db = db
        self.max_age = max_age  # seconds a snapshot is served before it is read again
        self.stale_after = stale_after  # seconds: a worker not seen for longer is not fresh
        self._snapshot: Snapshot | None = None
        self._at = 0.0

    async def snapshot(self) -> Snapshot:
        if self._snapshot is None or time.monotonic() - self._at > self.max_age:
            self._snapshot = Snapshot(await self._read())
            self._at = time.monotonic()
        return self._snapshot

    async def _read(self) -> list[GaugeMetricFamily]:
        async with self.db.connect() as conn:
            queue = (await conn.execute(
                select(Part.priority, func.count()).where(
                    Part.status == "QUEUED", Part.due_at <= utcnow()).group_by(Part.priority)
            )).all()
            parts = (await conn.execute(
                select(Part.status, func.coalesce(Part.carrier, ""), func.count())
                .group_by(Part.status, Part.carrier))).all()
            callbacks: dict[str, int] = dict((await conn.execute(  # type: ignore[arg-type]
                select(CallbackEvent.state, func.count())
                .where(CallbackEvent.state.in_(("pending", "failed")))
                .group_by(CallbackEvent.state))).all())
            beats = await heartbeats_repo.all_beats(conn)
        due = GaugeMetricFamily("tikosms_queue_due_parts",
                                "Parts due for sending and not yet claimed, by priority",
                                labels=["priority"])
        for priority, count in queue:
            due.add_metric([str(priority)], count)
        by_status = GaugeMetricFamily("tikosms_parts", "Parts in the database by status and "
                                      "carrier (carrier '' until one took it)",
                                      labels=["status", "carrier"])
        for status, carrier, count in parts:
            by_status.add_metric([status, carrier], count)
        pending = GaugeMetricFamily("tikosms_callbacks", "Callbacks waiting to be posted "
                                    "(pending) or given up (failed)", labels=["state"])
        for state in ("pending", "failed"):
            pending.add_metric([state], callbacks.get(state, 0))
        now = utcnow()
        workers = GaugeMetricFamily("tikosms_workers_fresh", "Worker processes whose heartbeat "
                                    "is fresh, by role (delivery, callbacks)", labels=["role"])
        for role in ("delivery", "callbacks"):
            workers.add_metric([role], sum(1 for b in beats if role in b.roles
                                           and b.fresh(now, self.stale_after)))
        return [due, by_status, pending, workers]


def bind_families(router: Any) -> list[GaugeMetricFamily]:
    """Bind state and window use of the carriers this process's worker holds."""
    state = GaugeMetricFamily("tikosms_bind_up", "1 while the SMPP bind is bound",
                              labels=["carrier", "bind"])
    window = GaugeMetricFamily("tikosms_window_in_use", "Submits awaiting their response "
                               "on the bind", labels=["carrier", "bind"])
    available = GaugeMetricFamily("tikosms_carrier_available",
                                  "1 while the carrier can take parts", labels=["carrier"])
    for name, carrier in getattr(router, "carriers", {}).items():
        available.add_metric([name], 1 if carrier.available else 0)
        status = getattr(carrier, "status", None)
        if status is None:
            continue
        for bind in status():
            state.add_metric([name, bind.label], 1 if bind.state == "bound" else 0)
            window.add_metric([name, bind.label], bind.in_flight)
    return [state, window, available]
