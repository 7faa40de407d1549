"""Worker heartbeats (both databases): the row a worker process keeps, and what the API's
/readyz and /metrics make of the rows of every worker."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from bench.procs import free_port

from tests.observability.test_processes import sample_sum
from tikosms.app import create_app
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.delivery import carriers_repo, heartbeats_repo
from tikosms.delivery.heartbeat import PRUNE_AFTER, Heartbeat, beating
from tikosms.delivery.heartbeats_repo import Beat
from tikosms.delivery.routing import Router, RouteRule
from tikosms.delivery.simulated import SimulatedCarrier
from tikosms.delivery.worker import DeliveryWorker
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import SmppCarrier

BOUND = {"available": True, "window": 10, "binds": [
    {"label": "b1", "type": "transceiver", "state": "bound", "detail": "", "in_flight": 3}]}
REFUSED = {"available": False, "window": 10, "binds": [
    {"label": "b1", "type": "transceiver", "state": "refused",
     "detail": "bind refused (ESME_RINVPASWD)", "in_flight": 0}]}


def beat(owner: str, ago: float = 0.0, roles: tuple[str, ...] = ("delivery", "callbacks"),
         **carriers: dict) -> Beat:
    now = utcnow()
    return Beat(owner, "host-a", 4242, roles, now - timedelta(seconds=ago + 60),
                now - timedelta(seconds=ago), carriers)


async def write(db: Database, *beats: Beat) -> None:
    async with db.begin() as conn:
        for b in beats:
            await heartbeats_repo.upsert(conn, b)


async def add_carrier(db: Database, name: str = "acme") -> None:
    async with db.begin() as conn:
        await carriers_repo.add_carrier(conn, name=name, host="127.0.0.1", port=2775,
                                        system_id="tiko", password="secret", settings={})


async def readyz(settings: Settings, db: Database) -> httpx.Response:
    app = create_app(settings, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        return await c.get("/readyz")


# --- the row a worker keeps -----------------------------------------------------------------

async def test_a_worker_keeps_its_row_while_it_runs_and_deletes_it_at_a_clean_stop(
        db: Database, settings: Settings) -> None:
    sim = SimulatedCarrier(0)
    worker = DeliveryWorker(db, settings, Router({"simulated": sim},
                                                 [RouteRule("*", "simulated", 0)]))
    await sim.start(worker.on_receipt)
    try:
        async with beating(db, settings, ("delivery", "callbacks"), worker):
            async with db.connect() as conn:
                during = await heartbeats_repo.all_beats(conn)
    finally:
        await sim.stop()
    async with db.connect() as conn:
        after = await heartbeats_repo.all_beats(conn)
    assert [(b.owner, b.roles) for b in during] == [(worker.owner, ("delivery", "callbacks"))]
    assert during[0].carriers["simulated"]["available"] is True
    assert after == []


async def test_the_row_carries_every_bind_of_an_smpp_carrier(db: Database,
                                                              settings: Settings) -> None:
    carrier = SmppCarrier(SmppCarrierConfig(name="acme", host="127.0.0.1", port=free_port(),
                                            system_id="x", password="y", binds=2, window=7,
                                            reconnect_initial=30))
    worker = DeliveryWorker(db, settings, Router({"acme": carrier}, [RouteRule("*", "acme", 0)]))
    await carrier.start(worker.on_receipt)
    try:
        beating_ = Heartbeat(db, settings, ("delivery",), worker)
        await beating_.beat_once()
    finally:
        await carrier.stop()
    async with db.connect() as conn:
        (row,) = await heartbeats_repo.all_beats(conn)
    acme = row.carriers["acme"]
    assert acme["available"] is False and acme["window"] == 7
    assert len(acme["binds"]) == 2 and all(b["state"] != "bound" for b in acme["binds"])


async def test_a_beat_prunes_rows_not_seen_for_long(db: Database, settings: Settings) -> None:
    period = settings.worker_heartbeat_seconds
    await write(db, beat("dead:1:aaaaaa", ago=PRUNE_AFTER * period + 5),
                beat("stale:2:bbbbbb", ago=PRUNE_AFTER * period - 30))
    await Heartbeat(db, settings, ("callbacks",)).beat_once()
    async with db.connect() as conn:
        owners = {b.owner for b in await heartbeats_repo.all_beats(conn)}
    assert "dead:1:aaaaaa" not in owners and "stale:2:bbbbbb" in owners and len(owners) == 2


async def test_a_second_beat_updates_the_same_row(db: Database, settings: Settings) -> None:
    hb = Heartbeat(db, settings, ("callbacks",))
    await hb.beat_once()
    async with db.connect() as conn:
        (first,) = await heartbeats_repo.all_beats(conn)
    await hb.beat_once()
    async with db.connect() as conn:
        (second,) = await heartbeats_repo.all_beats(conn)
    assert second.owner == first.owner and second.seen_at >= first.seen_at
    assert second.started_at == first.started_at


# --- what the API's /readyz makes of the rows -----------------------------------------------

async def test_ready_with_a_fresh_worker_holding_the_simulated_carrier(
        db: Database, settings: Settings) -> None:
    await write(db, beat("w:1:aaaaaa", simulated=BOUND))
    r = await readyz(settings, db)
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "workers": "ok: 1 fresh",
                                  "carrier simulated": "ok"}


async def test_not_ready_once_the_only_heartbeat_is_stale(db: Database,
                                                          settings: Settings) -> None:
    stale = settings.worker_heartbeat_seconds * settings.worker_heartbeat_missed
    await write(db, beat("w:1:aaaaaa", ago=stale + 10, simulated=BOUND))
    r = await readyz(settings, db)
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["workers"].startswith("no fresh worker heartbeat: last seen")
    assert "host-a pid 4242" in checks["workers"]
    assert checks["carrier simulated"] == "not bound: no fresh delivery worker holds it"


@pytest.mark.parametrize(("held", "reason"), [
    # the carrier's binds refused by the SMSC: the SMSC's answer is the reason
    ({"acme": REFUSED}, "not bound: bind refused (ESME_RINVPASWD)"),
    # the workers have not loaded it (yet), or could not build it
    ({}, "not bound: no fresh delivery worker holds it"),
])
async def test_an_enabled_carrier_no_fresh_worker_has_bound_makes_the_api_not_ready(
        db: Database, settings: Settings, held: dict, reason: str) -> None:
    await add_carrier(db)
    await write(db, beat("w:1:aaaaaa", **held))
    r = await readyz(settings, db)
    assert r.status_code == 503
    assert r.json()["checks"]["carrier acme"] == reason


async def test_one_worker_bound_is_enough_for_a_carrier(db: Database,
                                                        settings: Settings) -> None:
    await add_carrier(db)
    await write(db, beat("w:1:aaaaaa", acme=REFUSED), beat("w:2:bbbbbb", acme=BOUND))
    r = await readyz(settings, db)
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["workers"] == "ok: 2 fresh"


async def test_a_callbacks_only_worker_binds_no_carrier(db: Database,
                                                        settings: Settings) -> None:
    await write(db, beat("cb:1:aaaaaa", roles=("callbacks",), simulated=BOUND))
    r = await readyz(settings, db)
    assert r.status_code == 503
    assert r.json()["checks"]["workers"] == "ok: 1 fresh"
    assert r.json()["checks"]["carrier simulated"].startswith("not bound")


async def test_a_disabled_carrier_is_not_asked_for(db: Database, settings: Settings) -> None:
    await add_carrier(db, "acme")
    await add_carrier(db, "spare")
    async with db.begin() as conn:
        await carriers_repo.set_carrier_enabled(conn, "spare", False)
    await write(db, beat("w:1:aaaaaa", acme=BOUND))
    r = await readyz(settings, db)
    assert r.status_code == 200, r.text
    assert "carrier spare" not in r.json()["checks"]


async def test_metrics_count_the_fresh_workers_by_role(db: Database, settings: Settings) -> None:
    stale = settings.worker_heartbeat_seconds * settings.worker_heartbeat_missed
    await write(db, beat("w:1:aaaaaa", simulated=BOUND),
                beat("cb:2:bbbbbb", roles=("callbacks",)),
                beat("old:3:cccccc", ago=stale + 10))
    app = create_app(settings, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        text = (await c.get("/metrics")).text
    assert sample_sum(text, "tikosms_workers_fresh", role="delivery") == 1
    assert sample_sum(text, "tikosms_workers_fresh", role="callbacks") == 2
