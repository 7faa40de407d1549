"""Partitions by time on PostgreSQL (migration 0012): created ahead, used across a boundary,
dropped whole by `tikosms db prune` while sends go on, exported first; the ledger untouched.

A test cannot wait 40 days: rows are moved into the partitions of earlier days by changing
their time-ordered ids (`UPDATE ... SET id = id - shift`: PostgreSQL moves the row to the
partition of its new id), after creating those partitions with the gateway's own `ensure`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from tests.callbacks.receiver import CallbackReceiver
from tests.cli.test_accounts_cli import invoke
from tests.cli.test_db_prune import _bulk, _single, _wait_delivered, ledger
from tests.conftest import Customer
from tikosms.config import Settings
from tikosms.db import partitions as pt
from tikosms.db import retention
from tikosms.db.engine import Database
from tikosms.db.export import CsvExport
from tikosms.db.models import Account, CallbackEvent, Campaign, LedgerEntry, Part
from tikosms.db.partition_retention import DropCutoffs, ParquetExport, drop_expired
from tikosms.db.types import utcnow
from tikosms.delivery import expiry
from tikosms.messaging import lifecycle
from tikosms.messaging.writer import Idempotency, _claim_key, _Item, _lock_keys
from tikosms.runtime import delivery

DAY = 86_400 << pt.SEQ_BITS  # ids a day apart


@pytest.fixture
def pg(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's (SQLite keeps plain tables)")
    return database_url


async def names(db: Database, table: str | None = None) -> list[str]:
    async with db.connect() as conn:
        return [p.name for p in await pt.list_partitions(conn, [table] if table else None)]


async def make_days_ago(db: Database, days: int) -> None:
    """The partitions of every table for the day `days` ago (as housekeeping would have)."""
    async with db.begin() as conn:
        await pt.ensure(conn, utcnow() - timedelta(days=days), 1, 0)


async def move_back(db: Database, campaign_id: str, days: int) -> None:
    """Move a campaign's parts, their callback events and attempts `days` days back in id
    (and so into that day's partitions) and in time."""
    shift = days * DAY
    back = utcnow() - timedelta(days=days)
    async with db.begin() as conn:
        ids = [r[0] for r in await conn.execute(
            select(Part.id).where(Part.campaign_id == campaign_id))]
        events = [r[0] for r in await conn.execute(
            select(CallbackEvent.id).where(CallbackEvent.part_id.in_(ids)))]
        await conn.execute(text(
            "UPDATE callback_attempts SET event_id = event_id - :s, attempted_at = :b "
            "WHERE event_id = ANY(:e)"), {"s": shift, "b": back.replace(tzinfo=None),
                                         "e": events})
        await conn.execute(text(
            "UPDATE callback_events SET id = id - :s, part_id = part_id - :s, created_at = :b, "
            "finished_at = :b WHERE id = ANY(:e)"),
            {"s": shift, "b": back.replace(tzinfo=None), "e": events})
        await conn.execute(text(
            "UPDATE parts SET id = id - :s, created_at = :b, updated_at = :b WHERE id = ANY(:p)"),
            {"s": shift, "b": back.replace(tzinfo=None), "p": ids})
        await conn.execute(text(
            "UPDATE campaigns SET created_at = :b, updated_at = :b, completed_at = :b "
            "WHERE id = :c"), {"b": back.replace(tzinfo=None), "c": campaign_id})


# --- partitions exist and are created ahead ---------------------------------------------------

async def test_every_partitioned_table_has_partitions_ahead_after_migrate(
        pg: str, db: Database) -> None:
    now = utcnow()
    async with db.connect() as conn:
        found = await pt.list_partitions(conn)
    for table in pt.TABLES:
        until = pt.covered_until(found, table.name, now)
        assert until is not None and until >= now + timedelta(days=3), (table.name, until)
        assert f"{table.name}_initial" in [p.name for p in found]


async def test_ensure_creates_only_what_is_missing(pg: str, db: Database) -> None:
    now = utcnow()
    before = set(await names(db))
    async with db.begin() as conn:
        created = await pt.ensure(conn, now, 1, 6)
    assert created and not set(created) & before
    async with db.begin() as conn:
        assert await pt.ensure(conn, now, 1, 6) == []  # a second round: nothing to do
        found = await pt.list_partitions(conn)
    assert pt.covered_until(found, "parts", now) >= now + timedelta(days=6)  # type: ignore


def test_partitions_command_lists_and_ensures(database_url: str) -> None:
    result = invoke(database_url, "db", "partitions", "--ensure", "--json")
    if database_url.startswith("sqlite"):
        assert result.exit_code == 1
        assert "PostgreSQL" in result.output
        return
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    listed = {p["partition"] for p in data["partitions"]}
    today = f"parts_p{utcnow():%Y%m%d}"
    assert today in listed and "idempotency_keys_initial" in listed
    assert all(data["covered_until"][t.name] for t in pt.TABLES)
    human = invoke(database_url, "db", "partitions")
    assert today in human.output and "inserts have partitions until" in human.output


async def test_part_ids_tell_their_time_and_an_id_lookup_reads_one_partition(
        pg: str, db: Database, client: httpx.AsyncClient, customer: Customer) -> None:
    before = utcnow().replace(microsecond=0)
    campaign = await _bulk(client, customer, 3, "hello", {})
    async with db.connect() as conn:
        ids = sorted(r[0] for r in await conn.execute(
            select(Part.id).where(Part.campaign_id == campaign)))
        plan = "\n".join(r[0] for r in await conn.execute(
            text(f"EXPLAIN SELECT status FROM parts WHERE id = {ids[0]}")))
    assert before - timedelta(seconds=5) <= pt.id_time(ids[0]) <= utcnow() + timedelta(seconds=5)
    assert f"parts_p{utcnow():%Y%m%d}" in plan or f"parts_p{before:%Y%m%d}" in plan
    assert plan.count(" on parts_") == 1 and "parts_initial" not in plan, plan


async def test_a_row_with_an_explicit_small_id_still_goes_in(pg: str, db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(text(
            "INSERT INTO pending_receipts (id, carrier_message_id, status, received_at) "
            "VALUES (7, 'explicit', 'DELIVRD', now())"))
        where = (await conn.execute(text(
            "SELECT tableoid::regclass::text FROM pending_receipts WHERE id = 7"))).scalar()
    assert where == "pending_receipts_initial"


# --- traffic across a partition boundary ------------------------------------------------------

async def test_a_campaign_split_over_yesterday_and_today_is_delivered_with_callbacks(
        pg: str, db: Database, client: httpx.AsyncClient, settings: Settings,
        customer: Customer) -> None:
    await make_days_ago(db, 1)
    async with CallbackReceiver() as receiver:
        campaign = await _bulk(client, customer, 6, "across", {"callback_url": receiver.url})
        async with db.begin() as conn:  # half of its parts made "yesterday", still queued
            ids = sorted(r[0] for r in await conn.execute(
                select(Part.id).where(Part.campaign_id == campaign)))
            await conn.execute(text("UPDATE parts SET id = id - :d WHERE id = ANY(:i)"),
                               {"d": DAY, "i": ids[:3]})
            homes = {r[0] for r in await conn.execute(text(
                "SELECT tableoid::regclass::text FROM parts WHERE campaign_id = :c"),
                {"c": campaign})}
        assert len(homes) == 2, homes
        async with delivery(db, settings):
            await _wait_delivered(db)
        await lifecycle.roll_up(db)
        assert len(await receiver.wait_for(12)) == 12  # ENROUTE and DELIVRD of the 6 parts
    r = await client.get(f"/v1/get_message?campaign_id={campaign}", headers=customer.headers)
    assert r.status_code == 200, r.text
    async with db.connect() as conn:
        statuses = [r[0] for r in await conn.execute(
            select(Part.status).where(Part.campaign_id == campaign))]
        done = (await conn.execute(select(Campaign.completed_at).where(
            Campaign.id == campaign))).scalar()
    assert statuses == ["DELIVRD"] * 6 and done is not None


# --- dropping partitions, with traffic ---------------------------------------------------------

async def test_prune_drops_a_final_partition_keeps_one_in_flight_while_sends_go_on(
        pg: str, db: Database, client: httpx.AsyncClient, settings: Settings,
        customer: Customer, tmp_path: Path) -> None:
    await make_days_ago(db, 40)
    await make_days_ago(db, 39)
    async with CallbackReceiver() as receiver:
        hook = {"callback_url": receiver.url}
        async with delivery(db, settings):
            gone = await _bulk(client, customer, 5, "old news", hook)
            stays = await _bulk(client, customer, 3, "stuck", hook)
            await _wait_delivered(db)
        await lifecycle.roll_up(db)
        await move_back(db, gone, 40)
        await move_back(db, stays, 39)
        async with db.begin() as conn:  # a part a carrier never answered for
            await conn.execute(text(
                "UPDATE parts SET status = 'ENROUTE', delivered_at = NULL WHERE id = "
                "(SELECT min(id) FROM parts WHERE campaign_id = :c)"), {"c": stays})
            await conn.execute(text("UPDATE campaigns SET completed_at = NULL, "
                                    "status = 'active' WHERE id = :c"), {"c": stays})
            gone_ids = sorted(r[0] for r in await conn.execute(
                select(Part.id).where(Part.campaign_id == gone)))
        ledger_before = await ledger(db)
        old_day = f"{utcnow() - timedelta(days=40):%Y%m%d}"
        kept_day = f"{utcnow() - timedelta(days=39):%Y%m%d}"

        errors: list[str] = []
        sent = 0
        stop = asyncio.Event()
        progressed = asyncio.Event()

        async def sent_at_least(n: int) -> None:
            while sent < n:
                progressed.clear()
                await progressed.wait()

        async def send_loop() -> None:
            nonlocal sent
            while not stop.is_set():
                try:
                    await _single(client, customer, hook)
                    sent += 1
                except Exception as exc:  # any failed send fails the test below
                    errors.append(repr(exc))
                progressed.set()
                await asyncio.sleep(0)

        async with delivery(db, settings):
            sender = asyncio.create_task(send_loop())
            await sent_at_least(3)
            export = CsvExport(tmp_path, "run")
            report = await retention.prune(
                db, retention.Cutoffs.of(utcnow(), 30, settings), export=export)
            at_prune = sent
            await sent_at_least(at_prune + 3)  # and sends go on after it
            stop.set()
            await sender
            await _wait_delivered(db)
    assert errors == []
    left = await names(db)
    assert f"parts_p{old_day}" not in left and f"callback_events_p{old_day}" not in left
    assert f"callback_attempts_p{old_day}" not in left
    assert f"parts_p{kept_day}" in left
    by_name = {o.name: o for o in report.partitions}
    assert by_name[f"parts_p{old_day}"].dropped
    assert "not finished" in (by_name[f"parts_p{kept_day}"].reason or "")
    assert by_name[f"callback_events_p{old_day}"].dropped
    # the export holds exactly the dropped parts
    with (tmp_path / f"parts_p{old_day}-run.csv").open() as f:
        exported = sorted(int(r["id"]) for r in csv.DictReader(f))
    assert exported == gone_ids
    assert report.rows["parts"] == 0  # nothing deleted row by row: the partition went whole
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Part).where(
            Part.campaign_id == stays))).scalar_one() == 3
        # the ledger: every row before the prune still there, unchanged; balance = its sum
        balance = (await conn.execute(select(Account.balance).where(
            Account.id == customer.account_id))).scalar_one()
        total = (await conn.execute(select(func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == customer.account_id))).scalar_one()
    assert (await ledger(db))[:len(ledger_before)] == ledger_before
    assert balance == total


