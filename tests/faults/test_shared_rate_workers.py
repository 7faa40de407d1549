"""Two `tikosms worker` processes on one PostgreSQL, each with its binds to one carrier agreed
at 100 parts a second: together they never send it more than that in any second (read at
`tikosms smsc-sim`), and the campaign is delivered whole."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from bench.procs import free_port, wait_port

from tests.conftest import PG_URL
from tests.delivery.test_worker_processes import (
    Worker,
    rich_customer,
    send_campaign,
    wait_until_all,
    wait_until_running,
)
from tikosms.db.engine import Database

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TIKOSMS_TEST_POSTGRES_URL)"),
    pytest.mark.slow,
]

# the fixtures of the worker process tests (pg_url, start_worker)
from tests.delivery.test_worker_processes import pg_url, start_worker  # noqa: E402, F401

TPS = 100
PARTS = 800
TIKOSMS = str(Path(sys.executable).with_name("tikosms"))
MOST = re.compile(r"max_accepted_per_second=(\d+)")


def _cli(pg: str, *args: str) -> None:
    done = subprocess.run([TIKOSMS, *args], env={"TIKOSMS_DATABASE_URL": pg, "PATH": ""},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _start_simulator(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([TIKOSMS, "smsc-sim", "--port", str(port), "--stats-interval",
                                 "0"], stdout=out, stderr=subprocess.STDOUT)


async def test_two_workers_together_keep_to_the_carriers_agreed_rate(
    client: httpx.AsyncClient, db: Database, pg_url: str, tmp_path: Path,  # noqa: F811
    start_worker: Callable[..., Worker],  # noqa: F811
) -> None:
    port = free_port()
    sim_log = tmp_path / "sim.log"
    sim = _start_simulator(port, sim_log)
    try:
        wait_port(port, sim)  # type: ignore[arg-type]
        _cli(pg_url, "carriers", "add", "sim", "--host", "127.0.0.1", "--port", str(port),
             "--system-id", "tiko", "--password", "pw", "--tps", str(TPS), "--binds", "2")
        _cli(pg_url, "routes", "add", "--match", "*", "--carrier", "sim")
        who = await rich_customer(db)
        workers = [start_worker(name) for name in ("one", "two")]
        for w in workers:
            await wait_until_running(w)
        campaign = await send_campaign(client, who, PARTS)
        await wait_until_all(db, campaign["campaign_id"], "DELIVRD", PARTS)
    finally:
        sim.send_signal(signal.SIGTERM)  # it prints its counters as it stops
        await asyncio.to_thread(sim.wait, 10)
    most = int(MOST.findall(sim_log.read_text())[-1])
    print(f"most submit_sm accepted in a second at the SMSC: {most} (agreed {TPS}/s)")
    assert most <= TPS * 1.1  # each worker alone would send 100/s: 200/s together
