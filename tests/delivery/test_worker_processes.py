"""Several `tikosms worker` processes on one PostgreSQL queue: no part sent twice, a killed
worker's claims taken over after the lease, a stopped worker's claims released.

Real processes, real signals; every wait is bounded and nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.test_send import balance
from tests.conftest import PG_URL, Customer, add_rates, make_customer
from tikosms.db.engine import Database
from tikosms.db.models import Part
from tikosms.db.types import utcnow
from tikosms.delivery import queue

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TIKOSMS_TEST_POSTGRES_URL)"),
    pytest.mark.slow,
]

STOP_TIMEOUT = 6.0  # seconds a SIGTERMed worker may take: 5 s grace for submissions in flight
DELIVERY_TIMEOUT = 180.0  # seconds to deliver a whole campaign (bounds the wait, not a speed test)
STOPPED = re.compile(r"stopped \((\d+) parts submitted\)")


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def submitted(self) -> int:
        """The count from the worker's stop line (it logs one only when it stops cleanly)."""
        [count] = STOPPED.findall(self.output())
        return int(count)


@pytest.fixture
def pg_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("several worker processes need PostgreSQL")
    return database_url


@pytest.fixture
def start_worker(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start `tikosms worker` processes on the test database; all are killed at the end."""
    started: list[Worker] = []

    def start(name: str, *args: str, **settings: str) -> Worker:
        log = tmp_path / f"{name}.log"
        env = {**os.environ, "TIKOSMS_DATABASE_URL": pg_url,
               "TIKOSMS_SIM_RECEIPT_DELAY_MS": "20", "TIKOSMS_IDLE_POLL_SECONDS": "0.05",
               **{f"TIKOSMS_{k.upper()}": v for k, v in settings.items()}}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("tikosms")), "worker", *args],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        worker = Worker(name, process, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)


async def wait_until_running(worker: Worker, within: float = 60.0) -> None:
    async def running() -> bool:
        if worker.process.poll() is not None:
            raise AssertionError(f"{worker.name} exited: {worker.output()}")
        return "worker running" in worker.output()

    await wait_for(running, within, f"{worker.name} did not start")


async def wait_for(condition: Callable[[], object], within: float, what: str) -> None:
    """Poll `condition` (a coroutine function) until true; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():  # type: ignore[misc]
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {within} s")
        await asyncio.sleep(0.1)


async def stop(worker: Worker) -> int:
    """SIGTERM, then the exit status (TimeoutExpired if it takes longer than STOP_TIMEOUT)."""
    worker.process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(worker.process.wait, STOP_TIMEOUT)


async def send_campaign(client: httpx.AsyncClient, who: Customer, size: int) -> dict[str, str]:
    r = await client.post("/v1/messages", headers=who.headers, json={
        "from": "Brand", "message": "sale",
        "recipients": [f"38050{1000000 + i}" for i in range(size)]})
    assert r.status_code == 200, r.text
    body: dict[str, str] = r.json()
    return body


async def statuses(db: Database, campaign_id: str) -> Counter[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(Part.status, func.count()).where(Part.campaign_id == campaign_id)
            .group_by(Part.status))
        return Counter({status: n for status, n in rows})


async def wait_until_all(db: Database, campaign_id: str, status: str, size: int) -> None:
    async def done() -> bool:
        return (await statuses(db, campaign_id))[status] == size

    try:
        await wait_for(done, DELIVERY_TIMEOUT, f"not every part reached {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {dict(await statuses(db, campaign_id))}") from None


async def leased(db: Database, campaign_id: str) -> int:
    """Parts still waiting in the queue with a worker's lease on them."""
    async with db.connect() as conn:
        return int(await conn.scalar(
            select(func.count()).where(Part.campaign_id == campaign_id,
                                       Part.status.in_(("QUEUED", "SCHEDULED")),
                                       Part.lease_owner.is_not(None))) or 0)


async def rich_customer(db: Database) -> Customer:
    await add_rates(db)
    return await make_customer(db, balance="1000", name="Rich")


async def test_two_workers_deliver_10000_parts_and_send_none_twice(
    client: httpx.AsyncClient, db: Database, start_worker: Callable[..., Worker]
) -> None:
    who = await rich_customer(db)
    workers = [start_worker("w1"), start_worker("w2")]
    for w in workers:  # both ready before the parts arrive, so that both take some
        await wait_until_running(w)
    campaign = await send_campaign(client, who, 10_000)

    await wait_until_all(db, campaign["campaign_id"], "DELIVRD", 10_000)
    codes = [await stop(w) for w in workers]

    assert codes == [0, 0]
    async with db.connect() as conn:
        ids, distinct, claims = (await conn.execute(
            select(func.count(Part.carrier_message_id),
                   func.count(Part.carrier_message_id.distinct()), func.max(Part.attempts))
            .where(Part.campaign_id == campaign["campaign_id"]))).one()
    assert ids == distinct == 10_000  # every part has its own carrier message id
    assert claims == 1  # and was claimed once
    per_worker = [w.submitted() for w in workers]
    assert sum(per_worker) == 10_000 and all(n > 0 for n in per_worker), per_worker


async def test_a_killed_workers_claims_are_taken_over_and_nothing_is_lost(
    client: httpx.AsyncClient, db: Database, start_worker: Callable[..., Worker]
) -> None:
    who = await rich_customer(db)
    opening = await balance(client, who)
    campaign = await send_campaign(client, who, 10_000)
    campaign_id = campaign["campaign_id"]
    # receipts far in the future: what this worker sent is still ENROUTE when it dies
    doomed = start_worker("doomed", sim_receipt_delay_ms="600000", lease_seconds="3",
                          claim_batch="50")
    await wait_until_under_way(db, campaign_id)

    doomed.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(doomed.process.wait, 10)
    await claim_as_a_dead_worker(db, 100)  # whatever it held, it surely held these
    at_death = await statuses(db, campaign_id)
    assert at_death["DELIVRD"] == 0 and at_death["ENROUTE"] > 0, at_death
    assert await leased(db, campaign_id) >= 100

    start_worker("heir")
    await wait_until_all(db, campaign_id, "DELIVRD", 10_000)

    assert await leased(db, campaign_id) == 0
    async with db.connect() as conn:
        taken_over = await conn.scalar(select(func.count()).where(
            Part.campaign_id == campaign_id, Part.attempts > 1))
    assert taken_over >= 100  # claimed again once the dead worker's lease ran out
    assert await balance(client, who) == opening - Decimal(campaign["cost"])  # no refund, no
    # second charge: the ledger is as the send left it


async def test_sigterm_exits_0_and_another_worker_finishes(
    client: httpx.AsyncClient, db: Database, start_worker: Callable[..., Worker]
) -> None:
    who = await rich_customer(db)
    campaign = await send_campaign(client, who, 10_000)
    campaign_id = campaign["campaign_id"]
    # a short lease, so that claims a stopped worker failed to release cannot stall the end
    first = start_worker("first", sim_receipt_delay_ms="600000", claim_batch="50",
                         lease_seconds="3")
    await wait_until_under_way(db, campaign_id)

    assert await stop(first) == 0
    assert first.submitted() > 0  # it logged its clean stop

    start_worker("second")
    await wait_until_all(db, campaign_id, "DELIVRD", 10_000)


async def test_sigterm_leaves_no_claim_behind(
    client: httpx.AsyncClient, db: Database, start_worker: Callable[..., Worker]
) -> None:
    who = await rich_customer(db)
    campaign = await send_campaign(client, who, 10_000)
    campaign_id = campaign["campaign_id"]
    first = start_worker("first", sim_receipt_delay_ms="600000", claim_batch="50")
    await wait_until_under_way(db, campaign_id)

    assert await stop(first) == 0

    assert await leased(db, campaign_id) == 0
    async with db.connect() as conn:
        recorded = await conn.scalar(select(func.count()).where(
            Part.campaign_id == campaign_id, Part.carrier_message_id.is_not(None)))
    assert recorded == first.submitted()  # every part the carrier took is on record


async def wait_until_under_way(db: Database, campaign_id: str) -> None:
    async def under_way() -> bool:
        return (await statuses(db, campaign_id))["ENROUTE"] > 0

    await wait_for(under_way, 60, "no part went ENROUTE")


async def claim_as_a_dead_worker(db: Database, n: int) -> None:
    """Claim parts with a 3 s lease for an owner that will never come back."""
    async with db.begin() as conn:
        claimed = await queue.claim_due_parts(conn, "dead-worker", n, utcnow(), 3)
    assert len(claimed) == n


async def test_delivery_and_callbacks_in_processes_of_their_own(
    client: httpx.AsyncClient, db: Database, start_worker: Callable[..., Worker]
) -> None:
    """`worker --only delivery` sends the parts, `worker --only callbacks` posts every status
    change (no worker in its process wakes it: it finds them by itself)."""
    from tests.callbacks.receiver import CallbackReceiver

    who = await rich_customer(db)
    parts = start_worker("parts", "--only", "delivery", callback_allow_private="true")
    posts = start_worker("posts", "--only", "callbacks", callback_allow_private="true")
    for w in (parts, posts):
        await wait_until_running(w)
    async with CallbackReceiver() as receiver:
        r = await client.post("/v1/messages", headers=who.headers, json={
            "from": "Brand", "message": "sale", "callback_url": receiver.url,
            "recipients": [f"38050{1000000 + i}" for i in range(200)]})
        assert r.status_code == 200, r.text
        await wait_until_all(db, r.json()["campaign_id"], "DELIVRD", 200)
        await receiver.wait_for(400, timeout=60)  # ENROUTE and DELIVRD for each part
        statuses_posted = Counter(c.json["status"] for c in receiver.requests)
    assert statuses_posted == {"ENROUTE": 200, "DELIVRD": 200}
    assert [await stop(w) for w in (parts, posts)] == [0, 0]
    assert parts.submitted() == 200
    assert "callbacks only" in posts.output() and "callbacks only" not in parts.output()


async def test_a_send_wakes_a_worker_of_another_process_at_once(
    client: httpx.AsyncClient, db: Database, start_worker: Callable[..., Worker]
) -> None:
    """The send's transaction notifies the workers (LISTEN/NOTIFY): a worker that would poll
    again only in 60 s delivers the message within seconds."""
    who = await rich_customer(db)
    worker = start_worker("w", idle_poll_seconds="60")
    await wait_until_running(worker)
    await asyncio.sleep(1.0)  # the worker's first claims are done: it now waits for 60 s
    r = await client.post("/v1/message", headers=who.headers, json={
        "from": "Shop", "to": "380501234567", "message": "code 1234"})
    assert r.status_code == 200, r.text

    async def delivered() -> bool:
        return (await statuses(db, r.json()["campaign_id"]))["DELIVRD"] == 1

    await wait_for(delivered, 10.0, "the message was not delivered before the next poll")
    assert await stop(worker) == 0
