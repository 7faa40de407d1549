"""`tikosms db prune` on both databases: what goes, what stays, the export, and live traffic.

The history is made the real way (sends through the API, delivery through the simulated
carrier, signed callbacks posted to a real receiver, the lifecycle roll-up marking campaigns
finished), then moved back in time by SQL: the one thing a test cannot wait 40 days for.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from tests.api.test_send import balance
from tests.callbacks.receiver import CallbackReceiver
from tests.cli.test_accounts_cli import assert_one_line_error, invoke
from tests.cli.test_serve_cli import Server, free_port, wait_until_healthy
from tests.conftest import Customer
from tikosms.config import Settings, get_settings
from tikosms.db import retention
from tikosms.db.engine import Database
from tikosms.db.export import CsvExport, TableRows
from tikosms.db.models import (
    Account,
    CallbackAttempt,
    CallbackEvent,
    Campaign,
    IdempotencyKey,
    LedgerEntry,
    Part,
    PendingReceipt,
)
from tikosms.db.types import utcnow
from tikosms.messaging import lifecycle
from tikosms.runtime import delivery

OLD = timedelta(days=40)  # the history made here is moved this far back
RETENTION = "30"  # days: --older-than of the tests
WAIT = 60.0  # seconds: bounds every wait for delivery (not a speed test)
MODELS: dict[str, Any] = {
    "parts": Part, "callback_events": CallbackEvent, "callback_attempts": CallbackAttempt,
    "campaigns": Campaign, "pending_receipts": PendingReceipt,
    "idempotency_keys": IdempotencyKey,
}


@dataclass
class History:
    old: set[str]  # finished campaigns 40 days old: they go, with their parts and callbacks
    recent: str  # a finished campaign of today: stays
    unfinished: str  # 40 days old, one part still ENROUTE (no receipt): stays whole
    unposted: str  # 40 days old, final, its DELIVRD callback not yet posted: stays
    pending_event: int  # that callback's callback_events.id


async def make_history(client: httpx.AsyncClient, db: Database, settings: Settings,
                       customer: Customer, old_recipients: int = 12) -> History:
    async with CallbackReceiver() as receiver:
        hook = {"callback_url": receiver.url}
        async with delivery(db, settings):
            old = {await _bulk(client, customer, old_recipients, "x" * 200, hook),  # 2 parts
                   await _single(client, customer, hook),
                   await _single(client, customer, {}),
                   await _single(client, customer, hook, key="order-17")}
            unfinished = await _bulk(client, customer, 3, "sale", hook)
            unposted = await _single(client, customer, hook)
            await _wait_delivered(db)
        async with delivery(db, settings):  # after the old ones: ids grow with time
            recent = await _bulk(client, customer, 4, "news", hook)
            await _wait_delivered(db)
    await lifecycle.roll_up(db)
    back = utcnow() - OLD
    old_ids = old | {unfinished, unposted}
    async with db.begin() as conn:
        assert (await conn.execute(select(func.count()).select_from(Campaign).where(
            Campaign.completed_at.is_(None)))).scalar_one() == 0, "the roll-up did not finish"
        await conn.execute(update(Campaign).where(Campaign.id.in_(old_ids)).values(
            created_at=back, updated_at=back, completed_at=back, counted_at=back))
        await conn.execute(update(Part).where(Part.campaign_id.in_(old_ids)).values(
            created_at=back, updated_at=back, sent_at=back, delivered_at=back))
        old_parts = select(Part.id).where(Part.campaign_id.in_(old_ids))
        await conn.execute(update(CallbackEvent).where(CallbackEvent.part_id.in_(old_parts))
                           .values(created_at=back, next_attempt_at=back, finished_at=back))
        old_events = select(CallbackEvent.id).where(CallbackEvent.part_id.in_(old_parts))
        await conn.execute(update(CallbackAttempt).where(
            CallbackAttempt.event_id.in_(old_events)).values(attempted_at=back))
        await conn.execute(update(IdempotencyKey).values(created_at=back))
        # a part a carrier never answered for: its campaign is not finished
        stuck = (await conn.execute(select(Part.id).where(Part.campaign_id == unfinished)
                                    .limit(1))).scalar_one()
        await conn.execute(update(Part).where(Part.id == stuck).values(
            status="ENROUTE", delivered_at=None))
        await conn.execute(update(Campaign).where(Campaign.id == unfinished).values(
            status="active", completed_at=None))
        # a final part whose last callback is still to be posted (retrying)
        pending = (await conn.execute(
            select(CallbackEvent.id).join(Part, Part.id == CallbackEvent.part_id)
            .where(Part.campaign_id == unposted).order_by(CallbackEvent.id.desc()).limit(1)
        )).scalar_one()
        await conn.execute(update(CallbackEvent).where(CallbackEvent.id == pending).values(
            state="pending", finished_at=None))
        await conn.execute(insert(PendingReceipt), [
            {"carrier_message_id": "gone-1", "status": "DELIVRD", "received_at": back},
            {"carrier_message_id": "fresh-1", "status": "DELIVRD", "received_at": utcnow()}])
    return History(old, recent, unfinished, unposted, pending)


async def _bulk(client: httpx.AsyncClient, who: Customer, n: int, text: str,
                extra: dict[str, str]) -> str:
    r = await client.post("/v1/messages", headers=who.headers, json={
        "from": "Brand", "message": text, **extra,
        "recipients": [f"38050{1000000 + i}" for i in range(n)]})
    assert r.status_code == 200, r.text
    return str(r.json()["campaign_id"])


async def _single(client: httpx.AsyncClient, who: Customer, extra: dict[str, str],
                  key: str | None = None) -> str:
    headers = {**who.headers, **({"Idempotency-Key": key} if key else {})}
    r = await client.post("/v1/message", headers=headers, json={
        "from": "Shop", "to": "380501234567", "message": "code 1234", **extra})
    assert r.status_code == 200, r.text
    return str(r.json()["campaign_id"])


async def _wait_delivered(db: Database) -> None:
    """Every part DELIVRD and every callback posted."""
    deadline = time.monotonic() + WAIT
    while True:
        async with db.connect() as conn:
            parts = (await conn.execute(select(func.count()).select_from(Part).where(
                Part.status != "DELIVRD"))).scalar_one()
            events = (await conn.execute(select(func.count()).select_from(CallbackEvent).where(
                CallbackEvent.state != "delivered"))).scalar_one()
        if parts == 0 and events == 0:
            return
        assert time.monotonic() < deadline, f"{parts} parts, {events} callbacks still open"
        await asyncio.sleep(0.05)


async def snapshot(db: Database) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """Every row of the tables prune deletes from, by primary key (as a string, like the CSV)."""
    out: dict[str, dict[Any, tuple[Any, ...]]] = {}
    async with db.connect() as conn:
        for table, model in MODELS.items():
            pk = [c.name for c in model.__table__.primary_key.columns]
            rows = (await conn.execute(select(*model.__table__.c))).all()
            out[table] = {tuple(str(getattr(r, c)) for c in pk): tuple(r) for r in rows}
    return out


async def ledger(db: Database) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        return [tuple(r) for r in await conn.execute(
            select(*LedgerEntry.__table__.c).order_by(LedgerEntry.id))]


async def campaign_parts(db: Database, campaign_id: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Part).where(
            Part.campaign_id == campaign_id))).scalar_one())


async def prune_cli(database_url: str, *args: str) -> Any:
    result = await asyncio.to_thread(invoke, database_url, "db", "prune", *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def read_export(path: Path) -> list[dict[str, str | None]]:
    """The rows of one export file; an unquoted empty field is NULL (None)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = raw.decode()
    reader = csv.reader(io.StringIO(lines))
    header = next(reader)
    # csv cannot tell "" from an unquoted empty field: read NULLs from the raw fields
    rows = []
    for values, raw_line in zip(reader, _raw_records(lines)[1:], strict=True):
        fields = _split_raw(raw_line)
        rows.append({h: (None if f == "" else v) for h, v, f in zip(header, values, fields,
                                                                   strict=True)})
    return rows


