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
from tests.faults.smsc_proc import Receipts, carrier_for, drive, smsc_sim, sustained_rate
from tikosms.db.engine import Database
from tikosms.delivery.carrier import SubmitResult
from tikosms.delivery.rate_store import PostgresRateStore
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.shared_rate import Answers, Decision, RateStore, RedisRateStore, SharedRates

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


async def test_a_decision_taken_on_an_older_version_is_not_published(
    stores: StoreFactory,
) -> None:
    """Compare-and-set: a process whose decision was taken before another's was published
    (a late slow start's "limit reached" at 4/s after the fleet found 200/s) does not write it
    over; it is told the newer one, adopts it, and may decide again on it."""
    a, b = stores(), stores()
    found = await a.take("acme", 1, 100.0, Decision(200.0, False), Answers("a"))
    assert found.published and found.rate == 200.0 and not found.slow_start
    stale = await b.take("acme", 1, 100.0, Decision(4.0, True, base=found.version - 1),
                         Answers("b"))
    assert not stale.published
    assert (stale.rate, stale.slow_start, stale.version) == (200.0, False, found.version)
    again = await b.take("acme", 1, 100.0, Decision(190.0, False, base=stale.version),
                         Answers("b"))
    assert again.published and again.rate == 190.0 and again.version == found.version + 1


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


STEADY = ("probe", "back off", "rate-independent")  # the controller's judgements of a period


async def test_three_senders_find_a_rate_limited_smscs_limit_as_one(
    tmp_path: Path, stores: StoreFactory
) -> None:
    limit = 200
    with smsc_sim(tmp_path, "--max-tps", str(limit)) as sim:
        carriers = await _carriers(sim, 3, stores)  # no tps: the throttling finds it
        try:
            runs = await asyncio.gather(*(drive(c, 1000) for c in carriers))
        finally:
            await asyncio.gather(*(c.stop() for c in carriers))
        counters = sim.counters()
    assert all(o.result is SubmitResult.ACCEPTED for r in runs for o in r.finals.values())
    started = min(r.started for r in runs)
    achieved = sustained_rate(sorted(t for r in runs for t in r.accepted_at), started, skip=3.0)
    refusals = counters["throttled"] / counters["submits"]
    rates = [round(c.bucket.rate) for c in carriers]
    judged = [sum(1 for _, why, _ in c.bucket.decisions if why in STEADY) for c in carriers]
    print(f"limit={limit}/s achieved={achieved:.1f}/s together, refusals="
          f"{counters['throttled']}/{counters['submits']} ({refusals:.2%}) rates={rates} "
          f"judgements={judged} most in a second={counters['max_accepted_per_second']} "
          f"baselines={[round(c.bucket.baseline, 3) for c in carriers]}")
    for c in carriers:  # each sender's decisions, for a failure's output
        t0 = c.bucket.decisions[0][0] if c.bucket.decisions else 0
        print([(round(t - t0, 2), why, round(r or 0)) for t, why, r in c.bucket.decisions])
    # measured 191-197/s and 2.5-4.9 % refusals over 10 runs with two busy loops beside it on
    # the shared 2-core machine (docs/reliability.md)
    assert achieved >= 0.8 * limit
    assert refusals < 0.05  # the reliability issue's target, as for one sender
    # one rate for the fleet, not each its third (three controllers on their own answers
    # settle at ~67/s each)
    assert all(0.9 * limit <= rate <= 1.2 * limit for rate in rates)
    # one controller judged the fleet's periods (the judge's lease may move once, at the end,
    # when the judge's own parts are done first); on their own, each would judge every second
    assert sorted(judged)[-2] <= 2, judged


async def test_a_store_outage_neither_stops_sending_nor_lifts_the_rate(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tps = 200
    proxy = PgProxy().start()
    databases = [Database(proxy.url(pg_url), pool_size=4) for _ in range(2)]
    with smsc_sim(tmp_path) as sim:
        carriers, limiters = [], []
        for db in databases:
            carrier = await carrier_for(sim, Receipts(), tps=tps)
            carrier.limiter = limiter = SharedRates(PostgresRateStore(db)).limiter_for(
                carrier.name, carrier.bucket)
            carriers.append(carrier)
            limiters.append(limiter)

        async def outage() -> None:
            # the senders have measured their parts of the tokens (not always halves: each
            # goes on alone at its own part, so the two add up to the rate); a sender that
            # has not measured yet takes itself for the only one, and a slow start under
            # load (CI) had both send at the full rate: 305 in a second
            await asyncio.sleep(1.5)
            async with asyncio.timeout(10):
                while True:
                    if all(limiter.part < 1.0 for limiter in limiters):
                        break
                    await asyncio.sleep(0.05)
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
