"""Worker heartbeats across real processes (both databases): a `tikosms worker` bound to a
`tikosms smsc-sim`, and a `tikosms api` that runs no worker of its own. The API's /readyz and
console know the worker and its binds from its heartbeat alone; once the worker is SIGKILLed
its heartbeat goes stale and /readyz says so; a worker stopped cleanly removes its row."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from bench.procs import TIKOSMS, Process, free_port

from tests.console.conftest import login, make_operator
from tests.faults.smsc_proc import smsc_sim
from tikosms.db.engine import Database
from tikosms.delivery import carriers_repo, heartbeats_repo

PERIOD = 0.3  # seconds between heartbeats here: stale after 3 periods (0.9 s)
WAIT = 60.0  # seconds any state below may take to be reached (bounds the waits only)


def env_for(database_url: str, port: int | None = None) -> dict[str, str]:
    env = {"TIKOSMS_DATABASE_URL": database_url, "TIKOSMS_HOST": "127.0.0.1",
           "TIKOSMS_WORKER_HEARTBEAT_SECONDS": str(PERIOD), "TIKOSMS_IDLE_POLL_SECONDS": "0.2",
           "TIKOSMS_CARRIERS_RELOAD_SECONDS": "0.5"}
    if port is not None:
        env["TIKOSMS_PORT"] = str(port)
    return env


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll `check` (async, returns a value or None) until it returns something."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {WAIT:g} s")


@asynccontextmanager
async def carrier_and_api(database_url: str, tmp_path: Path
                          ) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    """An SMSC simulator stored as carrier `acme` (route *), an operator, a `tikosms api`."""
    db = Database(database_url)
    with smsc_sim(tmp_path) as sim:
        async with db.begin() as conn:
            await carriers_repo.add_carrier(conn, name="acme", host="127.0.0.1",
                                            port=sim.port, system_id="tiko",
                                            password="secret", settings={"binds": 2})
            await carriers_repo.add_route(conn, match="*", carrier="acme")
        await make_operator(db)
        port = free_port()
        with Process([TIKOSMS, "api"], tmp_path / "api.log", env_for(database_url, port),
                     port):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                         timeout=10) as http:
                try:
                    yield http, db
                finally:
                    await db.dispose()


def _acme_row(page: str) -> str:
    return page.split("data-carrier=\"acme\"", 1)[1].split("</tr>", 1)[0]


async def test_api_readiness_follows_a_worker_in_another_process_until_it_is_killed(
        database_url: str, tmp_path: Path) -> None:
    async with carrier_and_api(database_url, tmp_path) as (http, _db):
        before = (await http.get("/readyz")).json()
        worker = Process([TIKOSMS, "worker"], tmp_path / "worker.log", env_for(database_url))
        with worker:
            async def ready() -> dict | None:
                r = await http.get("/readyz")
                return r.json() if r.status_code == 200 else None

            up = await until(ready, "/readyz 200 with the worker bound")
            await login(http)

            async def both_binds_shown() -> str | None:
                # ready needs one bind of acme; its second may bind a heartbeat later
                page = (await http.get("/admin/carriers")).text
                return page if _acme_row(page).count("state-bound") == 2 else None

            carriers_page = await until(both_binds_shown, "both binds of acme on the console")
            overview = (await http.get("/admin")).text
            pid = worker.pid
            worker.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            worker.proc.wait(10)  # type: ignore[union-attr]

            async def not_ready() -> dict | None:
                r = await http.get("/readyz")
                return r.json() if r.status_code == 503 else None

            down = await until(not_ready, "/readyz 503 after the worker was killed")
            after_kill = (await http.get("/admin")).text
    assert before["status"] == "not ready"
    assert before["checks"]["workers"].startswith("no worker heartbeat")
    assert up["checks"] == {"database": "ok", "workers": "ok: 1 fresh", "carrier acme": "ok"}
    # the console, in a process without a worker, shows the worker and both binds of acme
    assert f"<td class=\"num\">{pid}</td>" in carriers_page
    assert _acme_row(carriers_page).count("state-bound") == 2
    assert overview.count('<tr data-bind="acme">') == 2 and "delivery, callbacks" in overview
    assert down["checks"]["database"] == "ok"
    assert down["checks"]["workers"].startswith("no fresh worker heartbeat: last seen")
    assert f"pid {pid}" in down["checks"]["workers"]
    assert down["checks"]["carrier acme"] == "not bound: no fresh delivery worker holds it"
    assert "(stale)" in after_kill and '<tr data-bind="acme">' not in after_kill


async def test_a_worker_stopped_cleanly_removes_its_heartbeat(database_url: str,
                                                              tmp_path: Path) -> None:
    async with carrier_and_api(database_url, tmp_path) as (http, db):
        worker = Process([TIKOSMS, "worker", "--only", "delivery"], tmp_path / "worker.log",
                         env_for(database_url))
        with worker:
            async def rows() -> list | None:
                async with db.connect() as conn:
                    return await heartbeats_repo.all_beats(conn) or None

            seen = await until(rows, "the worker's heartbeat row")
            worker.stop()  # SIGTERM
            code = worker.proc.returncode  # type: ignore[union-attr]
        async with db.connect() as conn:
            left = await heartbeats_repo.all_beats(conn)
        ready = await http.get("/readyz")
    assert [(b.pid, b.roles) for b in seen] == [(worker.pid, ("delivery",))]
    assert code == 0 and left == []
    assert ready.status_code == 503
    assert ready.json()["checks"]["workers"].startswith("no worker heartbeat")
