"""A worker killed with SIGKILL mid-campaign (two `tikosms worker` processes on PostgreSQL,
window 50, against `tikosms smsc-sim`): nothing is lost, every part ends final, the ledger is
exact, and the parts sent twice are at most two windows of the binds the dead worker held.

The carrier allows two binds: one slot per worker (delivery.slots), so both send, and the
gate of each is set to two windows of its one bind (TIKOSMS_MAX_UNRECORDED; its default counts
every bind of the carrier).

Duplicates are counted at the SMSC: its submit_sm count beyond the campaign's parts. Receipts
the dead worker's bind never acknowledged are delivered again on the survivor's bind (the
simulator resends them, as SMSCs do) and applied there.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from bench.procs import free_port, wait_port

from tests.api.test_send import balance
from tests.conftest import PG_URL
from tests.delivery.test_worker_processes import (
    Worker,
    rich_customer,
    send_campaign,
    statuses,
    wait_for,
    wait_until_all,
    wait_until_running,
)
from tikosms.db.engine import Database
from tikosms.delivery import slots_repo

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TIKOSMS_TEST_POSTGRES_URL)"),
    pytest.mark.slow,
]

# the fixtures of the worker process tests (pg_url, start_worker)
from tests.delivery.test_worker_processes import pg_url, start_worker  # noqa: E402, F401

PARTS = 5000
WINDOW = 50
BINDS = 1  # per worker: the carrier allows 2, one slot each
TIKOSMS = str(Path(sys.executable).with_name("tikosms"))
SUBMITS = re.compile(r"submits=(\d+)")


def _cli(pg: str, *args: str) -> None:
    done = subprocess.run([TIKOSMS, *args], env={"TIKOSMS_DATABASE_URL": pg, "PATH": ""},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _start_simulator(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`tikosms smsc-sim` answering each submit_sm after 20 ms (CRASH_SIM_LATENCY_MS), so
    that the windows are full when the worker dies; it prints its counters as it stops."""
    latency = os.environ.get("CRASH_SIM_LATENCY_MS", "20")
    with log.open("wb") as out:
        return subprocess.Popen([TIKOSMS, "smsc-sim", "--port", str(port), "--latency-ms",
                                 latency, "--stats-interval", "0", "--receipt-delay-ms", "50"],
                                stdout=out, stderr=subprocess.STDOUT)


async def _holders(db: Database, n: int) -> bool:
    async with db.connect() as conn:
        slots = await slots_repo.all_slots(conn)
    return len({s.holder for s in slots if s.holder is not None}) == n


async def test_sigkill_mid_campaign_loses_nothing_and_resends_at_most_two_windows(
    client: httpx.AsyncClient, db: Database, pg_url: str, tmp_path: Path,  # noqa: F811
    start_worker: Callable[..., Worker],  # noqa: F811
) -> None:
    port = free_port()
    sim_log = tmp_path / "sim.log"
    sim = _start_simulator(port, sim_log)
    try:
        wait_port(port, sim)  # type: ignore[arg-type]
        _cli(pg_url, "carriers", "add", "sim", "--host", "127.0.0.1", "--port", str(port),
             "--system-id", "tiko", "--password", "pw", "--window", str(WINDOW),
             "--binds", str(2 * BINDS))
        _cli(pg_url, "routes", "add", "--match", "*", "--carrier", "sim")
        who = await rich_customer(db)
        opening = await balance(client, who)
        workers = [start_worker(name, lease_seconds="3",
                                max_unrecorded=str(2 * WINDOW * BINDS))
                   for name in ("doomed", "heir")]
        for w in workers:
            await wait_until_running(w)
        await wait_for(lambda: _holders(db, 2), 30, "each worker holding a slot")
        campaign = await send_campaign(client, who, PARTS)
        campaign_id = campaign["campaign_id"]

        async def a_third_sent() -> bool:
            s = await statuses(db, campaign_id)
            return s["ENROUTE"] + s["DELIVRD"] >= PARTS // 3

        await wait_for(a_third_sent, 120, "a third of the campaign was not sent")
        workers[0].process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(workers[0].process.wait, 10)

        await wait_until_all(db, campaign_id, "DELIVRD", PARTS)  # nothing lost, all final
        assert await balance(client, who) == opening - Decimal(campaign["cost"])
    finally:
        sim.send_signal(signal.SIGTERM)  # it prints its counters as it stops
        await asyncio.to_thread(sim.wait, 10)
    submits = int(SUBMITS.findall(sim_log.read_text())[-1])
    duplicates = submits - PARTS
    print(f"submit_sm at the SMSC: {submits}; sent twice: {duplicates}")
    assert 0 <= duplicates <= 2 * WINDOW * BINDS
