"""Carriers and routes changed while a worker runs take effect within seconds, no restart:
a running DeliveryWorker against SMSC simulators over real TCP, the changes written through
`carriers_repo` as the CLI and the console write them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from tests.conftest import add_rates, make_customer
from tests.delivery import test_worker_processes as processes
from tests.delivery.test_smpp_end_to_end import (
    FAST_RECONNECT,
    numbers,
    send_campaign,
    simulator,
    wait_all_final,
)
from tests.delivery.test_worker_processes import Worker, stop, wait_for, wait_until_running
from tikosms.cli import cli as tikosms_cli
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Part
from tikosms.delivery import carriers_repo
from tikosms.delivery.routing import Router
from tikosms.delivery.simulated import NAME as SIMULATED
from tikosms.runtime import delivery
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.simulator import SmscSimulator

SHORT = "Your code is 4471"  # one GSM-7 part per recipient
pg_url = processes.pg_url  # fixtures: `tikosms worker` processes on the test's PostgreSQL
start_worker = processes.start_worker


def fast(settings: Settings) -> Settings:
    """Workers that look at the carriers table every 0.1 s (2 s by default)."""
    return settings.model_copy(update={"carriers_reload_seconds": 0.1})


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for the worker's router to reach a state (a guard of 15 s against a hang; a
    reload takes a poll period plus a bind)."""
    async with asyncio.timeout(15):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


