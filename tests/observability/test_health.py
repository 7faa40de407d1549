"""/healthz answers while the process lives; /readyz says whether it can do its work."""

from __future__ import annotations

from pathlib import Path

import httpx
from bench.procs import free_port

from tikosms.app import create_app
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.delivery.routing import Router, RouteRule
from tikosms.delivery.worker import DeliveryWorker
from tikosms.observability.health import readiness
from tikosms.observability.http import HealthServer
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import SmppCarrier


async def test_an_api_that_never_saw_a_worker_is_not_ready_and_says_so(
        client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["workers"].startswith("no worker heartbeat: no `tikosms worker` has been seen")


async def test_ready_when_the_database_answers_and_workers_are_not_required(
        settings: Settings, db: Database) -> None:
    app = create_app(settings.model_copy(update={"readyz_require_workers": False}), db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        r = await c.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_alive_but_not_ready_without_a_database(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db")
    db = Database(settings.database_url)
    app = create_app(settings, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
    await db.dispose()
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("unreachable")


async def test_the_old_health_route_still_answers(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json()["status"] == "ok"


async def test_a_carrier_without_a_bind_makes_the_worker_not_ready(
        db: Database, settings: Settings) -> None:
    carrier = SmppCarrier(SmppCarrierConfig(name="acme", host="127.0.0.1", port=free_port(),
                                            system_id="x", password="y", reconnect_initial=30))
    worker = DeliveryWorker(db, settings, Router({"acme": carrier}, [RouteRule("*", "acme", 0)]))
    await carrier.start(worker.on_receipt)
    try:
        result = await readiness(db, worker)
    finally:
        await carrier.stop()
    assert not result.ready
    assert result.checks["database"] == "ok"
    assert result.checks["carrier acme"].startswith("not bound")


async def test_the_worker_health_port_answers_probes_and_metrics(db: Database) -> None:
    port = free_port()
    server = HealthServer("127.0.0.1", port, db)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            alive = await c.get("/healthz")
            ready = await c.get("/readyz")
            scraped = await c.get("/metrics")
            missing = await c.get("/nothing")
    finally:
        await server.stop()
    assert alive.status_code == 200 and ready.status_code == 200
    assert "tikosms_queue_due_parts" in scraped.text
    assert missing.status_code == 404
