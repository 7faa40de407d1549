"""Bind slots: a carrier's allowed binds leased by worker processes (delivery.slots).

Against the SMSC simulator over real TCP and a real database (both backends): keepers of two
"workers" (a router from the database each, with its slot keeper, as `DeliveryWorker` sets them
up) share a carrier's two slots, a dead holder's slot is taken over with a new fencing number,
a holder fenced away or cut off from the database closes its bind before its lease ends, and
the claim takes only the parts of the carriers a worker holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from tests.cli.test_carriers_cli import tikosms
from tests.conftest import Customer
from tests.delivery.test_smpp_end_to_end import FAST_RECONNECT, simulator
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import CarrierSlot, Part, WorkerHeartbeat
from tikosms.db.types import utcnow
from tikosms.delivery import carriers_repo, heartbeats_repo, queue, slots_repo
from tikosms.delivery.carrier import Receipt
from tikosms.delivery.heartbeats_repo import Beat
from tikosms.delivery.queue import RouteFilter
from tikosms.delivery.routing import Router, RouteRule, claim_filter
from tikosms.delivery.slots import SlotKeeper, share, slot_rate
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.simulator import SmscSimulator

LEASE = 1.5  # seconds: short, so that a take-over happens within the test


# --- the pure rules ------------------------------------------------------------------------

@pytest.mark.parametrize(("slots", "live", "most"), [
    (2, 3, 1),  # the fleet: two workers bind once each, the third waits
    (2, 2, 1),
    (2, 1, 2),  # one worker alone holds every slot
    (4, 3, 2),
    (3, 2, 2),
    (1, 5, 1),
    (2, 0, 2),  # no heartbeat seen yet (not even its own): it counts itself
])
def test_share_is_the_ceiling_of_slots_over_live_workers(slots: int, live: int,
                                                          most: int) -> None:
    assert share(slots, live) == most


@pytest.mark.parametrize(("tps", "held", "total", "rate"), [
    (300.0, 1, 2, 150.0),  # two holders of one slot each: 150 + 150
    (300.0, 2, 2, 300.0),
    (100.0, 1, 3, 100 / 3),
    (None, 1, 2, None),  # no agreed rate: none of ours
    (300.0, 0, 2, 150.0),  # holding nothing it sends nothing; the bucket stays at one slot's
])
def test_a_holder_sends_its_share_of_the_agreed_rate(tps: float | None, held: int, total: int,
                                                     rate: float | None) -> None:
    assert slot_rate(tps, held, total) == rate


ROUTES = (RouteRule("*", "acme", 10), RouteRule("*", "backup", 20),
          RouteRule("26201", "dtag", 100), RouteRule("262", "backup", 100))


@pytest.mark.parametrize(("mine", "served", "claimed", "left"), [
    # holds acme, every carrier served: acme's parts, not dtag's (26201) nor backup's (262)
    ({"acme"}, {"acme", "backup", "dtag"}, ["25501", "31041", ""], ["26201", "26202"]),
    # holds dtag only: its operator's parts alone
    ({"dtag"}, {"acme", "backup", "dtag"}, ["26201", "262015"], ["25501", "26202"]),
    # holds backup; acme held by nobody: backup takes the `*` parts too (failover)
    ({"backup"}, {"backup", "dtag"}, ["25501", "26202"], ["26201"]),
    # dtag held by nobody: 26201 fails over to 262's backup, then acme
    ({"acme", "backup"}, {"acme", "backup"}, ["25501", "26201", "26202"], []),
    # holds nothing: claims nothing
    (set(), {"acme"}, [], ["25501", "26201", ""]),
])
def test_a_worker_claims_the_parts_whose_first_served_carrier_it_holds(
        mine: set[str], served: set[str], claimed: list[str], left: list[str]) -> None:
    routes = claim_filter(ROUTES, mine, served)
    assert [m for m in claimed if not routes.claims(m)] == []
    assert [m for m in left if routes.claims(m)] == []


def test_the_usual_star_only_routes_add_no_condition_to_the_claim() -> None:
    routes = claim_filter((RouteRule("*", "acme", 100),), {"acme"}, {"acme"})
    assert routes.everything and routes.sql() == ""


def test_parts_without_a_route_are_claimed_as_before_slots() -> None:
    routes = claim_filter((RouteRule("262", "dtag", 100),), {"dtag"}, {"dtag"})
    assert routes.claims("25501")  # retried later ("no route"), as without slots


# --- the claim's SQL -----------------------------------------------------------------------

async def test_the_claim_takes_only_the_parts_of_the_carriers_held(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    # Vodafone UA (25501), Kyivstar (25503) and a number of no network known (255)
    recipients = ["380501234567", "380671234567", "380501234568", "380671234568"]
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "sale", "recipients": recipients})
    assert r.status_code == 200, r.text
    async with db.connect() as conn:
        networks = sorted({m for (m,) in await conn.execute(select(Part.mccmnc))})
    assert len(networks) >= 2, networks
    kept = networks[-1]
    only_others = RouteFilter(((kept, False),), True)  # another worker holds `kept`'s carrier

    async with db.begin() as conn:
        nothing = await queue.claim_due_parts(conn, "w1", 100, utcnow(), 60,
                                              routes=RouteFilter((), False))
        claimed = await queue.claim_due_parts(conn, "w1", 100, utcnow(), 60, routes=only_others)
        rest = await queue.claim_due_parts(conn, "w2", 100, utcnow(), 60)

    assert nothing == []
    assert claimed and all(p.mccmnc != kept for p in claimed)
    assert rest and all(p.mccmnc == kept for p in rest)
    assert len(claimed) + len(rest) == len(recipients)


# --- keepers against the simulator ---------------------------------------------------------

async def _ignore(receipt: Receipt) -> None:
    pass


def _slots_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"slot_lease_seconds": LEASE,
                                       "carriers_reload_seconds": 0.0})


async def _beat(db: Database, owner: str) -> None:
    now = utcnow()
    async with db.begin() as conn:
        await heartbeats_repo.upsert(conn, Beat(owner, "test", 1, ("delivery",), now, now, {}))


async def _add_carrier(db: Database, sim: SmscSimulator, binds: int, tps: float = 300) -> None:
    async with db.begin() as conn:
        await carriers_repo.add_carrier(conn, name="acme", host="127.0.0.1", port=sim.port,
                                        system_id="tiko", password="pw1",
                                        settings={**FAST_RECONNECT, "binds": binds, "tps": tps})
        await carriers_repo.add_route(conn, match="*", carrier="acme")


@asynccontextmanager
async def slot_worker(db: Database, settings: Settings, owner: str
                      ) -> AsyncIterator[tuple[Router, SlotKeeper]]:
    """A worker's router and slot keeper, as DeliveryWorker sets them up (its heartbeat
    written first, as a worker's is within its first seconds)."""
    await _beat(db, owner)
    router = await Router.from_database(db, settings)
    keeper = router.slots = SlotKeeper(db, settings, router, owner)
    await router.start(_ignore, bind_wait=2.0)
    try:
        yield router, keeper
    finally:
        await keeper.halt()
        await router.stop()
        await keeper.release_all()


