"""Liveness and readiness, in the Kubernetes style.

`/healthz` answers 200 while the process can answer at all: no dependency is asked, so a
database outage never gets every process restarted at once. `/readyz` answers 200 only when
the process can do its work: the database answers `SELECT 1` within READY_TIMEOUT seconds and,
where a delivery worker runs in the process (`tikosms serve`, `tikosms worker`), its loops are
running and every carrier it holds has a bind up; otherwise 503 with the reasons.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tikosms.db.engine import Database

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


async def readiness(db: Database | None, worker: Any = None,
                    dispatcher: Any = None) -> Readiness:
    timeout = READY_TIMEOUT
    result = Readiness()
    if db is not None:
        try:
            await asyncio.wait_for(_ping(db), timeout)
            result.checks["database"] = "ok"
        except TimeoutError:
            result.fail("database", f"no answer within {timeout:g} s")
        except Exception as exc:  # any failure to reach it is the answer, not an error
            result.fail("database", f"unreachable: {type(exc).__name__}")
    for name, runner in (("worker", worker), ("callbacks", dispatcher)):
        if runner is not None:
            stopped = _stopped_tasks(runner)
            if stopped:
                result.fail(name, "stopped: " + ", ".join(stopped))
            else:
                result.checks[name] = "ok"
    router = getattr(worker, "router", None)
    for carrier_name, carrier in getattr(router, "carriers", {}).items():
        if carrier.available:
            result.checks[f"carrier {carrier_name}"] = "ok"
        else:
            reason = getattr(carrier, "last_error", "") or "no bind up"
            result.fail(f"carrier {carrier_name}", f"not bound: {reason}")
    return result


async def _ping(db: Database) -> None:
    async with db.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")


def _stopped_tasks(runner: Any) -> list[str]:
    """The worker's (or dispatcher's) long-running loops that have ended: a loop that died of
    an error leaves the process up but doing nothing (its heartbeat has stopped)."""
    tasks = list(getattr(runner, "_tasks", None) or [])
    task = getattr(runner, "_task", None)
    if isinstance(task, asyncio.Task):
        tasks.append(task)
    return [t.get_name() for t in tasks if isinstance(t, asyncio.Task) and t.done()]
