"""Planner statistics of growing tables (db/statistics.py, PostgreSQL): a day's partition of
parts that grew from nothing is analysed by the worker before autovacuum gets to it, and the
receipts' lookup then reads the index instead of scanning the partition."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Customer, add_rates, make_customer
from tikosms.db import statistics
from tikosms.db.engine import Database
from tikosms.delivery.transitions import _PARTS_FOR_RECEIPTS

N = 3000


@pytest.fixture
def pg(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("planner statistics are PostgreSQL's (SQLite's planner keeps none here)")
    return database_url


@pytest.fixture
async def rich(db: Database) -> Customer:
    await add_rates(db)
    return await make_customer(db, balance="1000")


async def _campaign(client: httpx.AsyncClient, who: Customer) -> None:
    r = await client.post("/v1/messages", headers=who.headers, json={
        "from": "Brand", "message": "hello",
        "recipients": [f"38050{1000000 + i}" for i in range(N)]})
    assert r.status_code == 200, r.text


async def _enroute(db: Database) -> list[str]:
    """The parts as a carrier would have taken them: each with a carrier message id."""
    async with db.begin() as conn:
        await conn.execute(text("UPDATE parts SET status = 'ENROUTE', carrier = 'sim', "
                                "carrier_message_id = to_hex(id)"))
        rows = await conn.execute(text("SELECT carrier_message_id FROM parts ORDER BY id "
                                       "LIMIT 50"))
        return [r[0] for r in rows]


async def _scans(db: Database, cmids: list[str]) -> list[str]:
    """The relations the receipts' lookup reads whole (Seq Scan), in its plan now."""
    async with db.connect() as conn:
        plan = (await conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + _PARTS_FOR_RECEIPTS["postgresql"], (cmids,))).scalar_one()
    out: list[str] = []

    def walk(node: dict) -> None:
        if node.get("Node Type") == "Seq Scan":
            out.append(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    return out


async def _analyse_when_reported(db: Database) -> list[str]:
    """analyze_grown, again until the changes reach the statistics (reported by each backend
    at most once a second)."""
    deadline = time.monotonic() + 20
    while True:
        async with db.begin() as conn:
            done = await statistics.analyze_grown(conn)
        if done or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.3)


async def test_a_partition_grown_from_nothing_is_analysed_and_receipts_use_its_index(
        pg: str, client: httpx.AsyncClient, rich: Customer, db: Database) -> None:
    await _campaign(client, rich)
    cmids = await _enroute(db)
    async with db.connect() as conn:
        (partition,) = (await conn.execute(text(
            "SELECT tableoid::regclass::text FROM parts GROUP BY 1"))).scalars().all()
    # without statistics, the 50 ids are taken for a large share of the partition: read whole
    assert partition in await _scans(db, cmids)

    done = await _analyse_when_reported(db)
    assert partition in done
    assert partition not in await _scans(db, cmids)
    async with db.connect() as conn:
        analysed = (await conn.execute(text(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = :r"),
            {"r": partition})).scalar_one()
    assert analysed


async def test_a_second_process_leaves_the_analysis_to_the_first(
        pg: str, client: httpx.AsyncClient, rich: Customer, db: Database) -> None:
    await _campaign(client, rich)
    await _enroute(db)
    other = Database(pg)
    try:
        async with other.begin() as holder:  # another worker's turn in progress
            await holder.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                 {"k": statistics.LOCK_KEY})
            async with db.begin() as conn:
                assert await statistics.analyze_grown(conn) == []
    finally:
        await other.dispose()
    assert await _analyse_when_reported(db)  # and once it is free, this one analyses
