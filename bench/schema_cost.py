"""What one part costs PostgreSQL on this schema: bytes on disk, WAL over its life, rows beside
it, and what `tikosms db prune` costs. The figures of docs/scaling.md.

    .venv/bin/python bench/schema_cost.py [--bulk-parts 20000] [--singles 2000]

Runs the real gateway in this process (the API app through httpx, the delivery worker with the
simulated carrier, the callback dispatcher posting to a local receiver, the lifecycle roll-up)
on a scratch database `tikosms_scale_*` on BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test), dropped at the end. The server is not reconfigured;
autovacuum is turned off for the scratch database's tables only (a table storage parameter), so
that "before VACUUM" means the same thing on every run.

WAL is counted with pg_walinspect (created in the scratch database; a temporary physical
replication slot, dropped with its connection, keeps the segments until they are read): the
records between two
`pg_current_wal_lsn()` whose blocks belong to the scratch database, plus the commit records of
their transactions, each rounded up to its 8-byte alignment. So other databases' traffic on the
shared server (other helpers' tests) does not count; the raw LSN difference, which includes it,
is printed beside. Full-page images depend on when the last checkpoint was (checkpoint_timeout,
shared with everyone): they are shown apart.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import sys
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiohttp import web
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tikosms.accounts import service as accounts
from tikosms.app import create_app
from tikosms.config import Settings
from tikosms.db import retention
from tikosms.db.engine import Database
from tikosms.db.migrate import upgrade
from tikosms.db.types import utcnow
from tikosms.rates.service import RateRow, import_rates
from tikosms.runtime import delivery

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BULK_TEXT = ("Winter sale: 30% off everything in store and online until Sunday. Show this SMS "
             "at the till or use code WINTER30. Stop: 4545")  # 121 GSM-7 characters: 1 part
OTP_TEXT = "Your code is 483920"  # a one-time code: 1 part
CAMPAIGN_SIZE = 1000  # recipients per bulk request
TABLES = ("parts", "callback_events", "callback_attempts", "ledger_entries", "campaigns",
          "idempotency_keys", "traffic_minutes")
LIFE_TIMEOUT = 900.0  # seconds to deliver everything (bounds the wait; not a speed figure)
BILLION = 1_000_000_000


@dataclass
class Wal:
    """WAL written by the scratch database between two LSNs."""

    raw: int  # pg_wal_lsn_diff: the whole server's WAL, other databases included
    ours: int  # the scratch database's records + their commits, aligned
    fpi: int  # of which full-page images
    records: int
    by_relation: dict[str, int] = field(default_factory=dict)  # table (heap+index+toast) -> bytes
    index_bytes: dict[str, int] = field(default_factory=dict)  # table -> bytes of its indexes


async def main() -> int:
    args = parse()
    if args.sqlite_prune:
        await sqlite_prune(args)
        return 0
    name = f"tikosms_scale_{uuid.uuid4().hex[:8]}"
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    await admin(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(upgrade, url)
        await measure(url, args)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bulk-parts", type=int, default=20_000,
                   help="parts sent as bulk campaigns of 1,000 recipients")
    p.add_argument("--singles", type=int, default=2_000, help="single messages (POST /v1/message)")
    p.add_argument("--sqlite-prune", action="store_true",
                   help="instead: the same workload on a scratch SQLite file, then how fast "
                   "`tikosms db prune` deletes it and how long each batch holds the write lock")
    p.add_argument("--prune-batch", type=int, default=1000, help="prune's --batch")
    return p.parse_args()


async def sqlite_prune(args: argparse.Namespace) -> None:
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tikosms_scale_") as tmp:
        url = f"sqlite:///{tmp}/scale.db"
        await asyncio.to_thread(upgrade, url)
        settings = Settings(database_url=url, callback_allow_private=True,
                            sim_receipt_delay_ms=50, console_rollup_seconds=10)
        total = args.bulk_parts + args.singles
        async with receiver() as hook:
            db = Database(url)
            try:
                token = await seed(db)
                app = create_app(settings, db)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://tikosms.bench", timeout=120,
                                             headers={"Authorization": f"Bearer {token}"}) as api:
                    await send_bulk(api, args.bulk_parts, hook)
                    await send_singles(api, args.singles, hook)
                await deliver_sqlite(db, settings, total)
                async with db.begin() as conn:
                    # 40 days back, keeping the stored text format (microseconds included: the
                    # gateway compares times as text on SQLite, see db.types.sqlite_time)
                    def back(c: str) -> str:
                        return f"datetime({c}, '-40 days') || substr({c}, 20)"
                    for sql in (
                        f"UPDATE parts SET created_at = {back('created_at')}, "
                        f"updated_at = {back('updated_at')}",
                        f"UPDATE campaigns SET created_at = {back('created_at')}",
                        f"UPDATE callback_events SET created_at = {back('created_at')}, "
                        f"finished_at = {back('finished_at')}"):
                        await conn.exec_driver_sql(sql)
                marks = [time.monotonic()]
                report = await retention.prune(
                    db, retention.Cutoffs.of(utcnow(), 30, settings), batch=args.prune_batch,
                    progress=lambda _phase, _rows: marks.append(time.monotonic()))
            finally:
                await db.dispose()
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        deleted = report.rows["parts"]
        print(f"SQLite: tikosms db prune (batch {args.prune_batch}) of {deleted:,} parts: "
              f"{report.seconds:.1f} s, {deleted / max(report.seconds, 1e-9):,.0f} parts/s with "
              f"their callbacks and campaigns; {report.batches} batches, each (the write lock "
              f"held) median {statistics.median(gaps) * 1000:.0f} ms, longest "
              f"{max(gaps) * 1000:.0f} ms; rows {report.rows}")


async def deliver_sqlite(db: Database, settings: Settings, parts: int) -> None:
    deadline = time.monotonic() + LIFE_TIMEOUT
    async with delivery(db, settings):
        while True:
            async with db.connect() as conn:
                row: Any = (await conn.exec_driver_sql(
                    "SELECT (SELECT count(*) FROM parts WHERE status = 'DELIVRD'), "
                    "(SELECT count(*) FROM callback_events WHERE state <> 'delivered'), "
                    "(SELECT count(*) FROM campaigns WHERE completed_at IS NULL)")).one()
            if row[0] == parts and row[1] == 0 and row[2] == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not delivered within {LIFE_TIMEOUT} s: {tuple(row)}")
            await asyncio.sleep(0.5)


async def measure(url: str, args: argparse.Namespace) -> None:
    probe = await asyncpg.connect(plain(url))
    try:
        await probe.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        await probe.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for table in TABLES:
            for leaf in await leaves(probe, table):  # a partitioned table takes none itself
                await probe.execute(f'ALTER TABLE "{leaf}" SET (autovacuum_enabled = off)')
        server = await probe.fetchval("SHOW server_version")
        settings_line = ", ".join([f"{k} {await probe.fetchval(f'SHOW {k}')}" for k in (
            "shared_buffers", "wal_level", "full_page_writes", "checkpoint_timeout",
            "max_wal_size", "wal_compression")])
        print(f"PostgreSQL {server}: {settings_line}")
        print(f"workload: {args.bulk_parts:,} bulk parts ({CAMPAIGN_SIZE:,} per campaign, "
              f"{len(BULK_TEXT)} characters) and {args.singles:,} single messages "
              f"({len(OTP_TEXT)} characters), every one with a callback URL; simulated "
              "carrier, every part DELIVRD, every callback answered 200\n")
        settings = Settings(database_url=url, callback_allow_private=True,
                            sim_receipt_delay_ms=50, console_rollup_seconds=10)
        async with receiver() as hook:
            db = Database(url)
            try:
                token = await seed(db)
                app = create_app(settings, db)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://tikosms.bench", timeout=120,
                                             headers={"Authorization": f"Bearer {token}"}) as api:
                    stages: dict[str, tuple[int, Wal]] = {}
                    async with WalMeter(url) as meter:
                        await send_bulk(api, args.bulk_parts, hook)
                    stages["bulk: accept"] = (args.bulk_parts, meter.result())
                    inserted = await sizes(probe)
                    async with WalMeter(url) as meter:
                        await deliver(db, settings, probe, args.bulk_parts)
                    stages["bulk: life"] = (args.bulk_parts, meter.result())
                    async with WalMeter(url) as meter:
                        await send_singles(api, args.singles, hook)
                    stages["single: accept"] = (args.singles, meter.result())
                    async with WalMeter(url) as meter:
                        await deliver(db, settings, probe, args.bulk_parts + args.singles)
                    stages["single: life"] = (args.singles, meter.result())
            finally:
                await db.dispose()  # closing its connections flushes their statistics
        total = args.bulk_parts + args.singles
        report_wal(stages)
        await report_rows(probe, total)
        lived = await sizes(probe)
        await probe.execute("VACUUM (ANALYZE) " + ", ".join(TABLES))
        vacuumed = await sizes(probe)
        stats: dict[str, int] = {"tuple_count": 0, "tuple_len": 0, "free_space": 0}
        for leaf in await leaves(probe, "parts"):
            row = await probe.fetchrow("SELECT tuple_count, tuple_len, free_space "
                                       "FROM pgstattuple($1::regclass)", leaf)
            for k in stats:
                stats[k] += int(row[k])
        await report_partitions(probe)
        await probe.execute("VACUUM FULL " + ", ".join(TABLES))
        compacted = await sizes(probe)
        report_sizes(total, args.bulk_parts, inserted, lived, vacuumed, compacted, stats)
        await report_prune(url, probe, settings, total, args.prune_batch)
    finally:
        await probe.close()


# --- the workload -------------------------------------------------------------------------------

async def seed(db: Database) -> str:
    start = utcnow().replace(year=2020)
    async with db.begin() as conn:
        await import_rates(conn, [RateRow(None, "255", "", "Ukraine", Decimal("0.045"),
                                          start, None)], None)
        _, token, _ = await accounts.create_account(conn, name="Scale",
                                                    balance=Decimal(10_000_000))
    return str(token)


async def send_bulk(api: httpx.AsyncClient, parts: int, hook: str) -> None:
    for offset in range(0, parts, CAMPAIGN_SIZE):
        n = min(CAMPAIGN_SIZE, parts - offset)
        r = await api.post("/v1/messages", json={
            "from": "Brand", "message": BULK_TEXT, "callback_url": hook,
            "recipients": [f"38050{1000000 + offset + i}" for i in range(n)]})
        assert r.status_code == 200, r.text


async def send_singles(api: httpx.AsyncClient, count: int, hook: str) -> None:
    async def one(i: int) -> None:
        r = await api.post("/v1/message", json={
            "from": "Bank", "to": f"38067{1000000 + i}", "message": OTP_TEXT,
            "callback_url": hook})
        assert r.status_code == 200, r.text

    for start in range(0, count, 20):  # 20 requests in flight
        await asyncio.gather(*(one(i) for i in range(start, min(start + 20, count))))


async def deliver(db: Database, settings: Settings, probe: asyncpg.Connection,
                  parts: int) -> None:
    """Run the worker and the dispatcher until every part is DELIVRD, every callback posted
    and every campaign finished."""
    deadline = time.monotonic() + LIFE_TIMEOUT
    async with delivery(db, settings):
        while True:
            row = await probe.fetchrow(
                "SELECT (SELECT count(*) FROM parts WHERE status = 'DELIVRD') AS delivered, "
                "(SELECT count(*) FROM callback_events WHERE state <> 'delivered') AS posting, "
                "(SELECT count(*) FROM campaigns WHERE completed_at IS NULL) AS open")
            if row["delivered"] == parts and row["posting"] == 0 and row["open"] == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not delivered within {LIFE_TIMEOUT} s: {dict(row)}")
            await asyncio.sleep(0.5)


@asynccontextmanager
async def receiver() -> Any:
    """A callback endpoint answering 200 to every POST."""
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


# --- measuring ----------------------------------------------------------------------------------

async def lsn(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_flush_lsn()"))  # asyncpg: an int


# the scratch database's records in a range: per relation file, and the transaction ids seen
_WAL_SQL = r"""
SELECT substring(block_ref from 'rel \d+/\d+/(\d+)')::oid AS filenode, count(*) AS records,
       sum((record_length + 7) / 8 * 8) AS bytes, sum(fpi_length) AS fpi,
       array_agg(DISTINCT xid::text::bigint) FILTER (WHERE xid::text <> '0') AS xids
FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
WHERE block_ref ~ ('rel \d+/' || $3::text || '/')
GROUP BY 1
"""
# commit (and abort) records of those transactions
_COMMITS_SQL = """
SELECT count(*) AS records, COALESCE(sum((record_length + 7) / 8 * 8), 0) AS bytes
FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
WHERE resource_manager = 'Transaction' AND xid::text::bigint = ANY($3::bigint[])
"""

_RELATIONS_SQL = """
SELECT c.relfilenode, c.relkind,
       COALESCE(pg_partition_root(COALESCE(ti.oid, tt.oid, c.oid))::text,
                ti.relname, tt.relname, c.relname) AS owner
FROM pg_class c
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class ti ON ti.oid = i.indrelid
LEFT JOIN pg_class tt ON tt.reltoastrelid = c.oid
WHERE c.relfilenode <> 0
"""


class WalMeter:
    """Reads the WAL as it is written (every half second, on a connection of its own that
    holds a temporary replication slot, so that no segment is recycled before it is read)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.by_filenode: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # rec, b, fpi
        self.xids: set[int] = set()
        self.commits = [0, 0]
        self.raw = 0

    async def __aenter__(self) -> WalMeter:
        self.conn = await asyncpg.connect(plain(self.url))
        self.dboid = str(await self.conn.fetchval(
            "SELECT oid FROM pg_database WHERE datname = current_database()"))
        # a temporary slot keeps the WAL from here on until this connection closes (the shared
        # server checkpoints at every DROP DATABASE of the test suites and recycles segments
        # within seconds); it goes with the connection, even if this process dies
        await self.conn.execute("SELECT pg_create_physical_replication_slot($1, true, true)",
                                f"tikosms_scale_{uuid.uuid4().hex[:8]}")
        self.start = self.prev = await lsn(self.conn)
        self.task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self._read()
        await asyncio.sleep(0.2)  # the last commits reach the flushed WAL
        await self._read()
        self.owners = {r["relfilenode"]: (r["owner"], _text(r["relkind"]))
                       for r in await self.conn.fetch(_RELATIONS_SQL)}
        self.raw = self.prev - self.start
        await self.conn.close()

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self._read()

    async def _read(self) -> None:
        end = await lsn(self.conn)
        if end <= self.prev:
            return
        chunk: set[int] = set()
        for r in await self.conn.fetch(_WAL_SQL, self.prev, end, self.dboid):
            acc = self.by_filenode[int(r["filenode"])]
            acc[0] += int(r["records"])
            acc[1] += int(r["bytes"])
            acc[2] += int(r["fpi"] or 0)
            chunk.update(r["xids"] or [])
        self.xids |= chunk
        # a commit comes after its transaction's records: look for those of every xid seen
        # so far that has not committed yet (kept small: committed ones are dropped)
        if self.xids:
            row = await self.conn.fetchrow(_COMMITS_SQL, self.prev, end, sorted(self.xids))
            self.commits[0] += int(row["records"])
            self.commits[1] += int(row["bytes"])
            done = await self.conn.fetch(
                "SELECT DISTINCT xid::text::bigint AS x FROM pg_get_wal_records_info("
                "$1::pg_lsn, $2::pg_lsn) WHERE resource_manager = 'Transaction' "
                "AND xid::text::bigint = ANY($3::bigint[])", self.prev, end, sorted(self.xids))
            self.xids -= {int(d["x"]) for d in done}
        self.prev = end

    def result(self) -> Wal:
        wal = Wal(raw=self.raw, ours=self.commits[1], fpi=0, records=self.commits[0])
        by_rel: dict[str, int] = defaultdict(int)
        by_index: dict[str, int] = defaultdict(int)
        by_rel["(commit records)"] = self.commits[1]
        for filenode, (records, size, fpi) in self.by_filenode.items():
            wal.ours += size
            wal.fpi += fpi
            wal.records += records
            owner, kind = self.owners.get(filenode, ("(catalog or dropped)", "?"))
            owner = re.sub(r"^pg_toast_\d+$", "(toast)", owner)
            by_rel[owner] += size
            if kind == "i":
                by_index[owner] += size
        wal.by_relation, wal.index_bytes = dict(by_rel), dict(by_index)
        return wal


