"""A fleet on one PostgreSQL (issue 13, item 5): three `tikosms worker` processes and two
`tikosms api` processes, one carrier allowing two binds at 300 parts/s against `tikosms
smsc-sim`, a campaign of 50,000 parts sent through the API.

Checked at the SMSC (the simulator's counters, read over its control port): never more than two
binds at once, never more than the agreed rate in any second (a sliding second, 10% allowed
for bursts), and the parts sent twice bounded by the dead worker's gate (two windows of the
carrier's binds, as in test_worker_crash.py). One slot holder is killed with SIGKILL a third of
the way in: the worker that held no slot takes its slot over within about the slot lease
(15 s), binds, and the campaign finishes; every part DELIVRD, the balance equal to the ledger.

About three minutes: 50,000 parts at 300/s is ~170 s.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from bench.procs import TIKOSMS, Process, free_port
from sqlalchemy import func, select

from tests.conftest import PG_URL, add_rates, make_customer
from tests.delivery.test_worker_processes import Worker, statuses, wait_for, wait_until_running
from tests.faults.test_worker_crash import _cli
from tikosms.db.engine import Database
from tikosms.db.models import Account, LedgerEntry
from tikosms.db.types import utcnow
from tikosms.delivery import slots_repo

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TIKOSMS_TEST_POSTGRES_URL)"),
    pytest.mark.slow,
]

# the fixtures of the worker process tests (pg_url, start_worker)
from tests.delivery.test_worker_processes import pg_url, start_worker  # noqa: E402, F401

PARTS = 50_000
BINDS = 2  # the carrier's allowed binds: the slots
TPS = 300.0  # the agreed rate of the whole account
WINDOW = 50
BURST = 1.10  # the most in any one second, over the agreed rate
SLOT_LEASE = 15.0  # seconds (the default)
TAKE_OVER_WITHIN = SLOT_LEASE + 5  # lease end + a look (1 s) + margin for a loaded machine
DELIVERY_TIMEOUT = 420.0  # seconds: bounds the wait (~170 s at the agreed rate), no speed test


async def test_a_fleet_keeps_to_the_carriers_binds_and_rate_through_a_killed_holder(
    db: Database, pg_url: str, tmp_path: Path,  # noqa: F811
    start_worker: Callable[..., Worker],  # noqa: F811
) -> None:
    sim_port, control = free_port(), free_port()
    sim_args = [TIKOSMS, "smsc-sim", "--port", str(sim_port), "--control-port", str(control),
                "--latency-ms", "5", "--receipt-delay-ms", "50", "--stats-interval", "0"]
    apis = [free_port(), free_port()]
    api_env = {"TIKOSMS_DATABASE_URL": pg_url, "TIKOSMS_LOG_LEVEL": "WARNING"}
    with Process(sim_args, tmp_path / "sim.log", port=sim_port):
        _cli(pg_url, "carriers", "add", "fleet", "--host", "127.0.0.1", "--port", str(sim_port),
             "--system-id", "tiko", "--password", "pw", "--binds", str(BINDS),
             "--tps", str(TPS), "--window", str(WINDOW))
        _cli(pg_url, "routes", "add", "--match", "*", "--carrier", "fleet")
        await add_rates(db)
        who = await make_customer(db, balance="5000", name="Fleet")
        with (Process([TIKOSMS, "api", "--port", str(apis[0])], tmp_path / "api1.log",
                      api_env, port=apis[0]),
              Process([TIKOSMS, "api", "--port", str(apis[1])], tmp_path / "api2.log",
                      api_env, port=apis[1])):
            workers = [start_worker(f"w{i}", lease_seconds="5") for i in (1, 2, 3)]
            for w in workers:
                await wait_until_running(w)
            await wait_for(lambda: _two_holders(db), 60, "two workers holding a slot each")

            async with httpx.AsyncClient(timeout=120) as http:
                first, second = (f"http://127.0.0.1:{p}" for p in apis)
                opening = await _balance(http, second, who.headers)
                r = await http.post(f"{first}/v1/messages", headers=who.headers, json={
                    "from": "Brand", "message": "sale",
                    "recipients": [f"38050{1000000 + i}" for i in range(PARTS)]})
                assert r.status_code == 200, r.text
                campaign = r.json()

                async def a_third_sent() -> bool:
                    s = await statuses(db, campaign["campaign_id"])
                    return s["ENROUTE"] + s["DELIVRD"] >= PARTS // 3

                await wait_for(a_third_sent, 180, "a third of the campaign was not sent")
                doomed, slot, heir = await _holder_and_heir(db, workers)
                doomed.process.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await asyncio.to_thread(doomed.process.wait, 10)

                async def taken_over() -> bool:
                    return (await _slot_holders(db)).get(slot) == heir

                await wait_for(taken_over, TAKE_OVER_WITHIN,
                               f"slot {slot} not taken over by the worker without one")
                took = time.monotonic() - killed_at
                await _wait_all_delivered(db, campaign["campaign_id"])
                closing = await _balance(http, second, who.headers)
                counters = (await http.get(f"http://127.0.0.1:{control}/counters")).json()
    assert closing == opening - Decimal(campaign["cost"])  # no refund, no second charge
    async with db.connect() as conn:
        balance, ledger = (await conn.execute(
            select(Account.balance, select(func.sum(LedgerEntry.amount))
                   .where(LedgerEntry.account_id == Account.id).scalar_subquery())
            .where(Account.id == who.account_id))).one()
    assert balance == ledger
    duplicates = counters["submits"] - PARTS
    print(f"slot {slot} taken over in {took:.1f} s; SMSC: max binds {counters['max_bound']}, "
          f"most submit_sm in a second {counters['max_submits_per_second']}, "
          f"submit_sm {counters['submits']} (sent twice: {duplicates})")
    assert counters["max_bound"] <= BINDS
    assert counters["max_submits_per_second"] <= TPS * BURST
    # the dead worker's gate: two windows of the carrier's binds (the worker sizes it by them)
    assert 0 <= duplicates <= 2 * WINDOW * BINDS
    assert heir != doomed.name


async def _two_holders(db: Database) -> bool:
    holders = await _slot_holders(db)
    return len(holders) == BINDS and len(set(holders.values())) == BINDS


async def _slot_holders(db: Database) -> dict[int, str]:
    """The live holders' pids by slot (a slot whose lease ended counts as not held)."""
    async with db.connect() as conn:
        rows = await slots_repo.holders(conn, utcnow())
    return {r["slot"]: f"pid {r['pid']}" for r in rows if r["state"] == "held"}


async def _holder_and_heir(db: Database, workers: list[Worker]) -> tuple[Worker, int, str]:
    """The worker holding slot 1, and (as _slot_holders names it) the one holding none."""
    holders = await _slot_holders(db)
    by_pid = {f"pid {w.process.pid}": w for w in workers}
    doomed = by_pid[holders[1]]
    [idle] = [pid for pid in by_pid if pid not in holders.values()]
    return doomed, 1, idle


async def _balance(http: httpx.AsyncClient, base: str, headers: dict[str, str]) -> Decimal:
    r = await http.get(f"{base}/v1/balance", headers=headers)
    assert r.status_code == 200, r.text
    return Decimal(r.text.split('"balance":')[1].split(",")[0])  # as sent, not via float


async def _wait_all_delivered(db: Database, campaign_id: str) -> None:
    async def done() -> bool:
        return (await statuses(db, campaign_id))["DELIVRD"] == PARTS

    try:
        await wait_for(done, DELIVERY_TIMEOUT, "not every part was DELIVRD")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {dict(await statuses(db, campaign_id))}") from None