async def until(what: str, predicate: Callable[[], Any], within: float = 15.0) -> None:
    try:
        async with asyncio.timeout(within):
            while True:
                if await _value(predicate()):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


async def _value(x: Any) -> Any:
    return await x if asyncio.iscoroutine(x) else x


def acme(router: Router) -> SmppCarrier:
    carrier = router.carriers["acme"]
    assert isinstance(carrier, SmppCarrier)
    return carrier


async def _holders(db: Database) -> dict[int, tuple[str | None, int]]:
    async with db.connect() as conn:
        return {s.slot: (s.holder, s.fencing) for s in await slots_repo.all_slots(conn)}


async def test_two_workers_share_two_slots_and_the_smsc_never_sees_more_binds(
        db: Database, settings: Settings) -> None:
    settings = _slots_settings(settings)
    async with simulator() as sim:
        await _add_carrier(db, sim, binds=2)
        async with slot_worker(db, settings, "w1") as (r1, k1):
            # alone: it holds both slots and the whole rate
            await until("w1 binds twice", lambda: sim.counters.bound == 2)
            assert k1.held("acme") == [1, 2] and acme(r1).bucket.limit == 300
            async with slot_worker(db, settings, "w2") as (r2, k2):
                # two live workers: one slot each, each at half the rate
                await until("one slot each", lambda: len(k1.held("acme")) == 1
                            and len(k2.held("acme")) == 1 and sim.counters.bound == 2)
                assert acme(r1).bucket.limit == acme(r2).bucket.limit == 150
                assert set(k1.held("acme") + k2.held("acme")) == {1, 2}
                assert acme(r1).available and acme(r2).available
                assert {h for h, _f in (await _holders(db)).values()} == {"w1", "w2"}
        assert sim.counters.max_bound == 2  # never a third bind, through the hand-over


