"""PostgreSQL goes away in the middle of a campaign and comes back, with real `tikosms api`,
`tikosms worker` and `tikosms smsc-sim` processes. The server is a private cluster of the test
(tests/faults/pgcluster.py; the shared server is never stopped), so the outage is the real
thing:

- `stop -m fast`, then start: what an operator's restart does (backends terminated, their
  transactions rolled back);
- `stop -m immediate`, then start: a server crash (backends killed, WAL replayed);
- a network cut (tests/faults/pgproxy.py between the gateway and the server closes both sides
  of every connection and refuses new ones, then lets them through again).

While it is down every request that needs the database is a 503 with Retry-After; afterwards
the API answers again and the worker resumes, both without a restart; every part ends final,
none is lost, none is sent twice (counted at the SMSC), and each account's ledger is exact.

SQLite with a full disk: a clear error and nothing half-written.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from bench.procs import Process

from bench import procs
from tests.conftest import PG_URL
from tests.faults import pgcluster
from tests.faults.pgcluster import PgCluster
from tests.faults.pgproxy import PgProxy

CAMPAIGN = 3000  # recipients of one part each
OUTAGE_S = 4.0  # seconds the database is away
LEASE_S = 5  # a claim whose answer the outage swallowed goes back to the queue after this
WINDOW, BINDS = 50, 1
SUBMITS = re.compile(r"submits=(\d+)")


def _wait(what: str, check: object, timeout: float = 90.0, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()  # type: ignore[operator]
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _value(url: str, sql: str) -> object:
    """One value read straight from the database, outside the gateway (Decimal kept)."""
    async def go() -> object:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def _diagnosis(url: str) -> str:
    """What the parts and the server's sessions look like (printed when a wait fails)."""
    async def go() -> str:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            parts = await conn.fetch(
                "SELECT status, lease_owner IS NOT NULL AS leased, lease_until < now() AS "
                "lapsed, count(*) FROM parts GROUP BY 1, 2, 3")
            sessions = await conn.fetch(
                "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS xact, "
                "left(query, 80) AS query FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid()")
            pending = await conn.fetch("SELECT count(*) AS pending_receipts FROM "
                                       "pending_receipts")
            return "\n".join(str(dict(r)) for r in [*parts, *sessions, *pending])
        finally:
            await conn.close()

    return asyncio.run(go())


@dataclass
class Gateway:
    base: str
    url: str  # straight to the server (the test's own reads)
    campaigner: procs.BenchAccount  # sends the campaign
    other: procs.BenchAccount  # single sends before, during and after
    api: Process
    worker: Process
    sim: Process
    down: Callable[[], None]  # the outage begins
    up: Callable[[], None]  # and ends


def _cli(db: procs.ScratchDb, tmp: Path, *args: str) -> str:
    return procs.tikosms(list(args), db, tmp)


