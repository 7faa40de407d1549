"""The benchmarks of issue 5, each beside the ceiling it is measured against in the same run.

Each function takes a `Context` (database kind, sizes, a work directory) and returns `Figure`s.
The gateway always runs as real processes (`tikosms serve`, `api`, `worker`) configured by
`TIKOSMS_*` variables; load comes from other processes (bench/loadgen.py) or, for the single
big requests, from this one.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import procs
from bench.procs import BenchAccount, Process, ScratchDb


@dataclass(frozen=True)
class Sizes:
    single_seconds: float  # counted seconds of load for the accept rate (each side)
    campaign: int  # recipients of the big campaign (also read back by get_message)
    e2e: int  # parts through SMPP, SMSC answering at once
    raw_echo: int  # parts the raw smpp34 client submits (the ceiling)
    e2e_latency: int  # parts through SMPP, SMSC answering after 20 ms
    callbacks: int  # recipients whose ENROUTE and DELIVRD reports are posted
    sustained_seconds: float = 0.0  # seconds per load step of `sustained` (0: 10 s, quick 2 s)


FULL = Sizes(10.0, 100_000, 100_000, 100_000, 100_000, 20_000)
QUICK = Sizes(2.0, 1_000, 1_000, 2_000, 1_000, 300)
SMSC_LATENCY_MS = 20.0
WINDOW = 100  # submit_sm in flight per bind (SmppCarrierConfig default)


@dataclass
class Figure:
    bench: str
    db: str
    figure: str  # what was measured, with its unit
    value: float
    ceiling_name: str = "-"
    ceiling: float | None = None
    target: str = "-"
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.ceiling if self.ceiling else None


@dataclass
class Context:
    db_kind: str
    sizes: Sizes
    workdir: Path
    notes: list[str] = field(default_factory=list)
    steps: list[Any] = field(default_factory=list)  # sustained.Step of `sustained` and peers

    def log(self, name: str) -> Path:
        return self.workdir / f"{self.db_kind}-{name}.log"


# --- 1. single-send accept rate --------------------------------------------------------------

def bench_single(ctx: Context) -> list[Figure]:
    body = json.dumps({"from": "TikoBench", "to": "380501234567", "message": "bench code 1234"})
    # One API process on both databases: on 2 cores shared with the load generator and
    # PostgreSQL, a second process splits the group commit into smaller batches that take turns
    # on the account row (measured: 2,913/s with 2, 3,560/s with 1, the same 0.20 ms of API CPU
    # per send). The ceiling is served the same way.
    processes = 1
    with procs.scratch_database(ctx.db_kind, ctx.workdir) as db:
        account = procs.create_account(db, ctx.workdir)
        port = procs.free_port()
        with Process([procs.TIKOSMS, "api"], ctx.log("api"),
                     procs.gateway_env(db, port, api_processes=processes), port) as api:
            before = procs.cpu_seconds(api.pid)
            gw = loadgen(f"http://{procs.HOST}:{port}/v1/message", body, ctx.sizes.single_seconds,
                         headers=[f"Authorization: Bearer {account.token}"], vary_to=True)
            gw_cpu = procs.cpu_seconds(api.pid) - before
    port = procs.free_port()
    with Process([procs.PYTHON, str(procs.BENCH / "bare_app.py"), str(port), str(processes)],
                 ctx.log("bare"), port=port) as bare_app:
        before = procs.cpu_seconds(bare_app.pid)
        bare = loadgen(f"http://{procs.HOST}:{port}/v1/message", body, ctx.sizes.single_seconds)
        bare_cpu = procs.cpu_seconds(bare_app.pid) - before
    if gw["errors"] or set(gw["statuses"]) - {"200"}:
        ctx.notes.append(f"single ({ctx.db_kind}): statuses {gw['statuses']}, "
                         f"errors {gw['errors']} {gw.get('error_kinds', {})} (not in the "
                         "rate nor the latencies)")
    bare_name = f"bare ASGI (uvicorn, same settings, {processes} process(es))"
    return [
        Figure("single", ctx.db_kind, "accepted/s (64 clients)", gw["rate"], bare_name,
               bare["rate"], ">= 4,000/s", gw["rate"] >= 4000),
        Figure("single", ctx.db_kind, "p50 latency, ms", gw["p50_ms"], bare_name, bare["p50_ms"]),
        Figure("single", ctx.db_kind, "p99 latency, ms", gw["p99_ms"], bare_name, bare["p99_ms"],
               "< 50 ms", gw["p99_ms"] < 50),
        # CPU per request drifts far less than rates on a shared machine
        Figure("single", ctx.db_kind, "server CPU per accepted send, ms",
               1000 * gw_cpu / max(1, gw["sent"]), bare_name,
               1000 * bare_cpu / max(1, bare["sent"])),
    ]


def loadgen(url: str, body: str, seconds: float, *, headers: list[str] | None = None,
            vary_to: bool = False, concurrency: int = 64, max_requests: int = 1_000_000,
            warmup: float | None = None) -> dict:
    """Run bench/loadgen.py in its own process; its JSON summary."""
    args = [procs.PYTHON, str(procs.BENCH / "loadgen.py"), url, "--body", body,
            "--duration", str(seconds), "--concurrency", str(concurrency),
            "--max-requests", str(max_requests),
            "--warmup", str(warmup if warmup is not None else min(1.0, seconds / 5))]
    for h in headers or []:
        args += ["--header", h]
    if vary_to:
        args.append("--vary-to")
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120,
                          cwd=procs.ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- 2. one big campaign, and 6. reading it back -------------------------------------------

def bench_campaign(ctx: Context, *, write: bool = True, read: bool = True) -> list[Figure]:
    n = ctx.sizes.campaign
    figures: list[Figure] = []
    with procs.scratch_database(ctx.db_kind, ctx.workdir) as db:
        account = procs.create_account(db, ctx.workdir)
        port = procs.free_port()
        base = f"http://{procs.HOST}:{port}"
        with Process([procs.TIKOSMS, "api"], ctx.log("api-campaign"),
                     procs.gateway_env(db, port), port) as api:
            asyncio.run(_get(f"{base}/v1/balance", account))  # warm the process up
            before = procs.rss_mb(api.pid)
            procs.reset_peak_rss(api.pid)
            body = {"from": "TikoBench", "message": "Spring sale: 20% off everything today",
                    "recipients": procs.recipients(n)}
            seconds, answer = asyncio.run(_post(f"{base}/v1/messages", account, body))
            peak = procs.peak_rss_mb(api.pid)
            campaign_id = answer["campaign_id"]
            if answer.get("recipients") != n:
                ctx.notes.append(f"campaign ({ctx.db_kind}): answer {str(answer)[:200]}")
            if write:
                copy_seconds, copy_name, bare_seconds = copy_ceiling(db, campaign_id)
                figures += [
                    Figure("campaign", ctx.db_kind, f"{n:,} recipients: s to the 200", seconds,
                           copy_name, copy_seconds, "< 1.5 s, <= 4x COPY",
                           seconds < 1.5 and seconds <= 4 * copy_seconds,
                           note=f"{bare_seconds:.2f} s into a table without indexes"),
                    Figure("campaign", ctx.db_kind, "server peak RSS, MB", peak,
                           target="< 300 MB", met=peak < 300,
                           note=f"{before:.0f} MB before the request"),
                ]
        if read:
            # a fresh server: memory freed by the big POST would otherwise hide the growth
            with Process([procs.TIKOSMS, "api"], ctx.log("api-read"),
                         procs.gateway_env(db, port), port) as api:
                asyncio.run(_get(f"{base}/v1/balance", account))
                figures += _read_back(ctx, api, f"{base}/v1/get_message", account,
                                      campaign_id, n)
    return figures


def bench_get_message(ctx: Context) -> list[Figure]:
    return bench_campaign(ctx, write=False, read=True)


def _read_back(ctx: Context, api: Process, url: str, account: BenchAccount, campaign_id: str,
               n: int) -> list[Figure]:
    time.sleep(0.5)
    procs.reset_peak_rss(api.pid)
    before = procs.rss_mb(api.pid)
    with rss_sampler(api.pid) as sampled:
        seconds, size, streamed = asyncio.run(_stream(url, account, campaign_id))
    growth = max(procs.peak_rss_mb(api.pid), sampled()) - before
    rows_note = f"{size / 1e6:.1f} MB body in {seconds:.2f} s"
    return [Figure("get_message", ctx.db_kind, f"{n:,} parts: memory growth, MB", growth,
                   target="streamed, < 50 MB", met=streamed and growth < 50,
                   note=f"{'chunked' if streamed else 'NOT streamed'}; {rows_note}"),
            Figure("get_message", ctx.db_kind, "rows/s read", n / seconds)]


def copy_ceiling(db: ScratchDb, campaign_id: str) -> tuple[float, str, float]:
    """Seconds to bulk-write the campaign's own rows into an empty table shaped like `parts`,
    with its indexes (the gateway cannot skip them): asyncpg COPY on PostgreSQL, one
    executemany transaction on SQLite. Also the same into a table without indexes."""
    if db.kind == "sqlite":
        assert db.path is not None
        conn = sqlite3.connect(db.path, timeout=30)
        try:
            rows = conn.execute("SELECT * FROM parts WHERE campaign_id = ?",
                                (campaign_id,)).fetchall()
            marks = ",".join("?" * len(rows[0]))
            indexes = [sql for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'parts' "
                "AND sql IS NOT NULL")]
            seconds = []
            for table, with_indexes in (("bench_copy", True), ("bench_bare", False)):
                conn.execute(f"CREATE TABLE {table} AS SELECT * FROM parts WHERE 0")
                if with_indexes:
                    for sql in indexes:
                        conn.execute(sql.replace(" ix_parts_", f" {table}_ix_")
                                     .replace(" ON parts ", f" ON {table} "))
                started = time.perf_counter()
                with conn:
                    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
                seconds.append(time.perf_counter() - started)
            return seconds[0], "SQLite executemany of the same rows (parts' indexes)", seconds[1]
        finally:
            conn.close()

    async def go() -> list[float]:
        conn = await asyncpg.connect(db.url)
        try:
            rows = await conn.fetch("SELECT * FROM parts WHERE campaign_id = $1", campaign_id)
            records = [tuple(r) for r in rows]
            columns = list(rows[0].keys())
            seconds = []
            for table, like in (("bench_copy", "INCLUDING ALL"),
                                ("bench_bare", "INCLUDING DEFAULTS")):
                await conn.execute(f"CREATE TABLE {table} (LIKE parts {like})")
                started = time.perf_counter()
                await conn.copy_records_to_table(table, records=records, columns=columns)
                seconds.append(time.perf_counter() - started)
            return seconds
        finally:
            await conn.close()

    with_indexes, bare = asyncio.run(go())
    return with_indexes, "PostgreSQL COPY of the same rows (parts' indexes)", bare


async def _get(url: str, account: BenchAccount) -> dict:
    async with aiohttp.ClientSession(headers=account.headers) as session:
        async with session.get(url) as r:
            return await r.json()


async def _post(url: str, account: BenchAccount, body: dict) -> tuple[float, dict]:
    data = json.dumps(body).encode()
    headers = {**account.headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        started = time.perf_counter()
        async with session.post(url, data=data) as r:
            answer = await r.json()
            seconds = time.perf_counter() - started
            if r.status != 200:
                raise RuntimeError(f"POST {url}: {r.status} {str(answer)[:300]}")
    return seconds, answer


async def _stream(url: str, account: BenchAccount, campaign_id: str) -> tuple[float, int, bool]:
    async with aiohttp.ClientSession(headers=account.headers,
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        started = time.perf_counter()
        async with session.get(url, params={"campaign_id": campaign_id}) as r:
            if r.status != 200:
                raise RuntimeError(f"GET {url}: {r.status}")
            streamed = r.headers.get("Transfer-Encoding", "").lower() == "chunked"
            size = 0
            async for chunk in r.content.iter_chunked(256 * 1024):
                size += len(chunk)
        return time.perf_counter() - started, size, streamed


@contextmanager
def rss_sampler(pid: int, every: float = 0.01) -> Iterator[Callable[[], float]]:
    """Sample VmRSS in a thread (a fallback where VmHWM cannot be reset); the peak seen."""
    peak = [0.0]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], procs.rss_mb(pid))
            stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0]
    finally:
        stop.set()
        thread.join(2)


# --- 3./4. end to end over SMPP --------------------------------------------------------------

def bench_e2e(ctx: Context) -> list[Figure]:
    n = ctx.sizes.e2e
    sim_port = procs.free_port()
    with Process([procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval", "0"],
                 ctx.log("smsc-sim"), port=sim_port):
        from tikosms.smpp.bench import raw_submit_rate

        raw = asyncio.run(raw_submit_rate(procs.HOST, sim_port, parts=ctx.sizes.raw_echo,
                                          window=WINDOW))
        rate, note = _through_gateway(ctx, sim_port, n, "e2e")
    return [Figure("e2e", ctx.db_kind, f"{n:,} parts SMPP+receipts, parts/s", rate,
                   "raw smpp34 submit rate to the simulator", raw.parts_per_second,
                   ">= 5,000/s", rate >= 5000, note)]


def bench_e2e_latency(ctx: Context) -> list[Figure]:
    n = ctx.sizes.e2e_latency
    sim_port = procs.free_port()
    with Process([procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval", "0",
                  "--latency-ms", str(SMSC_LATENCY_MS)], ctx.log("smsc-sim-20ms"),
                 port=sim_port):
        rate, note = _through_gateway(ctx, sim_port, n, "e2e-20ms")
    ceiling = WINDOW / (SMSC_LATENCY_MS / 1000)
    return [Figure("e2e_20ms", ctx.db_kind, f"{n:,} parts, SMSC +20 ms, 1 bind, parts/s", rate,
                   f"window {WINDOW} / 20 ms", ceiling, ">= 4,000/s", rate >= 4000, note)]


def _through_gateway(ctx: Context, sim_port: int, n: int, label: str) -> tuple[float, str]:
    """Send one campaign of `n` recipients through the gateway to the simulator; parts/s from
    the 200 answer until no part is SCHEDULED, QUEUED or ENROUTE."""
    with procs.scratch_database(ctx.db_kind, ctx.workdir) as db:
        account = procs.create_account(db, ctx.workdir)
        how = add_carrier(db, ctx.workdir, sim_port)
        if how not in ctx.notes:
            ctx.notes.append(how)
        with gateway(ctx, db, label) as base:
            body = {"from": "TikoBench", "message": "Your code is 123456",
                    "recipients": procs.recipients(n)}
            _, answer = asyncio.run(_post(f"{base}/v1/messages", account, body))
            accepted = time.perf_counter()
            seconds, left = wait_until_final(db, accepted, timeout=60 + n / 200)
    note = f"{answer['parts']:,} parts accepted"
    if left:
        note += f"; {left:,} still not final after {seconds:.0f} s"
    return (answer["parts"] - left) / seconds, note


def wait_until_final(db: ScratchDb, since: float, timeout: float) -> tuple[float, int]:
    """Poll the database until no part is active; (seconds since `since`, parts left).

    Each count reads the parts table, load on the database being measured: while many parts
    are left, the next count comes after about half the time they should take at the rate
    seen so far (at most 2 s), and every 0.1 s near the end, so the end is still seen within
    0.1 s."""
    left = -1
    last: tuple[float, int] | None = None
    while time.perf_counter() - since < timeout:
        left = procs.count_active_parts(db)
        now = time.perf_counter()
        if left == 0:
            break
        pause = 0.1
        if last is not None and last[1] > left:
            rate = (last[1] - left) / (now - last[0])
            pause = min(2.0, max(0.1, left / rate / 2))
        last = (now, left)
        time.sleep(pause)
    return time.perf_counter() - since, max(left, 0)


@contextmanager
def gateway(ctx: Context, db: ScratchDb, label: str, *, split_worker: bool = False,
            **extra: object) -> Iterator[str]:
    """The embedded default (`tikosms serve`) on SQLite; `tikosms api` + `tikosms worker` on
    PostgreSQL, as production runs them (`split_worker`: `worker --only delivery` and
    `worker --only callbacks`, one process each). Yields the API's base URL."""
    port = procs.free_port()
    env = procs.gateway_env(db, port, **extra)
    with ExitStack() as stack:
        if db.kind == "sqlite":
            stack.enter_context(Process([procs.TIKOSMS, "serve"], ctx.log(f"{label}-serve"),
                                        env, port))
        else:
            stack.enter_context(Process([procs.TIKOSMS, "api"], ctx.log(f"{label}-api"),
                                        env, port))
            sides = [["--only", "delivery"], ["--only", "callbacks"]] if split_worker else [[]]
            for side in sides:
                name = f"{label}-worker" + (f"-{side[1]}" if side else "")
                stack.enter_context(Process([procs.TIKOSMS, "worker", *side], ctx.log(name),
                                            env))
        yield f"http://{procs.HOST}:{port}"