async def test_a_dead_holders_slot_is_taken_over_with_a_new_fencing_number(
        db: Database, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings = _slots_settings(settings)
    async with simulator() as sim:
        await _add_carrier(db, sim, binds=2)
        async with slot_worker(db, settings, "w1") as (_r1, k1):
            async with slot_worker(db, settings, "w2") as (r2, k2):
                await until("one slot each", lambda: len(k1.held("acme")) == 1
                            and len(k2.held("acme")) == 1)
                [lost] = k2.held("acme")
                fencing = (await _holders(db))[lost][1]
                # w2 dies: no more renewals, its connection gone, its heartbeat goes stale
                await k2.halt()
                await acme(r2).close_slot(lost, 0)
                k2.leases.clear()
                async with db.begin() as conn:
                    await conn.execute(delete(WorkerHeartbeat).where(
                        WorkerHeartbeat.owner == "w2"))
                await until("w1 takes the dead worker's slot over",
                            lambda: k1.held("acme") == [1, 2], within=LEASE + 5)
                assert (await _holders(db))[lost] == ("w1", fencing + 1)
                await until("w1 binds it", lambda: sim.counters.bound == 2)
        assert sim.counters.max_bound == 2
    assert f"carrier acme slot {lost} taken over from w2" in caplog.text


async def test_a_holder_fenced_away_closes_its_bind_and_claims_nothing(
        db: Database, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings = _slots_settings(settings)
    async with simulator() as sim:
        await _add_carrier(db, sim, binds=1)
        async with slot_worker(db, settings, "w1") as (router, keeper):
            await until("bound", lambda: sim.counters.bound == 1)
            assert not keeper.route_filter().nothing
            async with db.begin() as conn:  # another worker took it (its lease had ended)
                await conn.execute(update(CarrierSlot).values(
                    holder="intruder", fencing=CarrierSlot.fencing + 1,
                    lease_until=utcnow() + timedelta(hours=1)))
            await until("w1 unbinds", lambda: sim.counters.bound == 0, within=LEASE + 5)
            assert keeper.held("acme") == [] and not acme(router).available
            assert keeper.route_filter().nothing  # no slot: no claim at all
            assert (await _holders(db))[1][0] == "intruder"  # never renewed back
    assert "carrier acme slot 1: lease lost" in caplog.text


async def test_a_holder_cut_off_from_the_database_unbinds_before_its_lease_ends(
        db: Database, settings: Settings, database_url: str, tmp_path: Any) -> None:
    settings = _slots_settings(settings)
    async with simulator() as sim:
        await _add_carrier(db, sim, binds=1)
        async with slot_worker(db, settings, "w1") as (_router, keeper):
            await until("bound", lambda: sim.counters.bound == 1)
            # from now on its renewals fail: a database that does not answer
            if database_url.startswith("postgresql"):
                from bench.procs import free_port
                gone = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
            else:
                gone = f"sqlite:///{tmp_path}/no/such/dir/x.db"
            keeper.db = Database(gone)
            try:
                await until("w1 unbinds", lambda: sim.counters.bound == 0, within=LEASE + 5)
                unbound_at = utcnow()
                async with db.connect() as conn:
                    [slot] = await slots_repo.all_slots(conn)
                assert slot.holder == "w1" and slot.lease_until is not None
                assert unbound_at < slot.lease_until  # gone before anyone could take it
            finally:
                await keeper.db.dispose()
                keeper.db = db


async def test_a_holder_whose_database_stops_answering_unbinds_before_its_lease_ends(
        db: Database, settings: Settings, database_url: str) -> None:
    """A hung server (the proxy holds every byte): the looks wait, the deadline does not."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a database that stops answering: PostgreSQL behind a proxy")
    from tests.faults.pgproxy import PgProxy

    settings = _slots_settings(settings)
    async with simulator() as sim:
        await _add_carrier(db, sim, binds=1)
        with PgProxy() as proxy:
            async with slot_worker(db, settings, "w1") as (_router, keeper):
                await until("bound", lambda: sim.counters.bound == 1)
                keeper.db = Database(proxy.url(database_url))
                await until("a look through the proxy", lambda: proxy.connections > 0)
                await asyncio.to_thread(proxy.freeze)
                try:
                    await until("w1 unbinds", lambda: sim.counters.bound == 0,
                                within=LEASE + 5)
                    unbound_at = utcnow()
                    async with db.connect() as conn:
                        [slot] = await slots_repo.all_slots(conn)
                    assert slot.holder == "w1" and slot.lease_until is not None
                    assert unbound_at < slot.lease_until
                finally:
                    await asyncio.to_thread(proxy.thaw)
                    await keeper.db.dispose()
                    keeper.db = db


async def test_changing_a_carriers_binds_adjusts_its_slots(
        db: Database, settings: Settings) -> None:
    async def slots() -> list[int]:
        async with db.connect() as conn:
            return [s.slot for s in await slots_repo.all_slots(conn)]

    async with db.begin() as conn:
        await carriers_repo.add_carrier(conn, name="acme", host="127.0.0.1", port=2775,
                                        system_id="tiko", password="pw1",
                                        settings={"binds": 2})
    assert await slots() == [1, 2]
    async with db.begin() as conn:
        await carriers_repo.update_carrier(conn, "acme", settings={"binds": 4})
    assert await slots() == [1, 2, 3, 4]
    async with db.begin() as conn:
        await carriers_repo.update_carrier(conn, "acme", settings={"binds": 1})
    assert await slots() == [1]
    async with db.begin() as conn:  # disabled: its slots released (and gone)
        await carriers_repo.set_carrier_enabled(conn, "acme", False)
    assert await slots() == []
    async with db.begin() as conn:
        await carriers_repo.set_carrier_enabled(conn, "acme", True)
        await carriers_repo.update_carrier(conn, "acme", reset=["binds"])
    assert await slots() == [1]  # the default: one bind


async def test_carriers_slots_shows_who_holds_each_slot(
        db: Database, settings: Settings, database_url: str) -> None:
    settings = _slots_settings(settings)
    async with simulator() as sim:
        await _add_carrier(db, sim, binds=2)
        async with slot_worker(db, settings, "host-a:4242:abc123"):
            result = await asyncio.to_thread(tikosms, database_url, "carriers", "slots")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["CARRIER", "SLOT", "STATE"]
    assert [line.split()[:3] for line in lines[1:]] == [["acme", "1", "held"],
                                                       ["acme", "2", "held"]]
    assert all("host-a:4242:abc123 (test pid 1)" in line for line in lines[1:])


async def test_slots_left_by_a_carrier_removed_are_deleted(db: Database) -> None:
    async with db.begin() as conn:
        await carriers_repo.add_carrier(conn, name="acme", host="127.0.0.1", port=2775,
                                        system_id="tiko", password="pw1",
                                        settings={"binds": 2})
        await carriers_repo.remove_carrier(conn, "acme")
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(CarrierSlot))
                ).scalar_one() == 0