def bound_to(router: Router, name: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        carrier = router.carriers.get(name)
        return (isinstance(carrier, SmppCarrier) and carrier.config.port == port
                and carrier.available)
    return check


async def add(db: Database, name: str, sim: SmscSimulator, *, match: str = "*",
              priority: int = 100) -> None:
    async with db.begin() as conn:
        await carriers_repo.add_carrier(conn, name=name, host="127.0.0.1", port=sim.port,
                                        system_id="tiko", password="pw1",
                                        settings=FAST_RECONNECT)
        await carriers_repo.add_route(conn, match=match, carrier=name, priority=priority)


async def carriers_of(db: Database, campaign_id: str) -> dict[str | None, int]:
    async with db.connect() as conn:
        rows = (await conn.execute(select(Part.carrier, func.count())
                                   .where(Part.campaign_id == campaign_id)
                                   .group_by(Part.carrier))).all()
    return {carrier: int(n) for carrier, n in rows}


async def deliver(client: httpx.AsyncClient, db: Database, headers: Any, n: int = 5
                  ) -> dict[str, int]:
    sent = await send_campaign(client, db, headers, numbers(n), SHORT)
    await wait_all_final(db, sent["campaign_id"])
    return {k or "": v for k, v in (await carriers_of(db, sent["campaign_id"])).items()}


async def test_a_carrier_and_route_added_while_running_take_the_parts(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as sim, delivery(db, fast(settings)) as worker:
        assert set(worker.router.carriers) == {SIMULATED}  # nothing configured yet
        await add(db, "acme", sim)
        await until(bound_to(worker.router, "acme", sim.port))
        assert SIMULATED not in worker.router.carriers  # configured carriers replace it
        assert await deliver(client, db, who) == {"acme": 5}
        assert sim.counters.accepted == 5


async def test_a_changed_port_moves_new_parts_to_the_new_address(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as first, simulator() as second:
        await add(db, "acme", first)
        async with delivery(db, fast(settings)) as worker:
            await until(bound_to(worker.router, "acme", first.port))
            old = worker.router.carriers["acme"]
            assert await deliver(client, db, who) == {"acme": 5}
            async with db.begin() as conn:
                await carriers_repo.update_carrier(conn, "acme", port=second.port)
            await until(bound_to(worker.router, "acme", second.port))
            assert await deliver(client, db, who, 7) == {"acme": 7}
            assert isinstance(old, SmppCarrier)
            await until(lambda: {b.state for b in old.status()} == {"stopped"})  # drained
        assert (first.counters.accepted, second.counters.accepted) == (5, 7)


async def test_parts_in_flight_on_the_old_binds_finish_there(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator(latency_ms=300) as sim:  # each submit_sm answered after 0.3 s
        await add(db, "acme", sim)
        async with delivery(db, fast(settings)) as worker:
            await until(bound_to(worker.router, "acme", sim.port))
            old = worker.router.carriers["acme"]
            sent = await send_campaign(client, db, who, numbers(20), SHORT)
            await sim.wait_for(lambda c: c.submits >= 1)
            async with db.begin() as conn:  # a new window: new binds, same SMSC
                await carriers_repo.update_carrier(conn, "acme", settings={"window": 5})
            await until(lambda: worker.router.carriers["acme"] is not old)
            await wait_all_final(db, sent["campaign_id"])
    # every part delivered, each accepted once: none lost or sent twice across the swap
    assert await carriers_of(db, sent["campaign_id"]) == {"acme": 20}
    assert sim.counters.accepted == 20


async def test_a_disabled_carrier_hands_new_parts_to_the_next_route(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as main, simulator() as spare:
        await add(db, "acme", main, priority=1)
        await add(db, "backup", spare, priority=2)
        async with delivery(db, fast(settings)) as worker:
            await until(bound_to(worker.router, "acme", main.port))
            assert await deliver(client, db, who) == {"acme": 5}
            async with db.begin() as conn:
                await carriers_repo.set_carrier_enabled(conn, "acme", False)
            await until(lambda: "acme" not in worker.router.carriers)
            assert await deliver(client, db, who) == {"backup": 5}
        assert (main.counters.accepted, spare.counters.accepted) == (5, 5)


async def test_a_disabled_route_hands_new_parts_to_the_next_one(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as main, simulator() as spare:
        await add(db, "acme", main, priority=1)
        await add(db, "backup", spare, priority=2)
        async with delivery(db, fast(settings)) as worker:
            await until(bound_to(worker.router, "acme", main.port))
            await until(bound_to(worker.router, "backup", spare.port))
            async with db.begin() as conn:
                [first] = [r for r in await carriers_repo.list_routes(conn)
                           if r.carrier == "acme"]
                await carriers_repo.set_route_enabled(conn, first.id, False)
            await until(lambda: worker.router.route("25501") == ["backup"])
            assert await deliver(client, db, who) == {"backup": 5}
            assert "acme" in worker.router.carriers  # the carrier itself stays bound


async def test_parts_wait_while_the_only_carrier_is_disabled(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as sim:
        await add(db, "acme", sim)
        async with delivery(db, fast(settings)) as worker:
            await until(bound_to(worker.router, "acme", sim.port))
            async with db.begin() as conn:
                await carriers_repo.set_carrier_enabled(conn, "acme", False)
            await until(lambda: worker.router.carriers == {})  # not the simulated one
            sent = await send_campaign(client, db, who, numbers(3), SHORT)
            await asyncio.sleep(1.0)  # many claim rounds (idle poll 0.2 s)
            # no carrier held: the worker leaves them in the queue, unclaimed (bind slots)
            assert await carriers_of(db, sent["campaign_id"]) == {None: 3}
            assert await _attempts(db, sent["campaign_id"]) == 0
            async with db.begin() as conn:  # enabled again: bound again, takes every part
                await carriers_repo.set_carrier_enabled(conn, "acme", True)
            await until(bound_to(worker.router, "acme", sim.port))
            assert await deliver(client, db, who) == {"acme": 5}
            await wait_all_final(db, sent["campaign_id"])  # the waiting ones: no retry delay
            assert await carriers_of(db, sent["campaign_id"]) == {"acme": 3}
        assert sim.counters.accepted == 8


async def test_removing_every_carrier_brings_back_the_simulated_one(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as sim:
        await add(db, "acme", sim)
        async with delivery(db, fast(settings)) as worker:
            await until(bound_to(worker.router, "acme", sim.port))
            async with db.begin() as conn:
                for route in await carriers_repo.list_routes(conn):
                    await carriers_repo.remove_route(conn, route.id)
                await carriers_repo.remove_carrier(conn, "acme")
            await until(lambda: set(worker.router.carriers) == {SIMULATED})
            assert await deliver(client, db, who) == {SIMULATED: 5}


async def test_an_unchanged_table_keeps_the_binds(db: Database, settings: Settings) -> None:
    async with simulator() as sim:
        await add(db, "acme", sim)
        async with delivery(db, settings) as worker:  # no polling: reload() by hand
            await until(bound_to(worker.router, "acme", sim.port))
            acme = worker.router.carriers["acme"]
            assert await worker.router.reload() is False
            async with db.begin() as conn:  # another carrier added: acme is left alone
                await carriers_repo.add_carrier(conn, name="beta", host="127.0.0.1",
                                                port=sim.port, system_id="tiko",
                                                password="pw1")
            assert await worker.router.reload() is True
            assert worker.router.carriers["acme"] is acme and "beta" in worker.router.carriers
        assert sim.counters.binds == 2  # acme once, beta once


async def _attempts(db: Database, campaign_id: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.sum(Part.attempts)).where(
            Part.campaign_id == campaign_id))).scalar_one() or 0)


# --- a real `tikosms worker` process, changed through the CLI ------------------------------

@pytest.mark.slow
async def test_a_worker_process_applies_cli_changes_without_a_restart(
        client: httpx.AsyncClient, db: Database, pg_url: str,
        start_worker: Callable[..., Worker]) -> None:
    await add_rates(db)
    who = await make_customer(db)
    async with simulator() as first, simulator() as second:
        worker = start_worker("w1", carriers_reload_seconds="0.5")
        await wait_until_running(worker)
        await cli(pg_url, "carriers", "add", "acme", "--host", "127.0.0.1", "--port",
                  str(first.port), "--system-id", "tiko", "--password", "pw1")
        await cli(pg_url, "routes", "add", "--match", "*", "--carrier", "acme")
        await logged(worker, "added=acme")
        assert await deliver(client, db, who) == {"acme": 5}

        await cli(pg_url, "carriers", "update", "acme", "--port", str(second.port))
        await logged(worker, "changed=acme")
        assert await deliver(client, db, who, 7) == {"acme": 7}
        assert (first.counters.accepted, second.counters.accepted) == (5, 7)
        assert await stop(worker) == 0


async def cli(database_url: str, *args: str) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, tikosms_cli, ["--database-url", database_url, *args])
    assert result.exit_code == 0, (result.stderr, result.exception)


async def logged(worker: Worker, text: str) -> None:
    async def seen() -> bool:
        return text in worker.output()

    await wait_for(seen, 15, f"{worker.name} did not log {text!r}")