async def test_a_dry_run_judges_partitions_and_drops_none(
        pg: str, db: Database, settings: Settings) -> None:
    await make_days_ago(db, 10)
    before = await names(db, "pending_receipts")
    report = await retention.prune(db, retention.Cutoffs.of(utcnow(), 30, settings),
                                   dry_run=True)
    assert await names(db, "pending_receipts") == before
    old = f"pending_receipts_p{utcnow() - timedelta(days=10):%Y%m%d}"
    assert [o.name for o in report.partitions if o.reason is None and not o.dropped] == [old]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_expired_receipts_partition_is_exported_then_dropped(
        pg: str, db: Database, settings: Settings, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install .[parquet])")
    await make_days_ago(db, 5)
    name = f"pending_receipts_p{utcnow() - timedelta(days=5):%Y%m%d}"
    first = pt.id_bound(pt.interval_start(utcnow() - timedelta(days=5), 1))
    async with db.begin() as conn:
        for i in range(3):
            await conn.execute(text(
                "INSERT INTO pending_receipts (id, carrier_message_id, status, received_at) "
                "VALUES (:id, :m, 'DELIVRD', now() - interval '5 days')"),
                {"id": first + i, "m": f"late-{i}"})
    export: Any = (CsvExport(tmp_path, "x") if fmt == "csv" else ParquetExport(tmp_path, "x"))
    outcomes = await drop_expired(db, DropCutoffs.of(utcnow(), None, settings), export=export)
    assert [(o.name, o.dropped, o.rows) for o in outcomes] == [(name, True, 3)]
    assert name not in await names(db)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO((tmp_path / f"{name}-x.csv").read_text())))
        got = sorted(r["carrier_message_id"] for r in rows)
    else:
        import pyarrow.parquet as pq

        got = sorted(pq.read_table(tmp_path / f"{name}-x.parquet")
                     .column("carrier_message_id").to_pylist())
    assert got == ["late-0", "late-1", "late-2"]


