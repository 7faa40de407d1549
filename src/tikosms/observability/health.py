"""Liveness and readiness, in the Kubernetes style.

`/healthz` answers 200 while the process can answer at all: no dependency is asked, so a
database outage never gets every process restarted at once. `/readyz` answers 200 only when
the process can do its work: the database answers `SELECT 1` within READY_TIMEOUT seconds and,
where a delivery worker runs in the process (`tikosms serve`, `tikosms worker`), its loops are
running and every carrier it holds has a bind up; otherwise 503 with the reasons.

The API processes also read the workers' heartbeats (`delivery.heartbeat`), so a `tikosms api`
with its workers in other processes or on other hosts knows whether they are alive: at least
one fresh heartbeat, and every enabled carrier bound by at least one fresh delivery worker
(`Workers`; off with `readyz_require_workers=false` for an API deployed without workers).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.delivery import carriers_repo, heartbeats_repo
from tikosms.delivery.heartbeat import stale_after
from tikosms.delivery.heartbeats_repo import Beat
from tikosms.delivery.simulated import NAME as SIMULATED

READY_TIMEOUT = 2.0  # seconds the database gets to answer a readiness check


@dataclass(slots=True)
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or the reason
    ready: bool = True

    def fail(self, name: str, reason: str) -> None:
        self.checks[name] = reason
        self.ready = False

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not ready", "checks": self.checks}


@dataclass(frozen=True, slots=True)
class Workers:
    """Readiness asks the heartbeats: a worker is fresh while seen within `stale_after` s."""

    stale_after: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Workers | None:
        if not settings.readyz_require_workers:
            return None
        return cls(stale_after(settings))


async def readiness(db: Database | None, worker: Any = None,
                    dispatcher: Any = None, workers: Workers | None = None) -> Readiness:
    timeout = READY_TIMEOUT
    result = Readiness()
    if db is not None:
        try:
            beats, wanted = await asyncio.wait_for(_read(db, workers), timeout)
            result.checks["database"] = "ok"
        except TimeoutError:
            result.fail("database", f"no answer within {timeout:g} s")
        except Exception as exc:  # any failure to reach it is the answer, not an error
            result.fail("database", f"unreachable: {type(exc).__name__}")
        else:
            if workers is not None:
                _check_heartbeats(result, beats, wanted, workers.stale_after)
    for name, runner in (("worker", worker), ("callbacks", dispatcher)):
        if runner is not None:
            stopped = _stopped_tasks(runner)
            if stopped:
                result.fail(name, "stopped: " + ", ".join(stopped))
            else:
                result.checks[name] = "ok"
    router = getattr(worker, "router", None) if workers is None else None  # else: heartbeats
    for carrier_name, carrier in getattr(router, "carriers", {}).items():
        if carrier.available:
            result.checks[f"carrier {carrier_name}"] = "ok"
        elif getattr(carrier, "managed", False) and not getattr(carrier, "open_slots", None):
            # bind slots: other workers hold this carrier's binds; this one waits its turn
            result.checks[f"carrier {carrier_name}"] = "no slot held (other workers bind)"
        else:
            reason = getattr(carrier, "last_error", "") or "no bind up"
            result.fail(f"carrier {carrier_name}", f"not bound: {reason}")
    return result


async def _read(db: Database, workers: Workers | None) -> tuple[list[Beat], list[str]]:
    """`SELECT 1`, and with `workers` the heartbeats and the carriers that should be bound
    (the enabled ones; the built-in simulated carrier when none is configured at all)."""
    async with db.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
        if workers is None:
            return [], []
        beats = await heartbeats_repo.all_beats(conn)
        rows = await carriers_repo.list_carriers(conn)
    wanted = [r.name for r in rows if r.enabled] if rows else [SIMULATED]
    return beats, wanted


def _check_heartbeats(result: Readiness, beats: list[Beat], wanted: list[str],
                      stale_after: float) -> None:
    now = utcnow()
    fresh = [b for b in beats if b.fresh(now, stale_after)]
    if fresh:
        result.checks["workers"] = f"ok: {len(fresh)} fresh"
    elif beats:
        last = beats[0]
        ago = (now - last.seen_at).total_seconds()
        result.fail("workers", f"no fresh worker heartbeat: last seen {ago:.0f} s ago "
                               f"({last.host} pid {last.pid}; stale after {stale_after:g} s)")
    else:
        result.fail("workers", "no worker heartbeat: no `tikosms worker` has been seen "
                               "(TIKOSMS_READYZ_REQUIRE_WORKERS=false for an API without workers)")
    delivering = [b for b in fresh if b.delivers]
    for name in wanted:
        held = [b.carriers[name] for b in delivering if isinstance(b.carriers.get(name), dict)]
        if any(c.get("available") for c in held):
            result.checks[f"carrier {name}"] = "ok"
        elif held:
            details = [bind.get("detail") or bind.get("state", "")
                       for c in held for bind in c.get("binds", [])]
            reason = next((d for d in details if d), "no bind up")
            result.fail(f"carrier {name}", f"not bound: {reason}")
        else:
            result.fail(f"carrier {name}", "not bound: no fresh delivery worker holds it")


def _stopped_tasks(runner: Any) -> list[str]:
    """The worker's (or dispatcher's) long-running loops that have ended: a loop that died of
    an error leaves the process up but doing nothing (its heartbeat has stopped)."""
    tasks = list(getattr(runner, "_tasks", None) or [])
    task = getattr(runner, "_task", None)
    if isinstance(task, asyncio.Task):
        tasks.append(task)
    return [t.get_name() for t in tasks if isinstance(t, asyncio.Task) and t.done()]
