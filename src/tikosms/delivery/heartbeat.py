"""Heartbeats: each worker process tells the others it is alive, and what its binds do.

Every `worker_heartbeat_seconds` a worker process (`tikosms worker`, or the worker inside
`tikosms serve`) upserts its row in `worker_heartbeats`: its owner id (the one its claims
carry in `parts.lease_owner`), host, pid, roles, and the state of every bind of every carrier
it holds. A clean stop deletes the row; a worker killed leaves it behind, stale once not seen
for `worker_heartbeat_missed` periods, and pruned (by any worker) after PRUNE_AFTER periods.
The API processes' `/readyz` and the console read these rows: they hold no carrier of their own.

A heartbeat that cannot be written (the database away) is logged and tried again next period;
it never stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.delivery import heartbeats_repo
from tikosms.delivery.heartbeats_repo import Beat

log = logging.getLogger("tikosms.delivery.heartbeat")

PRUNE_AFTER = 60  # periods (5 min by default): a dead worker's row is shown as stale until then
STOP_TIMEOUT = 2.0  # seconds the row's deletion may take at a clean stop


def stale_after(settings: Settings) -> float:
    """Seconds after which a worker not seen is no longer fresh (15 s by default)."""
    return settings.worker_heartbeat_seconds * settings.worker_heartbeat_missed


def new_owner() -> str:
    """An owner id of the form the delivery worker's claims use (host:pid:random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@asynccontextmanager
async def beating(db: Database, settings: Settings, roles: tuple[str, ...],
                  worker: Any = None) -> AsyncIterator[Heartbeat]:
    """Heartbeats while the block runs; the row is deleted when it ends. `worker` is the
    delivery worker whose owner id and carriers go in the row (None: callbacks only)."""
    beat = Heartbeat(db, settings, roles, worker)
    await beat.start()
    try:
        yield beat
    finally:
        await beat.stop()


class Heartbeat:
    def __init__(self, db: Database, settings: Settings, roles: tuple[str, ...],
                 worker: Any = None) -> None:
        self.db = db
        self.period = settings.worker_heartbeat_seconds
        self.roles = roles
        self.worker = worker
        self.owner: str = getattr(worker, "owner", None) or new_owner()
        self.started_at = utcnow()
        self.beats = 0  # heartbeats written
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        await self._beat_logged()  # the row exists before the process reports itself ready
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                async with self.db.begin() as conn:
                    await heartbeats_repo.remove(conn, self.owner)
        except Exception as exc:  # the row goes stale and is pruned instead
            log.warning("could not delete the heartbeat of %s (%s); it goes stale",
                        self.owner, type(exc).__name__)

    async def beat_once(self) -> None:
        now = utcnow()
        beat = Beat(self.owner, socket.gethostname(), os.getpid(), self.roles,
                    self.started_at, now, carrier_states(self.worker))
        async with self.db.begin() as conn:
            await heartbeats_repo.upsert(conn, beat)
            await heartbeats_repo.prune(conn, now - timedelta(seconds=PRUNE_AFTER * self.period))
        self.beats += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self._beat_logged()

    async def _beat_logged(self) -> None:
        try:
            await self.beat_once()
        except Exception as exc:  # an outage: one line per outage, not one per period
            if not self._failing:
                log.warning("heartbeat of %s not written (%s); trying every %.1f s",
                            self.owner, type(exc).__name__, self.period)
            self._failing = True
        else:
            if self._failing:
                log.info("heartbeat of %s written again", self.owner)
            self._failing = False


def carrier_states(worker: Any) -> dict[str, Any]:
    """The carriers of a delivery worker as they are now: availability, window, every bind."""
    out: dict[str, Any] = {}
    router = getattr(worker, "router", None)
    for name, carrier in getattr(router, "carriers", {}).items():
        status = getattr(carrier, "status", None)
        if callable(status):
            binds = [{"label": b.label, "type": str(b.bind_type), "state": b.state,
                      "detail": b.detail, "in_flight": b.in_flight} for b in status()]
        else:  # the built-in simulated carrier: no binds, up while it runs
            binds = [{"label": name, "type": "built-in",
                      "state": "bound" if carrier.available else "down", "detail": "",
                      "in_flight": 0}]
        window = getattr(getattr(carrier, "config", None), "window", None)
        out[name] = {"available": bool(carrier.available), "binds": binds,
                     "window": window if isinstance(window, int) else None}
    return out