async def test_a_failed_export_drops_nothing(
        pg: str, db: Database, settings: Settings, tmp_path: Path) -> None:
    await make_days_ago(db, 5)
    name = f"pending_receipts_p{utcnow() - timedelta(days=5):%Y%m%d}"
    first = pt.id_bound(pt.interval_start(utcnow() - timedelta(days=5), 1))
    async with db.begin() as conn:
        await conn.execute(text(
            "INSERT INTO pending_receipts (id, carrier_message_id, status, received_at) "
            "VALUES (:id, 'late', 'DELIVRD', now() - interval '5 days')"), {"id": first})
    export = CsvExport(tmp_path / "missing", "x")  # its directory does not exist
    with pytest.raises(OSError):
        await drop_expired(db, DropCutoffs.of(utcnow(), None, settings), export=export)
    assert name in await names(db)  # attached again, with its row
    async with db.connect() as conn:
        assert (await conn.execute(text(
            "SELECT count(*) FROM pending_receipts WHERE carrier_message_id = 'late'"))
        ).scalar_one() == 1


# --- idempotency keys: unique across partitions ------------------------------------------------

async def test_a_key_claimed_in_two_partitions_at_once_is_stored_once(
        pg: str, db: Database, customer: Customer) -> None:
    """Two requests with one key, whose rows would land in two partitions (one claims just
    before a partition boundary, one after): the second waits for the first and finds its
    key taken; the primary key alone (per partition) would have let both in."""
    now = utcnow()
    boundary = now - timedelta(hours=1)
    async with db.begin() as conn:  # two partitions split at `boundary`, both in the key's life
        for p in await pt.list_partitions(conn, ["idempotency_keys"]):
            await conn.execute(text(f'ALTER TABLE idempotency_keys DETACH PARTITION "{p.name}"'))
            await conn.execute(text(f'DROP TABLE "{p.name}"'))
        for name, lo, hi in (("ik_before", now - timedelta(days=2), boundary),
                             ("ik_after", boundary, now + timedelta(days=2))):
            for sql in pt.create_sql(pt.IDEMPOTENCY_KEYS, name, lo, hi):
                await conn.execute(text(sql))

    def item() -> _Item:
        fake: Any = type("P", (), {"account_id": customer.account_id})()
        return _Item(fake, b"{}", Idempotency("order-1", "message", "h"),
                     asyncio.get_running_loop().create_future())

    async with db.begin() as first:
        await _lock_keys(first, [item()])
        assert await _claim_key(first, customer.account_id, item(), boundary
                                - timedelta(minutes=1))

        async def second() -> bool:
            async with db.begin() as conn:
                await _lock_keys(conn, [item()])
                return await _claim_key(conn, customer.account_id, item(), now)

        other = asyncio.create_task(second())
        async with db.connect() as watch:  # until the second waits on the key's lock
            while not (await watch.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted"))).scalar_one():
                assert not other.done(), other.result()
                await asyncio.sleep(0.01)
    assert await other is False
    async with db.connect() as conn:
        assert (await conn.execute(text(
            "SELECT count(*) FROM idempotency_keys WHERE key = 'order-1'"))).scalar_one() == 1


# --- the worker's housekeeping -----------------------------------------------------------------

@pytest.mark.parametrize("retention_days", [0, 30])
async def test_housekeeping_creates_ahead_and_drops_by_the_retention_setting(
        pg: str, db: Database, settings: Settings, retention_days: int) -> None:
    await make_days_ago(db, 40)  # empty, so nothing in them is in flight
    old = f"{utcnow() - timedelta(days=40):%Y%m%d}"
    ahead = settings.model_copy(update={"retention_days": retention_days,
                                        "partition_ahead_days": 8})
    await expiry.upkeep(db, ahead, utcnow())
    left = await names(db)
    assert f"parts_p{utcnow() + timedelta(days=8):%Y%m%d}" in left  # created ahead
    assert f"pending_receipts_p{old}" not in left  # expired receipts: always
    assert f"idempotency_keys_p{old}" not in left
    # history: only with a retention
    assert (f"parts_p{old}" in left) is (retention_days == 0)
    assert (f"callback_events_p{old}" in left) is (retention_days == 0)


async def test_a_detach_left_half_done_is_finished_by_the_next_run(
        pg: str, db: Database, settings: Settings, tmp_path: Path) -> None:
    await make_days_ago(db, 5)
    name = f"pending_receipts_p{utcnow() - timedelta(days=5):%Y%m%d}"
    first = pt.id_bound(pt.interval_start(utcnow() - timedelta(days=5), 1))
    async with db.begin() as conn:
        await conn.execute(text(
            "INSERT INTO pending_receipts (id, carrier_message_id, status, received_at) "
            "VALUES (:id, 'late', 'DELIVRD', now() - interval '5 days')"), {"id": first})
    # a reader's open transaction makes DETACH CONCURRENTLY wait; its timeout cuts it there
    async with db.engine.connect() as reader, db.engine.connect() as detacher:
        await reader.execute(text("SELECT count(*) FROM pending_receipts"))
        await detacher.execution_options(isolation_level="AUTOCOMMIT")
        await detacher.execute(text("SET statement_timeout = '300ms'"))
        with pytest.raises(DBAPIError):
            await detacher.execute(text(
                f'ALTER TABLE pending_receipts DETACH PARTITION "{name}" CONCURRENTLY'))
        await reader.rollback()
    async with db.connect() as conn:
        assert [p.detach_pending for p in await pt.list_partitions(conn) if p.name == name] \
            == [True]
    export = CsvExport(tmp_path, "x")
    outcomes = await drop_expired(db, DropCutoffs.of(utcnow(), None, settings), export=export)
    assert [(o.name, o.dropped, o.rows) for o in outcomes] == [(name, True, 1)]
    assert name not in await names(db)
    assert "late" in (tmp_path / f"{name}-x.csv").read_text()
