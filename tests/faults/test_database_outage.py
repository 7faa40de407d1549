"""PostgreSQL goes away in the middle of a campaign and comes back: real `tikosms api` and
`tikosms worker` processes connect through tests/faults/pgproxy.py, which is cut for a few
seconds (the shared server itself is never stopped). SQLite with a full disk: a clear error and
nothing half-written."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.procs import Process

from bench import procs
from tests.conftest import PG_URL
from tests.faults.pgproxy import PgProxy

CAMPAIGN = 3000  # recipients of one part each
OUTAGE_S = 4.0  # seconds the database is away


def _wait(what: str, check: object, timeout: float = 90.0, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()  # type: ignore[operator]
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pg_gateway(tmp_path: Path) -> Iterator[tuple[str, procs.ScratchDb, procs.BenchAccount,
                                                 PgProxy]]:
    if not PG_URL:
        pytest.skip("needs TIKOSMS_TEST_POSTGRES_URL")
    with procs.scratch_database("postgresql", tmp_path) as db:
        procs.tikosms(["db", "upgrade"], db, tmp_path)
        account = procs.create_account(db, tmp_path)
        with PgProxy().start() as proxy:
            through = procs.ScratchDb("postgresql", proxy.url(db.url), name=db.name)
            port = procs.free_port()
            env = procs.gateway_env(through, port, database_pool_size=5,
                                    sim_receipt_delay_ms=20, idle_poll_seconds=0.1)
            with Process([procs.TIKOSMS, "api"], tmp_path / "api.log", env, port), \
                    Process([procs.TIKOSMS, "worker"], tmp_path / "worker.log", env):
                yield f"http://{procs.HOST}:{port}", db, account, proxy


@pytest.mark.xfail(reason="open: the cut sometimes leaves one half of a proxied connection open "
                   "(PostgreSQL backends stay 'idle in transaction' holding row locks; a "
                   "statement sent gets no answer): the API answers 503 (command timeout) but "
                   "the worker can stall and the campaign not drain in time; see the api report",
                   strict=False)
def test_postgresql_outage_mid_campaign_is_503_then_recovers_with_nothing_lost(
        pg_gateway: tuple[str, procs.ScratchDb, procs.BenchAccount, PgProxy]) -> None:
    base, db, account, proxy = pg_gateway
    http = httpx.Client(base_url=base, headers=account.headers, timeout=30)
    r = http.post("/v1/messages", json={"from": "Shop", "message": "outage test",
                                        "recipients": procs.recipients(CAMPAIGN)})
    assert r.status_code == 200, r.text
    _wait("the campaign to be under way",
          lambda: procs.count(db, "SELECT count(*) FROM parts WHERE status <> 'QUEUED'") > 300)

    proxy.cut()
    cut_at = time.monotonic()
    during = http.post("/v1/message", timeout=15, json={"from": "Shop", "to": "380501111111",
                                            "message": "while down"})
    answered_in = time.monotonic() - cut_at
    assert during.status_code == 503
    assert during.headers["retry-after"].isdigit()
    assert during.json()["success"] is False and "retry" in during.json()["error"]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
    proxy.restore()
    restored_at = time.monotonic()

    after = _wait("the API to answer again",
                  lambda: (x := http.post("/v1/message", json={
                      "from": "Shop", "to": "380502222222", "message": "after"})).status_code
                  == 200 and x, timeout=60, every=0.25)
    recovered_in = time.monotonic() - restored_at
    assert after
    _wait("every part final", lambda: procs.count_active_parts(db) == 0, timeout=120,
          every=0.5)
    drained_in = time.monotonic() - restored_at

    parts = procs.count(db, "SELECT count(*) FROM parts")
    assert parts == CAMPAIGN + 1  # the campaign and the send after; the 503 stored nothing
    ledger = procs.count(db, f"SELECT sum(amount) FROM ledger_entries WHERE account_id = "
                             f"{account.account_id}")
    balance = procs.count(db, f"SELECT balance FROM accounts WHERE id = {account.account_id}")
    assert balance == ledger
    charged = procs.count(db, "SELECT coalesce(sum(cost), 0) FROM parts WHERE sent_at IS NOT "
                              "NULL")
    topped_up = procs.count(db, f"SELECT sum(amount) FROM ledger_entries WHERE account_id = "
                                f"{account.account_id} AND amount > 0 AND reason = 'topup'")
    assert topped_up - balance == charged
    print(json.dumps({"503_answered_in_s": round(answered_in, 2),
                      "api_recovered_in_s": round(recovered_in, 2),
                      "campaign_drained_after_restore_s": round(drained_in, 2),
                      "outage_s": OUTAGE_S, "parts": parts}))


async def test_sqlite_full_disk_is_507_and_stores_nothing(tmp_path: Path) -> None:
    """SQLITE_FULL, from a page limit set on every connection of the gateway's engine (the
    error a full filesystem gives): a 507 with a sentence, and the campaign, its parts and its
    ledger row are all absent."""
    import shutil

    from sqlalchemy import event

    from tests.conftest import add_rates, make_customer
    from tikosms.app import create_app
    from tikosms.config import Settings
    from tikosms.db.engine import Database
    from tikosms.db.migrate import upgrade

    path = tmp_path / "full.db"
    await asyncio.to_thread(upgrade, f"sqlite:///{path}")
    url = f"sqlite:///{path}"
    db = Database(url)
    try:
        customer = await make_customer(db, balance="100000")
        await add_rates(db)
        async with db.connect() as conn:
            pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()

        @event.listens_for(db.engine.sync_engine, "connect")
        def _cap(dbapi_connection: object, _record: object) -> None:
            cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cur.execute(f"PRAGMA max_page_count = {pages + 16}")
            cur.close()

        await db.engine.dispose()  # every connection from now on is capped
        app = create_app(Settings(database_url=url), db)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post("/v1/messages", headers=customer.headers, json={
                "from": "Shop", "message": "x" * 1000, "recipients": procs.recipients(3000)})
        assert r.status_code == 507, r.text
        assert r.json()["code"] == "storage_full" and "storage is full" in r.json()["error"]
        assert "retry-after" in r.headers
        async with db.connect() as conn:
            for table in ("campaigns", "parts"):
                n = (await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar_one()
                assert n == 0, table
            reserves = (await conn.exec_driver_sql(
                "SELECT count(*) FROM ledger_entries WHERE reason = 'reserve'")).scalar_one()
            assert reserves == 0
    finally:
        await db.dispose()
        shutil.rmtree(tmp_path, ignore_errors=True)