def _raw_records(text: str) -> list[str]:
    """CSV records as written (a quoted field may hold newlines)."""
    records, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "\n" and not quoted:
            records.append("".join(current))
            current = []
        else:
            current.append(ch)
    return records


def _split_raw(record: str) -> list[str]:
    fields, current, quoted = [], [], False
    for ch in record:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


# --- what goes and what stays -----------------------------------------------------------------

async def test_prune_deletes_old_final_history_and_keeps_the_rest(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str,
) -> None:
    h = await make_history(client, db, settings, customer)
    before, ledger_before = await snapshot(db), await ledger(db)
    balance_before = await balance(client, customer)

    await prune_cli(database_url, "--older-than", RETENTION, "--batch", "7")

    after = await snapshot(db)
    async with db.connect() as conn:
        kept_campaigns = set((await conn.execute(select(Campaign.id))).scalars())
        kept_parts = {c: n for c, n in await conn.execute(
            select(Part.campaign_id, func.count()).group_by(Part.campaign_id))}
        events = {r.id: r for r in await conn.execute(select(
            CallbackEvent.id, CallbackEvent.part_id, CallbackEvent.state))}
        receipts = set((await conn.execute(select(PendingReceipt.carrier_message_id))).scalars())
    assert kept_campaigns == {h.recent, h.unfinished, h.unposted}
    # the kept campaigns keep every part: an unfinished campaign is never pruned piecemeal
    assert kept_parts == {h.recent: 4, h.unfinished: 3, h.unposted: 1}
    assert after["parts"] == {k: v for k, v in before["parts"].items()
                              if v[1] in kept_campaigns}
    # callbacks: today's, and the one still to post; the old finished ones are gone
    recent_parts = select(Part.id).where(Part.campaign_id == h.recent)
    async with db.connect() as conn:
        recent_events = set((await conn.execute(select(CallbackEvent.id).where(
            CallbackEvent.part_id.in_(recent_parts)))).scalars())
    assert len(recent_events) == 8  # ENROUTE and DELIVRD of 4 parts
    assert set(events) == recent_events | {h.pending_event}
    assert {a[1] for a in after["callback_attempts"].values()} == recent_events | {
        h.pending_event}
    assert receipts == {"fresh-1"}
    assert after["idempotency_keys"] == {}
    # the ledger is untouched and the balance unchanged
    assert await ledger(db) == ledger_before
    assert await balance(client, customer) == balance_before
    async with db.connect() as conn:
        account_balance = (await conn.execute(select(Account.balance).where(
            Account.id == customer.account_id))).scalar_one()
        ledger_sum = (await conn.execute(select(func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == customer.account_id))).scalar_one()
    assert ledger_sum == account_balance
    # what stays still reads through the API
    r = await client.get("/v1/get_message", headers=customer.headers,
                         params={"campaign_id": h.recent})
    assert r.status_code == 200 and len(r.json()["data"]) == 4