def add_carrier(db: ScratchDb, workdir: Path, sim_port: int) -> str:
    """The simulator as carrier `sim` with a `*` route: through `tikosms carriers add` and
    `tikosms routes add` when the CLI has them, else straight into the tables."""
    try:
        procs.tikosms(["carriers", "add", "sim", "--host", procs.HOST, "--port", str(sim_port),
                       "--system-id", "bench", "--password", "bench",
                       "--window", str(WINDOW)], db, workdir)
        procs.tikosms(["routes", "add", "--match", "*", "--carrier", "sim"], db, workdir)
        return "carrier and route added with `tikosms carriers add` / `tikosms routes add`"
    except RuntimeError:
        pass
    from sqlalchemy import insert, select

    from tikosms.db.engine import Database
    from tikosms.db.models import CarrierRow, Route

    async def go() -> None:
        database = Database(db.url)
        try:
            now = datetime.now(UTC)
            async with database.begin() as conn:
                await conn.execute(insert(CarrierRow).values(
                    name="sim", kind="smpp", host=procs.HOST, port=sim_port, system_id="bench",
                    password="bench", settings=json.dumps({"window": WINDOW}), enabled=True,
                    created_at=now))
                carrier_id = (await conn.execute(
                    select(CarrierRow.id).where(CarrierRow.name == "sim"))).scalar_one()
                await conn.execute(insert(Route).values(match="*", carrier_id=carrier_id,
                                                        priority=100, created_at=now))
        finally:
            await database.dispose()

    asyncio.run(go())
    return ("carrier and route inserted into the `carriers`/`routes` tables directly "
            "(`tikosms carriers add` / `routes add` not available in this checkout)")