async def sizes(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
    """Per table: (rows, heap bytes incl. toast and free space map, index bytes), summed over
    its partitions when it is partitioned (migration 0013)."""
    out = {}
    for table in TABLES:
        rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
        heap = index = 0
        for leaf in await leaves(conn, table):
            heap += await conn.fetchval("SELECT pg_table_size($1::regclass)", leaf)
            index += await conn.fetchval("SELECT pg_indexes_size($1::regclass)", leaf)
        out[table] = (int(rows), int(heap), int(index))
    return out


async def leaves(conn: asyncpg.Connection, table: str) -> list[str]:
    """The table itself, or its partitions when it is partitioned."""
    rows = await conn.fetch("SELECT relid::regclass::text AS name FROM pg_partition_tree($1) "
                            "WHERE isleaf", table)
    return [r["name"] for r in rows] or [table]


async def report_partitions(conn: asyncpg.Connection) -> None:
    """The partitions holding the run's rows, and what a day of them weighs at 1 billion parts
    a month (33.7 million a day, 390/s on average)."""
    print("partitions with rows (after the life, before VACUUM)")
    day_parts = 390 * 86_400
    for table in ("parts", "callback_events", "callback_attempts", "pending_receipts",
                  "idempotency_keys"):
        for leaf in await leaves(conn, table):
            n = await conn.fetchval(f'SELECT count(*) FROM "{leaf}"')
            if n:
                size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", leaf)
                print(f"  {leaf:<30} {n:>8,} rows {size / 1e6:>8.1f} MB")
    parts = await conn.fetchval("SELECT count(*) FROM parts")
    for table in ("parts", "callback_events", "callback_attempts"):
        total = sum([await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", leaf)
                     for leaf in await leaves(conn, table)])
        print(f"  {table}: {total / max(parts, 1):,.0f} bytes per part -> a day at 390 parts/s "
              f"(33.7 M parts): {total / max(parts, 1) * day_parts / 1e9:,.1f} GB")
    print()


# --- reporting ----------------------------------------------------------------------------------

def report_wal(stages: dict[str, tuple[int, Wal]]) -> None:
    print("WAL per part, by stage (bytes; the scratch database only, commits included)")
    print(f"  {'stage':<16} {'parts':>7} {'WAL/part':>9} {'no FPI':>8} {'records/part':>13}"
          f" {'raw LSN diff/part':>18}  biggest writers (bytes/part)")
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for stage, (parts, w) in stages.items():
        top = sorted(w.by_relation.items(), key=lambda kv: -kv[1])[:4]
        writers = ", ".join(f"{k} {v / parts:.0f}" for k, v in top)
        parts_idx = w.index_bytes.get("parts", 0) / parts
        print(f"  {stage:<16} {parts:>7,} {w.ours / parts:>9.0f} {(w.ours - w.fpi) / parts:>8.0f}"
              f" {w.records / parts:>13.1f} {w.raw / parts:>18.0f}  {writers}"
              f" (parts indexes {parts_idx:.0f})")
        kind = stage.split(":")[0]
        totals[kind][0] += w.ours / parts
        totals[kind][1] += (w.ours - w.fpi) / parts
    for kind, (with_fpi, without) in totals.items():
        print(f"  {kind} part, whole life: {with_fpi:,.0f} bytes of WAL "
              f"({without:,.0f} without full-page images)")
    print()
    for kind, (with_fpi, without) in totals.items():
        print(f"  1 billion {kind} parts a month: {with_fpi * BILLION / 1e12:.1f} TB of WAL "
              f"({without * BILLION / 1e12:.1f} TB without FPI); average "
              f"{with_fpi * BILLION / (30 * 86400) / 1e6:.1f} MB/s; at 50,000 parts/s "
              f"{with_fpi * 50_000 / 1e6:.0f} MB/s ({without * 50_000 / 1e6:.0f} without FPI)")
    print()


async def report_rows(conn: asyncpg.Connection, parts: int) -> None:
    print(f"rows beside the parts ({parts:,} parts)")
    for table in ("ledger_entries", "campaigns", "callback_events", "callback_attempts",
                  "traffic_minutes"):
        n = await conn.fetchval(f"SELECT count(*) FROM {table}")
        print(f"  {table:<18} {n:>8,}  {n / parts:.3f} per part")
    stats = await conn.fetch(
        "SELECT COALESCE(pg_partition_root(relid)::text, relname) AS relname, "
        "sum(n_tup_ins) AS n_tup_ins, sum(n_tup_upd) AS n_tup_upd, "
        "sum(n_tup_hot_upd) AS n_tup_hot_upd, sum(n_tup_del) AS n_tup_del "
        "FROM pg_stat_user_tables WHERE COALESCE(pg_partition_root(relid)::text, relname) IN "
        "('parts', 'callback_events', 'campaigns', 'accounts') GROUP BY 1 ORDER BY 1")
    for s in stats:
        print(f"  {s['relname']:<18} inserts {s['n_tup_ins']:>8,}, updates {s['n_tup_upd']:>8,} "
              f"(HOT {s['n_tup_hot_upd']:,}), deletes {s['n_tup_del']:,}")
    print()


def report_sizes(parts: int, bulk: int, inserted: dict[str, tuple[int, int, int]],
                 lived: dict[str, tuple[int, int, int]], vacuumed: dict[str, tuple[int, int, int]],
                 compacted: dict[str, tuple[int, int, int]], stats: Any) -> None:
    print("bytes on disk per part (heap incl. toast + indexes), per table")
    print(f"  {'table':<18} {'inserted':>10} {'after life':>11} {'VACUUM':>8} {'VACUUM FULL':>12}")
    total = [0.0, 0.0, 0.0, 0.0]
    for table in TABLES:
        cells = []
        for i, snap in enumerate((inserted, lived, vacuumed, compacted)):
            n = bulk if snap is inserted else parts  # sizes "inserted": after the bulk accept
            per = (snap[table][1] + snap[table][2]) / n
            cells.append(per)
            total[i] += per
        print(f"  {table:<18} {cells[0]:>10.0f} {cells[1]:>11.0f} {cells[2]:>8.0f}"
              f" {cells[3]:>12.0f}")
    print(f"  {'all':<18} {total[0]:>10.0f} {total[1]:>11.0f} {total[2]:>8.0f} {total[3]:>12.0f}")
    p = compacted["parts"]
    print(f"  parts after VACUUM FULL: heap {p[1] / parts:.0f} + indexes {p[2] / parts:.0f} "
          f"bytes per row; average tuple {stats['tuple_len'] / max(stats['tuple_count'], 1):.0f}"
          f" bytes (pgstattuple after VACUUM: {stats['free_space'] / parts:.0f} bytes free "
          "space per row)")
    print(f"  1 billion parts (+ their callbacks, ledger, campaigns) compacted: "
          f"{total[3] * BILLION / 1e12:.2f} TB; as left after their life without vacuum: "
          f"{total[1] * BILLION / 1e12:.2f} TB")
    print()


async def report_prune(url: str, probe: asyncpg.Connection, settings: Settings,
                       parts: int, batch: int) -> None:
    """Move everything 40 days back, then prune it: time and WAL per pruned part."""
    back = "interval '40 days'"
    await probe.execute(f"UPDATE parts SET created_at = created_at - {back}, "
                        f"updated_at = updated_at - {back}")
    await probe.execute(f"UPDATE campaigns SET created_at = created_at - {back}")
    await probe.execute(f"UPDATE callback_events SET created_at = created_at - {back}, "
                        f"finished_at = finished_at - {back}")
    await probe.execute("VACUUM (ANALYZE) parts, campaigns, callback_events")
    plan = await probe.fetch(
        "EXPLAIN SELECT p.id, p.updated_at FROM parts p WHERE p.updated_at < now() - interval "
        "'30 days' AND p.status IN ('DELIVRD', 'UNDELIV') AND EXISTS (SELECT 1 FROM campaigns c "
        "WHERE c.id = p.campaign_id AND c.completed_at IS NOT NULL) "
        "ORDER BY p.updated_at, p.id LIMIT 1000")
    db = Database(url)
    try:
        async with WalMeter(url) as meter:
            report = await retention.prune(db, retention.Cutoffs.of(
                utcnow(), 30, settings), batch=batch)
        wal = meter.result()
    finally:
        await db.dispose()
    deleted = report.rows["parts"]
    print(f"tikosms db prune (batch {batch}) of {deleted:,} parts: {report.seconds:.1f} s, "
          f"{deleted / max(report.seconds, 1e-9):,.0f} parts/s with their callbacks and "
          f"campaigns; WAL {wal.ours / max(deleted, 1):.0f} bytes per part "
          f"({(wal.ours - wal.fpi) / max(deleted, 1):.0f} without FPI); rows {report.rows}")
    assert deleted == parts, f"pruned {deleted} of {parts}"
    print("  candidate query plan: " + " / ".join(r[0].strip() for r in plan[:4]))
    await report_partition_drop(url, probe)


async def report_partition_drop(url: str, probe: asyncpg.Connection) -> None:
    """What dropping a partition costs: DETACH CONCURRENTLY + DROP of the run's partitions of
    parts, callback events and attempts (their files still hold the run's space: the rows
    were deleted above, not vacuumed), as `tikosms db prune` does it."""
    names = []
    for table in ("parts", "callback_events", "callback_attempts"):
        names += [(table, leaf) for leaf in await leaves(probe, table)
                  if leaf != f"{table}_initial"]
    sized = [(t, n, await probe.fetchval("SELECT pg_total_relation_size($1::regclass)", n))
             for t, n in names]
    biggest = sorted(sized, key=lambda x: -x[2])[:3]
    started = time.monotonic()
    async with WalMeter(url) as meter:
        for table, leaf, _ in biggest:
            await probe.execute(f'ALTER TABLE {table} DETACH PARTITION "{leaf}" CONCURRENTLY')
            await probe.execute(f'DROP TABLE "{leaf}"')
    wal = meter.result()
    print(f"partition drop (DETACH CONCURRENTLY + DROP) of {', '.join(n for _, n, _ in biggest)}"
          f" ({sum(b for *_, b in biggest) / 1e6:.1f} MB): {time.monotonic() - started:.2f} s, "
          f"WAL {wal.ours:,} bytes in all")


def _text(value: Any) -> str:
    """asyncpg hands a "char" column over as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(plain(ADMIN_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
