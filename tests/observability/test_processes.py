"""Metrics across real processes on PostgreSQL: two `tikosms api` processes behind one port
and a `tikosms worker --health-port`, scraped during and after a campaign of single sends;
what they count must agree with the database."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from bench.procs import TIKOSMS, Process, free_port, wait_port

from tests.conftest import PG_URL, add_rates, make_customer
from tikosms.db.engine import Database

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TIKOSMS_TEST_POSTGRES_URL)"),
    pytest.mark.slow,
]

MESSAGES = 30
WAIT = 120.0  # seconds the campaign may take to be delivered (bounds the wait only)


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of a series' samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


async def db_count(db: Database, sql: str) -> int:
    async with db.connect() as conn:
        return int((await conn.exec_driver_sql(sql)).scalar_one())


async def test_two_api_processes_and_a_worker_count_what_the_database_holds(
        database_url: str, tmp_path: Path) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes need PostgreSQL")
    db = Database(database_url)
    await add_rates(db)
    customer = await make_customer(db)
    api_port, health_port = free_port(), free_port()
    env = {"TIKOSMS_DATABASE_URL": database_url, "TIKOSMS_HOST": "127.0.0.1",
           "TIKOSMS_PORT": str(api_port), "TIKOSMS_SIM_RECEIPT_DELAY_MS": "20",
           "TIKOSMS_METRICS_DATABASE_SECONDS": "0"}
    api = Process([TIKOSMS, "api", "--processes", "2"], tmp_path / "api.log", env, api_port)
    worker = Process([TIKOSMS, "worker", "--health-port", str(health_port)],
                     tmp_path / "worker.log", env)
    try:
        with api, worker:
            wait_port(health_port, worker.proc)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
                for i in range(MESSAGES):  # new connections: both processes get some
                    r = await http.post("/v1/message", headers={
                        **customer.headers, "Connection": "close"}, json={
                        "from": "TikoSMS", "to": f"38050{i:07d}", "message": "hi"})
                    assert r.status_code == 200, r.text
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                while loop.time() < deadline:
                    if not await db_count(db, "SELECT count(*) FROM parts WHERE status "
                                              "<> 'DELIVRD'"):
                        break
                    await asyncio.sleep(0.2)
                api_text = (await http.get("/metrics")).text
                worker_text = (await http.get(f"http://127.0.0.1:{health_port}/metrics")).text
                ready = await http.get(f"http://127.0.0.1:{health_port}/readyz")
    finally:
        await db.dispose()
        db = Database(database_url)
    messages = await db_count(db, "SELECT count(*) FROM parts")
    delivered = await db_count(db, "SELECT count(*) FROM parts WHERE status = 'DELIVRD'")
    await db.dispose()
    assert messages == MESSAGES and delivered == MESSAGES
    # every API process's sends are in one scrape (multiprocess mode), none twice
    assert sample_sum(api_text, "tikosms_http_requests_total", route="/v1/message",
                      status="200") == MESSAGES
    pids = set(re.findall(r"^tikosms_http_requests_total.*pid", api_text, re.M))
    assert not pids  # counters are summed over processes, not labelled by pid
    # every send went through the group commit of one of the two API processes
    assert sample_sum(api_text, "tikosms_send_batch_size_sum") == MESSAGES
    # a series without labels of a one-process command: made at import, before the files
    # were set up, it never reached a scrape until metrics._use_files made it anew (the API's
    # processes above are spawned with the directory set, so they never had the problem)
    assert "tikosms_callback_attempt_seconds_count" in worker_text
    assert sample_sum(worker_text, "tikosms_submits_total", result="accepted") == delivered
    assert sample_sum(worker_text, "tikosms_receipts_total", status="DELIVRD") == delivered
    assert sample_sum(worker_text, "tikosms_submit_to_receipt_seconds_count") == delivered
    assert sample_sum(api_text, "tikosms_parts", status="DELIVRD") == delivered
    assert sample_sum(worker_text, "tikosms_queue_due_parts") == 0
    assert ready.status_code == 200, ready.text


def test_api_processes_serve_health_and_readiness(database_url: str, tmp_path: Path) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes need PostgreSQL")
    port = free_port()
    env = {"TIKOSMS_DATABASE_URL": database_url, "TIKOSMS_HOST": "127.0.0.1",
           "TIKOSMS_PORT": str(port)}
    with Process([TIKOSMS, "api", "--processes", "2"], tmp_path / "api.log", env, port):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        r = httpx.get(f"http://127.0.0.1:{port}/readyz")
    # no worker runs anywhere: not ready, and the reason says so
    assert r.status_code == 503 and r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["workers"].startswith("no worker heartbeat")
    port = free_port()
    env = {**env, "TIKOSMS_PORT": str(port), "TIKOSMS_READYZ_REQUIRE_WORKERS": "false"}
    with Process([TIKOSMS, "api", "--processes", "2"], tmp_path / "api2.log", env, port):
        r = httpx.get(f"http://127.0.0.1:{port}/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok"}