# --- 5. callbacks ------------------------------------------------------------------------------

def bench_callbacks(ctx: Context) -> list[Figure]:
    n = ctx.sizes.callbacks
    rport = procs.free_port()
    receiver_url = f"http://{procs.HOST}:{rport}"
    with Process([procs.PYTHON, str(procs.BENCH / "receiver.py"), str(rport)],
                 ctx.log("receiver"), port=rport):
        with procs.scratch_database(ctx.db_kind, ctx.workdir) as db:
            account = procs.create_account(db, ctx.workdir)
            # PostgreSQL: callbacks posted by a process of their own, beside delivery
            with gateway(ctx, db, "callbacks", split_worker=True, sim_receipt_delay_ms=0,
                         callback_allow_private=True) as base:
                body = {"from": "TikoBench", "message": "Your code is 123456",
                        "recipients": procs.recipients(n), "callback_url": f"{receiver_url}/cb"}
                asyncio.run(_post(f"{base}/v1/messages", account, body))
                accepted = time.perf_counter()
                seconds, left = wait_until_final(db, accepted, timeout=60 + n / 100)
                stats = wait_callbacks_settled(receiver_url, db, timeout=60 + n / 100)
        delivered = int(stats["count"])
        span = stats["last"] - stats["first"]
        rate = delivered / span if span > 0 else 0.0
        asyncio.run(_post_plain(f"{receiver_url}/reset"))
        sample = json.dumps({"type": "message.status", "message_id": "0" * 36,
                             "campaign_id": "0" * 36, "to": "380501234567", "part": 1,
                             "parts": 1, "status": "DELIVRD", "final": True,
                             "client_ref": None, "cost": "0.050", "error_code": None,
                             "sent_at": "2026-11-20T10:00:00Z",
                             "delivered_at": "2026-11-20T10:00:01Z"})
        raw = loadgen(f"{receiver_url}/cb", sample, 120.0, max_requests=max(delivered, 1000),
                      warmup=0.0)
    note = f"{delivered:,} callbacks for {n:,} parts; all final {seconds:.1f} s after the 200"
    if left:
        note += f"; {left} parts not final"
    return [Figure("callbacks", ctx.db_kind, "callbacks delivered/s", rate,
                   "raw aiohttp client, 64 connections", raw["rate"], ">= 5,000/s",
                   rate >= 5000, note)]