@pytest.fixture(params=["stop-fast", "stop-immediate", "network-cut"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    why = pgcluster.unavailable()
    if why:
        pytest.skip(f"needs a private PostgreSQL cluster: {why}")
    with ExitStack() as stack:
        pg = stack.enter_context(PgCluster(tmp_path))
        pg.create_database("tikosms")
        direct = procs.ScratchDb("postgresql", pg.url("tikosms"), name="tikosms")
        _cli(direct, tmp_path, "db", "upgrade")
        campaigner = procs.create_account(direct, tmp_path)
        other = json.loads(_cli(direct, tmp_path, "accounts", "create", "--name", "Other",
                                "--balance", "1000", "--json"))
        other_account = procs.BenchAccount(int(other["account_id"]), other["token"])
        sim_port = procs.free_port()
        sim = stack.enter_context(Process(
            [procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--latency-ms", "5",
             "--receipt-delay-ms", "50", "--stats-interval", "0"],
            tmp_path / "smsc-sim.log", port=sim_port))
        _cli(direct, tmp_path, "carriers", "add", "sim", "--host", "127.0.0.1", "--port",
             str(sim_port), "--system-id", "tiko", "--password", "pw", "--window",
             str(WINDOW), "--binds", str(BINDS))
        _cli(direct, tmp_path, "routes", "add", "--match", "*", "--carrier", "sim")

        through = direct
        if request.param == "network-cut":
            proxy = stack.enter_context(PgProxy("127.0.0.1", pg.port))
            through = procs.ScratchDb("postgresql", proxy.url(direct.url), name="tikosms")
            down, up = proxy.cut, proxy.restore
        else:
            mode = request.param.removeprefix("stop-")
            def down() -> None:
                pg.stop(mode)
            up = pg.start
        port = procs.free_port()
        env = procs.gateway_env(through, port, database_pool_size=5, lease_seconds=LEASE_S,
                                idle_poll_seconds=0.1, log_level="WARNING")
        api = stack.enter_context(Process([procs.TIKOSMS, "api"], tmp_path / "api.log", env,
                                          port))
        worker = stack.enter_context(Process([procs.TIKOSMS, "worker"],
                                             tmp_path / "worker.log", env))
        yield Gateway(f"http://{procs.HOST}:{port}", direct.url, campaigner, other_account,
                      api, worker, sim, down, up)


@pytest.mark.slow
def test_postgresql_outage_mid_campaign_is_503_then_recovers_with_nothing_lost(
        gateway: Gateway) -> None:
    g = gateway
    http = httpx.Client(base_url=g.base, timeout=30)

    def single(to: str, text: str, timeout: float = 30) -> httpx.Response:
        return http.post("/v1/message", headers=g.other.headers, timeout=timeout,
                         json={"from": "Shop", "to": to, "message": text})

    assert single("380501111110", "before").status_code == 200
    r = http.post("/v1/messages", headers=g.campaigner.headers, json={
        "from": "Shop", "message": "outage test", "recipients": procs.recipients(CAMPAIGN)})
    assert r.status_code == 200, r.text
    _wait("the campaign to be under way", lambda: int(_value(  # type: ignore[call-overload]
        g.url, "SELECT count(*) FROM parts WHERE status <> 'QUEUED'")) > CAMPAIGN // 5)

    g.down()
    cut_at = time.monotonic()
    during = [single(f"38050222{i:04d}", "while down", timeout=15) for i in range(3)]
    during.append(http.post("/v1/messages", headers=g.campaigner.headers, timeout=15, json={
        "from": "Shop", "message": "while down", "recipients": procs.recipients(10, 500_000)}))
    during.append(http.get("/v1/balance", headers=g.other.headers, timeout=15))
    answered_in = time.monotonic() - cut_at
    for answer in during:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"].isdigit()
        assert answer.json()["success"] is False and "retry" in answer.json()["error"]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))  # the outage itself
    g.up()
    restored_at = time.monotonic()

    after = _wait("the API to answer again",
                  lambda: (x := single("380503333333", "after")).status_code == 200 and x,
                  timeout=60, every=0.25)
    recovered_in = time.monotonic() - restored_at
    assert after
    try:
        _wait("every part final", lambda: int(_value(  # type: ignore[call-overload]
            g.url, "SELECT count(*) FROM parts WHERE status IN ('SCHEDULED', 'QUEUED', "
                   "'ENROUTE')")) == 0, timeout=180, every=0.5)
    except AssertionError:
        print(_diagnosis(g.url))
        raise
    drained_in = time.monotonic() - restored_at

    # recovered by themselves: the same processes, still running
    assert g.api.proc is not None and g.api.proc.poll() is None
    assert g.worker.proc is not None and g.worker.proc.poll() is None
    worker_log = g.worker.log.read_text()
    assert " died: " not in worker_log, worker_log[-3000:]  # no task of the worker ended

    # nothing lost: the campaign, the sends before and after; the 503s stored nothing
    assert _value(g.url, "SELECT count(*) FROM parts") == CAMPAIGN + 2
    assert _value(g.url, "SELECT count(*) FROM parts WHERE status <> 'DELIVRD'") == 0

    # nothing sent twice: submit_sm counted at the SMSC
    g.sim.stop()
    submits = int(SUBMITS.findall(g.sim.log.read_text())[-1])
    duplicates = submits - (CAMPAIGN + 2)
    assert duplicates == 0, f"{duplicates} parts sent twice"

    # the ledger exact, per account: balance = sum of its ledger = top-up - cost of its parts
    for account in (g.campaigner, g.other):
        a = account.account_id
        balance = _value(g.url, f"SELECT balance FROM accounts WHERE id = {a}")
        ledger = _value(g.url, f"SELECT sum(amount) FROM ledger_entries WHERE account_id = {a}")
        topped = _value(g.url, f"SELECT sum(amount) FROM ledger_entries WHERE account_id = {a}"
                               " AND reason = 'topup'")
        cost = _value(g.url, f"SELECT sum(cost) FROM parts WHERE account_id = {a}")
        # Money columns hold integers of millionths
        balance, ledger, topped, cost = (Decimal(str(x)) for x in (balance, ledger, topped, cost))
        assert balance == ledger, (a, balance, ledger)
        assert topped - balance == cost, (a, topped, balance, cost)
    print(json.dumps({"503_answered_in_s": round(answered_in, 2),
                      "api_recovered_in_s": round(recovered_in, 2),
                      "campaign_drained_after_restore_s": round(drained_in, 2),
                      "outage_s": OUTAGE_S, "parts": CAMPAIGN + 2, "submits": submits}))


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


@pytest.mark.skipif(not PG_URL, reason="needs TIKOSMS_TEST_POSTGRES_URL")
async def test_postgresql_connections_carry_the_server_timeouts_and_tcp_keepalive() -> None:
    import socket

    from tikosms.db.engine import Database

    assert PG_URL
    db = Database(PG_URL, idle_in_transaction_timeout=30, tcp_keepalive=9)
    try:
        async with db.connect() as conn:
            shown = {name: (await conn.exec_driver_sql(f"SHOW {name}")).scalar_one() for name in
                     ("idle_in_transaction_session_timeout", "tcp_keepalives_idle",
                      "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")}
            raw = await conn.get_raw_connection()
            sock = raw.driver_connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 9
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 18000
    finally:
        await db.dispose()
    assert shown == {"idle_in_transaction_session_timeout": "30s", "tcp_keepalives_idle": "9",
                     "tcp_keepalives_interval": "3", "tcp_keepalives_count": "3",
                     "tcp_user_timeout": "18000"}  # milliseconds


@pytest.mark.skipif(not PG_URL, reason="needs TIKOSMS_TEST_POSTGRES_URL")
async def test_postgresql_never_jit_compiles_the_gateways_statements() -> None:
    """A claim whose estimated cost passed jit_above_cost spent ~1 s compiling for 3 ms of
    work once `parts` had grown (engine.server_settings); the pool's and the wake-up
    listener's connections both come up with JIT off."""
    from tikosms.db.engine import Database, server_settings

    assert PG_URL
    db = Database(PG_URL)
    try:
        async with db.connect() as conn:
            assert (await conn.exec_driver_sql("SHOW jit")).scalar_one() == "off"
            # estimated at 10^9 rows (planned, not run): far above every jit_*_cost
            plan = "\n".join(r[0] for r in await conn.exec_driver_sql(
                "EXPLAIN SELECT sum(a.g * b.g * c.g) FROM generate_series(1, 1000) a(g), "
                "generate_series(1, 1000) b(g), generate_series(1, 1000) c(g)"))
        assert "JIT" not in plan
    finally:
        await db.dispose()
    assert server_settings()["jit"] == "off"  # the LISTEN connection's (delivery.notify)


@pytest.mark.skipif(not PG_URL, reason="needs TIKOSMS_TEST_POSTGRES_URL")
async def test_a_worker_statement_left_without_an_answer_fails_and_the_next_one_works() -> None:
    """A statement that waits on a lock held elsewhere (as behind a session left idle in
    transaction) fails at the worker's command timeout instead of holding it for good."""
    from tikosms.db.engine import Database

    assert PG_URL
    holder = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    key = 0x71C0_5A5A
    db = Database(PG_URL, pool_size=1, command_timeout=0.5)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        with pytest.raises(TimeoutError):
            async with db.begin() as conn:
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
        async with db.begin() as conn:  # the same pool, the same single connection slot
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")
    finally:
        await holder.close()
        await db.dispose()
