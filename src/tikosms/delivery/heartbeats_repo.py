"""The worker_heartbeats table: every worker process's row (see `delivery.heartbeat`).

A handful of rows (one per worker process), so every read takes them all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import WorkerHeartbeat


@dataclass(frozen=True, slots=True)
class Beat:
    """One worker's heartbeat as written or read; `carriers` as in WorkerHeartbeat.carriers."""

    owner: str
    host: str
    pid: int
    roles: tuple[str, ...]
    started_at: datetime
    seen_at: datetime
    carriers: dict[str, Any]

    def fresh(self, now: datetime, stale_after: float) -> bool:
        return (now - self.seen_at).total_seconds() <= stale_after

    @property
    def delivers(self) -> bool:
        return "delivery" in self.roles


async def upsert(conn: AsyncConnection, beat: Beat) -> None:
    values = {"owner": beat.owner, "host": beat.host, "pid": beat.pid,
              "roles": ",".join(beat.roles), "started_at": beat.started_at,
              "seen_at": beat.seen_at, "carriers": json.dumps(beat.carriers, sort_keys=True)}
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(WorkerHeartbeat).values(**values)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[WorkerHeartbeat.owner],
        set_={k: stmt.excluded[k] for k in values if k != "owner"}))


async def remove(conn: AsyncConnection, owner: str) -> None:
    await conn.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.owner == owner))


async def prune(conn: AsyncConnection, not_seen_since: datetime) -> int:
    """Delete the rows of workers not seen since then (killed, or their host lost)."""
    result = await conn.execute(
        delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < not_seen_since))
    return int(result.rowcount or 0)


async def all_beats(conn: AsyncConnection) -> list[Beat]:
    """Every row, the most recently seen first."""
    rows: Sequence[Any] = (await conn.execute(
        select(WorkerHeartbeat).order_by(WorkerHeartbeat.seen_at.desc(),
                                         WorkerHeartbeat.owner))).all()
    return [_beat(r) for r in rows]


def _beat(row: Any) -> Beat:
    try:
        carriers = json.loads(row.carriers or "{}")
    except ValueError:
        carriers = {}
    return Beat(row.owner, row.host, row.pid, tuple(x for x in row.roles.split(",") if x),
                row.started_at, row.seen_at, carriers if isinstance(carriers, dict) else {})