def wait_callbacks_settled(receiver_url: str, db: ScratchDb, timeout: float) -> dict:
    """Wait until the outbox has nothing pending and the receiver's count stops moving."""
    end = time.monotonic() + timeout
    last_count = -1
    while time.monotonic() < end:
        stats = asyncio.run(_get_plain(f"{receiver_url}/stats"))
        if stats["count"] == last_count and pending_callbacks(db) == 0:
            return stats
        last_count = stats["count"]
        time.sleep(0.5)
    return asyncio.run(_get_plain(f"{receiver_url}/stats"))


def pending_callbacks(db: ScratchDb) -> int:
    return procs.count(db, "SELECT count(*) FROM callback_events WHERE state = 'pending'")


async def _get_plain(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return await r.json()


async def _post_plain(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.post(url) as r:
        return await r.json()


def bench_sustained(ctx: Context) -> list[Figure]:
    from bench.sustained import bench_sustained as run

    return run(ctx)


def bench_jasmin(ctx: Context) -> list[Figure]:
    from bench.peers.jasmin.bench import bench_jasmin as run

    return run(ctx)


BENCHMARKS: dict[str, Callable[[Context], list[Figure]]] = {
    "single": bench_single,
    "campaign": lambda ctx: bench_campaign(ctx, write=True, read=False),
    "get_message": bench_get_message,
    "e2e": bench_e2e,
    "e2e_20ms": bench_e2e_latency,
    "callbacks": bench_callbacks,
    "sustained": bench_sustained,  # issue 11: accept and deliver at once (bench/sustained.py)
    "jasmin": bench_jasmin,  # the peer under the same load (bench/peers/jasmin/); once a run
}