async def test_nothing_newer_than_the_cutoff_goes(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str,
) -> None:
    await make_history(client, db, settings, customer)
    before = await snapshot(db)

    await prune_cli(database_url, "--older-than", "41")  # the history is 40 days old

    after = await snapshot(db)
    for table in ("parts", "callback_events", "callback_attempts", "campaigns"):
        assert after[table] == before[table], table


async def test_the_retention_setting_is_the_default_cutoff(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = await make_history(client, db, settings, customer)
    monkeypatch.setenv("TIKOSMS_RETENTION_DAYS", RETENTION)
    get_settings.cache_clear()
    try:
        await prune_cli(database_url)
    finally:
        get_settings.cache_clear()
    assert await campaign_parts(db, next(iter(h.old))) == 0
    assert await campaign_parts(db, h.recent) == 4


def test_without_a_retention_prune_refuses(database_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKOSMS_RETENTION_DAYS", raising=False)
    get_settings.cache_clear()
    try:
        result = invoke(database_url, "db", "prune")
    finally:
        get_settings.cache_clear()
    assert_one_line_error(result, "--older-than", "TIKOSMS_RETENTION_DAYS")


async def test_dry_run_counts_what_a_run_deletes_and_deletes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str,
) -> None:
    await make_history(client, db, settings, customer)
    before = await snapshot(db)

    dry = await prune_cli(database_url, "--older-than", RETENTION, "--dry-run", "--json",
                          "--batch", "5")
    assert await snapshot(db) == before
    real = await prune_cli(database_url, "--older-than", RETENTION, "--json", "--batch", "5")

    import json

    would, deleted = json.loads(dry.stdout)["would_delete"], json.loads(real.stdout)["deleted"]
    after = await snapshot(db)
    assert deleted == {t: len(before[t]) - len(after[t]) for t in MODELS}
    assert would == deleted
    assert deleted["parts"] == 12 * 2 + 3 and deleted["campaigns"] == 4


async def test_long_id_lists_are_split_across_statements(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_history(client, db, settings, customer)
    before = await snapshot(db)
    monkeypatch.setattr(retention, "IN_LIST", 3)  # a batch of 7 parts: IN lists of 3, 3, 1

    report = await retention.prune(
        db, retention.Cutoffs.of(utcnow(), float(RETENTION), settings), batch=7)

    after = await snapshot(db)
    assert report.rows == {t: len(before[t]) - len(after[t]) for t in MODELS}
    assert report.rows["parts"] == 12 * 2 + 3 and report.rows["callback_events"] > 7


# --- the export -------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True], ids=["csv", "gzip"])
async def test_export_holds_exactly_the_deleted_rows(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str, tmp_path: Path, compress: bool,
) -> None:
    await make_history(client, db, settings, customer)
    before = await snapshot(db)
    out = tmp_path / "export"

    result = await prune_cli(database_url, "--older-than", RETENTION, "--batch", "4",
                             "--export", str(out), *(["--gzip"] if compress else []))

    after = await snapshot(db)
    files = {p.name.split("-")[0]: p for p in out.iterdir()}
    for table, model in MODELS.items():
        deleted = {k: v for k, v in before[table].items() if k not in after[table]}
        if not deleted:
            assert table not in files, table
            continue
        assert files[table].name.endswith(".csv.gz" if compress else ".csv")
        exported = read_export(files[table])
        pk = [c.name for c in model.__table__.primary_key.columns]
        by_key = {tuple(str(r[c]) for c in pk): r for r in exported}
        assert len(by_key) == len(exported), f"{table}: a row exported twice"
        assert set(by_key) == set(deleted), table
        columns = [c.name for c in model.__table__.c]
        for key, row in deleted.items():
            assert list(by_key[key]) == columns
            assert by_key[key] == {c: _as_exported(v) for c, v in zip(columns, row,
                                                                      strict=True)}, table
    assert f"exported {len(before['parts']) - len(after['parts'])} parts rows" in result.stdout


def _as_exported(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def test_a_failed_export_deletes_nothing_of_its_batch(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    tmp_path: Path,
) -> None:
    await make_history(client, db, settings, customer)
    before = await snapshot(db)

    class DiskFullOnSecondBatch(CsvExport):
        """The disk fills up in the second batch, after its first table reached the file."""

        batches = 0
        tables_in_batch = 0

        def write(self, batch: Any) -> None:
            self.batches += 1
            self.tables_in_batch = 0
            super().write(batch)

        def _encode(self, data: TableRows, header: bool) -> bytes:
            self.tables_in_batch += 1
            if self.batches == 2 and self.tables_in_batch == 2:
                raise OSError(28, "No space left on device")
            return super()._encode(data, header)

    failing = DiskFullOnSecondBatch(tmp_path / "first", "run1")
    failing.check()
    cutoffs = retention.Cutoffs.of(utcnow(), float(RETENTION), settings)
    with pytest.raises(retention.PruneError, match="No space left"):
        await retention.prune(db, cutoffs, batch=5, export=failing)
    first = await snapshot(db)
    # the first batch is deleted and exported; the second is still in the database
    gone = {k for k in before["parts"] if k not in first["parts"]}
    assert len(gone) == 5
    assert {(r["id"],) for r in read_export(failing.path_for("parts"))} == gone

    second = CsvExport(tmp_path / "second", "run2")
    second.check()
    await retention.prune(db, cutoffs, batch=5, export=second)
    after = await snapshot(db)
    for table in MODELS:
        deleted = {k for k in before[table] if k not in after[table]}
        exported: list[dict[str, str | None]] = []
        for export in (failing, second):
            if table in export.files:
                exported += read_export(export.files[table])
        pk = [c.name for c in MODELS[table].__table__.primary_key.columns]
        keys = [tuple(str(r[c]) for c in pk) for r in exported]
        assert sorted(keys) == sorted(deleted), table  # every deleted row, each once


# --- beside live traffic ----------------------------------------------------------------------

@pytest.fixture
def api_process(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A real `tikosms api` process on the test database."""
    port = free_port()
    out, err = tmp_path / "api.out", tmp_path / "api.err"
    env = {**os.environ, "TIKOSMS_DATABASE_URL": database_url, "TIKOSMS_ACCESS_LOG": "false"}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tikosms")), "api", "--port", str(port)],
            stdout=stdout, stderr=stderr, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", out, err)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def test_prune_beside_sends_and_delivery_loses_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings, customer: Customer,
    database_url: str, api_process: Server,
) -> None:
    h = await make_history(client, db, settings, customer, old_recipients=150)
    ledger_before = await ledger(db)
    balance_before = await balance(client, customer)
    sent: list[dict[str, Any]] = []
    traffic, prune_started, prune_ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    during = 0  # sends answered while the prune ran

    async def sender(http: httpx.AsyncClient, n: int) -> None:
        nonlocal during
        for i in range(n):
            r = await http.post("/v1/message", headers=customer.headers, json={
                "from": "Shop", "to": f"38067{1000000 + i}", "message": "code 42"})
            assert r.status_code == 200, r.text
            sent.append(r.json())
            if len(sent) >= 10:
                traffic.set()
            if prune_started.is_set() and not prune_ended.is_set():
                during += 1

    async def pruner() -> Any:
        await traffic.wait()  # traffic first
        prune_started.set()
        try:
            return await prune_cli(database_url, "--older-than", RETENTION, "--batch", "10")
        finally:
            prune_ended.set()

    async with httpx.AsyncClient(base_url=api_process.base, timeout=60) as http, \
            delivery(db, settings):  # the worker sends and records receipts meanwhile
        senders = [asyncio.create_task(sender(http, 60)) for _ in range(3)]
        result = await pruner()
        await asyncio.gather(*senders)
        assert during > 0, "no send overlapped the prune: the test proves nothing"
        ids = [s["message_id"] for s in sent]
        deadline = time.monotonic() + WAIT
        while True:  # every part sent meanwhile is there and reaches DELIVRD
            async with db.connect() as conn:
                delivered = (await conn.execute(select(func.count()).select_from(Part).where(
                    Part.message_id.in_(ids), Part.status == "DELIVRD"))).scalar_one()
            if delivered == len(ids):
                break
            assert time.monotonic() < deadline, f"{delivered} of {len(ids)} delivered"
            await asyncio.sleep(0.1)
    assert "prune: parts:" in result.stderr  # progress went to stderr
    assert len(sent) == 180
    for campaign in h.old:
        assert await campaign_parts(db, campaign) == 0
    assert await campaign_parts(db, h.recent) == 4
    # the ledger: the old rows untouched, one reserve per send added
    now_ledger = await ledger(db)
    assert now_ledger[:len(ledger_before)] == ledger_before
    assert len(now_ledger) == len(ledger_before) + len(sent)
    cost = sum(Decimal(s["cost"]) for s in sent)
    assert await balance(client, customer) == balance_before - cost
