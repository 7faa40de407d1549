"""One rate per carrier account shared by several senders (tikosms.smpp.shared_rate): SMPP
carriers, each with its own store connection as separate worker processes have, against
`tikosms smsc-sim` as a real process; the rate is read at the simulator (the most submit_sm it
accepted within any one second)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, _admin
from tests.faults.pgproxy import PgProxy
from tests.faults.smsc_proc import Receipts, carrier_for, drive, smsc_sim
from tikosms.db.engine import Database
from tikosms.delivery.carrier import SubmitResult
from tikosms.delivery.rate_store import PostgresRateStore
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.shared_rate import RateStore, RedisRateStore, SharedRates

REDIS_URL = "redis://127.0.0.1:6379/0"
StoreFactory = Callable[[], RateStore]

pytestmark = pytest.mark.skipif(not PG_URL, reason="a shared rate needs PostgreSQL (or Redis)")


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    template = request.getfixturevalue("pg_template")
    name = f"tikosms_t_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    assert PG_URL
    yield str(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgresql", "redis"])
def store_at(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, where): a fresh database, or this test's own Redis key prefix."""
    if request.param == "postgresql":
        return "postgresql", request.getfixturevalue("pg_url")
    return "redis", f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def stores(store_at: tuple[str, str]) -> AsyncIterator[StoreFactory]:
    """Makes one store connection per sender (a process each, in production)."""
    made: list[RateStore] = []
    databases: list[Database] = []
    kind, where = store_at
    if kind == "postgresql":
        url = where

        def make() -> RateStore:
            db = Database(url, pool_size=4)
            databases.append(db)
            store = PostgresRateStore(db)
            made.append(store)
            return store
    else:
        def make() -> RateStore:
            store = RedisRateStore(REDIS_URL, where)
            made.append(store)
            return store

    yield make
    for store in made:
        await store.close()
    for db in databases:
        await db.dispose()


async def _carriers(sim: object, count: int, make: StoreFactory,
                    **options: object) -> list[SmppCarrier]:
    carriers = []
    for _ in range(count):
        carrier = await carrier_for(sim, Receipts(), **options)  # type: ignore[arg-type]
        carrier.limiter = SharedRates(make()).limiter_for(carrier.name, carrier.bucket)
        carriers.append(carrier)
    return carriers


async def test_three_senders_together_stay_within_the_carriers_tps(
    tmp_path: Path, stores: StoreFactory
) -> None:
    tps = 200
    with smsc_sim(tmp_path) as sim:
        carriers = await _carriers(sim, 3, stores, tps=tps)
        try:
            runs = await asyncio.gather(*(drive(c, 500, concurrency=100) for c in carriers))
        finally:
            await asyncio.gather(*(c.stop() for c in carriers))
        counters = sim.counters()
    assert all(o.result is SubmitResult.ACCEPTED for r in runs for o in r.finals.values())
    assert sum(len(r.finals) for r in runs) == 1500
    print(f"tps={tps} most accepted in a second={counters['max_accepted_per_second']}")
    # each alone would send 200/s: 600/s together without the shared budget
    assert counters["max_accepted_per_second"] <= tps * 1.1


async def test_a_store_outage_neither_stops_sending_nor_lifts_the_rate(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tps = 200
    proxy = PgProxy().start()
    databases = [Database(proxy.url(pg_url), pool_size=4) for _ in range(2)]
    with smsc_sim(tmp_path) as sim:
        carriers = []
        for db in databases:
            carrier = await carrier_for(sim, Receipts(), tps=tps)
            carrier.limiter = SharedRates(PostgresRateStore(db)).limiter_for(
                carrier.name, carrier.bucket)
            carriers.append(carrier)

        async def outage() -> None:
            await asyncio.sleep(1.5)  # the senders have measured that they are two
            proxy.cut()
            await asyncio.sleep(2.0)
            proxy.restore()

        try:
            with caplog.at_level(logging.INFO, logger="tikosms.smpp.shared_rate"):
                _, *runs = await asyncio.gather(
                    outage(), *(drive(c, 700, concurrency=100) for c in carriers))
        finally:
            await asyncio.gather(*(c.stop() for c in carriers))
            for db in databases:
                await db.dispose()
            proxy.stop()
        counters = sim.counters()
    assert all(o.result is SubmitResult.ACCEPTED for r in runs for o in r.finals.values())
    assert sum(len(r.finals) for r in runs) == 1400
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "works again" in r.getMessage()]
    print(f"most accepted in a second={counters['max_accepted_per_second']} "
          f"down={len(down)} back={len(back)}")
    assert len(down) == 2 and len(back) == 2  # once per sender each way, not once a statement
    assert counters["max_accepted_per_second"] <= tps * 1.1
