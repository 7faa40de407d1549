"""Single sends accepted while the gateway delivers them: a quick, reproducible measurement.

    .venv/bin/python bench/quick_sustained.py --db postgresql --seconds 10 [--rate 1000]
    .venv/bin/python bench/quick_sustained.py --db sqlite --seconds 10

Real processes: `tikosms smsc-sim` (answers at once, receipts at once), `tikosms api` +
`tikosms worker` (PostgreSQL) or `tikosms serve` (SQLite), on a scratch database. The load:
`wrk` (Debian package) with 64 keep-alive connections, closed loop, each POST /v1/message to a
new number; with `--rate`, an open loop of that many sends a second (bench/openloop.py, as the
`sustained` benchmark runs it: latency from each send's scheduled time). With `--split` on
SQLite, `tikosms api` + `tikosms worker` on the one file instead of `tikosms serve`. Prints one
JSON line: accepted/s, handed to the SMSC/s during the load, the queue (QUEUED parts) at the
end of the load, accept p50/p99, 200-to-submit_sm p50/p99 (created_at
to sent_at), and CPU ms per accepted send of each process (from /proc; the PostgreSQL backends of
the scratch database included). Not part of the full bench/run.py suite (the `sustained`
benchmark there is the complete version).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from bench.procs import Process

WRK_LUA = """
counter = 0
extra = "%(extra)s"
request = function()
  counter = counter + 1
  local body = string.format(
    '{"from": "TikoBench", "to": "38050%07d", "message": "bench code 1234"%s}',
    (math.random(0, 999) * 10000 + counter) % 10000000, extra)
  return wrk.format("POST", nil, nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def pg_backend_pids(db_url: str, name: str) -> list[int]:
    async def go() -> list[int]:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
            return [int(r[0]) for r in rows]
        finally:
            await conn.close()
    return asyncio.run(go())


def cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(p) for p in pids)


def run_wrk(url: str, token: str, seconds: float, connections: int, workdir: Path,
            callback_url: str | None = None) -> dict:
    script = workdir / "post.lua"
    extra = f', \\"callback_url\\": \\"{callback_url}\\"' if callback_url else ""
    script.write_text(WRK_LUA.replace("%(extra)s", extra), encoding="utf-8")
    done = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{int(seconds)}s", "-s", str(script),
         "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json", url],
        capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT"):
            n, errors, micros, p50, p99 = line.split()[1:]
            return {"requests": int(n), "errors": int(errors), "seconds": int(micros) / 1e6,
                    "p50_ms": float(p50), "p99_ms": float(p99)}
    raise RuntimeError(f"wrk failed: {done.stdout} {done.stderr}")


def open_loop(url: str, token: str, rate: float, seconds: float,
              callback_url: str | None = None) -> dict:
    """bench/openloop.py (raw HTTP/1.1, on a schedule, latency from the scheduled time), one
    process up to 3,000/s and two above, as the `sustained` benchmark runs it."""
    from bench import sustained

    body = sustained.SEND_BODY
    if callback_url:
        body = body[:-1] + f', "callback_url": "{callback_url}"}}'
    r = sustained.open_loop(url, rate, seconds, body=body,
                            headers=[f"Authorization: Bearer {token}",
                                     "Content-Type: application/json"],
                            processes=1 if rate <= 3000 else 2)
    return {"requests": r["ok"], "errors": r["scheduled"] - r["ok"],
            "seconds": max(seconds, r["ended"] - r["started"]),
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def xact_commits(db: procs.ScratchDb) -> int:
    """Transactions committed in the scratch database so far (PostgreSQL; 0 on SQLite)."""
    if db.kind != "postgresql":
        return 0

    async def go() -> int:
        conn = await asyncpg.connect(db.url)
        try:
            return int(await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        finally:
            await conn.close()
    return asyncio.run(go())


def parts_updates(db: procs.ScratchDb) -> tuple[int, int]:
    """Rows of `parts` (all its partitions) updated so far, and how many of those updates were
    HOT (no index entry written: PostgreSQL; (0, 0) on SQLite). The statistics collector
    reports with a delay of up to a second: read after the queue has drained."""
    if db.kind != "postgresql":
        return 0, 0

    async def go() -> tuple[int, int]:
        conn = await asyncpg.connect(db.url)
        try:
            row = await conn.fetchrow(
                "SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0) "
                "FROM pg_stat_user_tables WHERE relname LIKE 'parts%'")
            return int(row[0]), int(row[1])
        finally:
            await conn.close()
    return asyncio.run(go())


def table_writes(db: procs.ScratchDb) -> dict[str, tuple[int, int, int, int]]:
    """Rows inserted, updated (of which HOT) and deleted so far, per table (the partitions of a
    partitioned table summed under its name): PostgreSQL; {} on SQLite."""
    if db.kind != "postgresql":
        return {}

    async def go() -> dict[str, tuple[int, int, int, int]]:
        conn = await asyncpg.connect(db.url)
        try:
            rows = await conn.fetch(
                "SELECT coalesce(p.relname, s.relname) AS name, sum(s.n_tup_ins), "
                "sum(s.n_tup_upd), sum(s.n_tup_hot_upd), sum(s.n_tup_del) "
                "FROM pg_stat_user_tables s LEFT JOIN pg_inherits i ON i.inhrelid = s.relid "
                "LEFT JOIN pg_class p ON p.oid = i.inhparent GROUP BY 1")
            return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}
        finally:
            await conn.close()
    return asyncio.run(go())


def statements(db: procs.ScratchDb, reset: bool) -> list[tuple[str, int, int, float]]:
    """pg_stat_statements of the scratch database (calls, rows, total ms per statement), or
    nothing when the extension is not loaded: `shared_preload_libraries = 'pg_stat_statements'`
    and `CREATE EXTENSION pg_stat_statements` in the server's `postgres` database."""
    if db.kind != "postgresql" or db.name is None:
        return []

    async def go() -> list[tuple[str, int, int, float]]:
        conn = await asyncpg.connect(db.url.rsplit("/", 1)[0] + "/postgres")
        try:
            dbid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = $1", db.name)
            if reset:
                await conn.execute("SELECT pg_stat_statements_reset(0, $1, 0)", dbid)
                return []
            rows = await conn.fetch(
                "SELECT query, calls, rows, total_exec_time FROM pg_stat_statements "
                "WHERE dbid = $1 ORDER BY total_exec_time DESC LIMIT 15", dbid)
            return [(r[0], int(r[1]), int(r[2]), float(r[3])) for r in rows]
        except asyncpg.PostgresError as e:
            print(f"pg_stat_statements: {e}", file=sys.stderr)
            return []
        finally:
            await conn.close()
    return asyncio.run(go())


def db_figures(db: procs.ScratchDb, since: float) -> dict:
    """Parts of the sends made since `since` (epoch seconds; the warm-up's are not counted):
    how many were sent, how many are QUEUED, and 200-to-submit percentiles."""
    at = datetime.fromtimestamp(since, UTC).replace(tzinfo=None)
    if db.kind == "sqlite":
        import sqlite3
        assert db.path is not None
        conn = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, timeout=10)
        mine = f"created_at >= '{at.isoformat(' ')}'"
        try:
            n_sent = int(conn.execute(
                f"SELECT count(*) FROM parts WHERE sent_at IS NOT NULL AND {mine}").fetchone()[0])
            queued = int(conn.execute(
                f"SELECT count(*) FROM parts WHERE status = 'QUEUED' AND {mine}").fetchone()[0])
            timed = [(float(r[0]), float(r[1])) for r in conn.execute(
                "SELECT julianday(created_at) * 86400, (julianday(sent_at) - julianday(created_at))"
                f" * 86400000 FROM parts WHERE sent_at IS NOT NULL AND {mine}")]
        finally:
            conn.close()
    else:
        async def go() -> tuple[int, int, list[tuple[float, float]]]:
            conn = await asyncpg.connect(db.url)
            try:
                n = await conn.fetchval("SELECT count(*) FROM parts WHERE sent_at IS NOT NULL "
                                        "AND created_at >= $1", at)
                q = await conn.fetchval("SELECT count(*) FROM parts WHERE status = 'QUEUED' "
                                        "AND created_at >= $1", at)
                rows = await conn.fetch(
                    "SELECT extract(epoch FROM created_at), "
                    "extract(epoch FROM sent_at - created_at) * 1000 FROM parts "
                    "WHERE sent_at IS NOT NULL AND created_at >= $1", at)
                return int(n), int(q), [(float(r[0]), float(r[1])) for r in rows]
            finally:
                await conn.close()
        n_sent, queued, timed = asyncio.run(go())
    lags = sorted(lag for _, lag in timed)
    return {"sent": n_sent, "queued": queued, "submit_p50_ms": percentile(lags, 0.5),
            "submit_p99_ms": percentile(lags, 0.99), "timed": timed}


def print_timeline(timed: list[tuple[float, float]]) -> None:
    """200-to-submit_sm by the second the send was accepted in: a slow start, a stall, a drift."""
    if timed:
        first = min(t for t, _ in timed)
        _print_by_second([(t - first, lag) for t, lag in timed], "sent", "200-to-submit")


def _print_by_second(rows: list[tuple[float, float]], noun: str, what: str) -> None:
    """(seconds from the start, milliseconds): count, p50, p99 and max by whole second."""
    by_second: dict[int, list[float]] = {}
    for t, ms in rows:
        by_second.setdefault(int(t), []).append(ms)
    for second, values in sorted(by_second.items()):
        values.sort()
        print(f"  second {second:3}: {len(values):5} {noun}, {what} p50 "
              f"{percentile(values, 0.5):7.1f} ms, p99 {percentile(values, 0.99):7.1f} ms, "
              f"max {values[-1]:7.1f} ms", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rate", type=float, default=0, help="open loop at this rate (0: wrk)")
    p.add_argument("--pyspy", type=Path, help="profile each gateway process during the load "
                   "(py-spy raw stacks into this folder; bench/profile_summary.py reads them)")
    p.add_argument("--tables", action="store_true", help="PostgreSQL: print the rows each "
                   "table had inserted, updated (HOT) and deleted per accepted send")
    p.add_argument("--statements", action="store_true", help="PostgreSQL with pg_stat_statements "
                   "loaded: print the statements that took the most time, per accepted send")
    p.add_argument("--callbacks", action="store_true", help="every send with a callback_url "
                   "on bench/receiver.py (a process of its own): its status changes posted")
    p.add_argument("--warm", type=float, default=2, help="open loop: seconds of sends at "
                   "500/s (at most the rate) before the measured load, its queue drained")
    p.add_argument("--split", action="store_true", help="SQLite: `tikosms api` + `tikosms "
                   "worker` on the one file instead of `tikosms serve`")
    p.add_argument("--timeline", action="store_true", help="print 200-to-submit_sm by the "
                   "second each send was accepted in")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tikosms-quick-"))
    load1 = open("/proc/loadavg").read().split()[0]
    with procs.scratch_database(args.db, workdir) as db, ExitStack() as stack:
        account = procs.create_account(db, workdir)
        sim_port = procs.free_port()
        sim = stack.enter_context(Process(
            [procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval", "0"],
            workdir / "sim.log", port=sim_port))
        procs.tikosms(["carriers", "add", "sim", "--host", procs.HOST, "--port", str(sim_port),
                       "--system-id", "bench", "--password", "bench", "--window", "100"],
                      db, workdir)
        procs.tikosms(["routes", "add", "--match", "*", "--carrier", "sim"], db, workdir)
        named: dict[str, list[int]] = {"smsc-sim": [sim.pid]}
        receiver_url = callback_url = None
        if args.callbacks:
            rport = procs.free_port()
            receiver = stack.enter_context(Process(
                [procs.PYTHON, str(procs.BENCH / "receiver.py"), str(rport)],
                workdir / "receiver.log", port=rport))
            named["receiver"] = [receiver.pid]
            receiver_url = f"http://{procs.HOST}:{rport}"
            callback_url = f"{receiver_url}/cb"
        port = procs.free_port()
        env = procs.gateway_env(db, port, callback_allow_private=True)
        if db.kind == "sqlite" and not args.split:
            serve = stack.enter_context(Process([procs.TIKOSMS, "serve"], workdir / "serve.log",
                                                env, port))
            named["serve"] = [serve.pid]
        else:
            api = stack.enter_context(Process([procs.TIKOSMS, "api"], workdir / "api.log",
                                              env, port))
            worker = stack.enter_context(Process([procs.TIKOSMS, "worker"],
                                                 workdir / "worker.log", env))
            named["api"] = [api.pid]
            named["worker"] = [worker.pid]
        ready = workdir / ("serve.log" if "serve" in named else "worker.log")
        end = time.monotonic() + 60
        while ("worker" in named and b"running" not in ready.read_bytes()
               and time.monotonic() < end):
            time.sleep(0.1)
        time.sleep(2)  # binds up
        if args.warm and args.rate:  # caches, pools and binds warm, as a ladder's later steps
            open_loop(f"http://{procs.HOST}:{port}/v1/message", account.token,
                      min(args.rate, 500), args.warm, callback_url)
        waited = procs.wait_idle([pid for pids in named.values() for pid in pids])
        print(f"idle after {waited:.1f} s", file=sys.stderr)
        url = f"http://{procs.HOST}:{port}/v1/message"
        pg_before: dict[int, float] = {}
        if db.kind == "postgresql":
            assert db.name is not None
            pg_before = {pid: procs.cpu_seconds(pid) for pid in pg_backend_pids(db.url, db.name)}
            named["postgres"] = []
        before = {k: cpu(v) for k, v in named.items()}
        xacts = xact_commits(db)
        time.sleep(1.0 if args.tables else 0)  # the statistics collector's delay
        writes_before = table_writes(db) if args.tables else {}
        if args.statements:
            statements(db, reset=True)
        spies = []
        if args.pyspy:
            args.pyspy.mkdir(parents=True, exist_ok=True)
            spy = str(Path(procs.PYTHON).parent / "py-spy")
            for name in ("api", "worker", "serve"):
                for pid in named.get(name, []):
                    spies.append(subprocess.Popen(
                        [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                         "--nonblocking", "--subprocesses", "--duration", str(int(args.seconds)),
                         "--output", str(args.pyspy / f"{args.db}-{name}.txt")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t0 = time.time()
        if args.rate:
            load = open_loop(url, account.token, args.rate, args.seconds, callback_url)
        else:
            load = run_wrk(url, account.token, args.seconds, args.connections, workdir,
                           callback_url)
        after = {k: cpu(v) for k, v in named.items()}
        took = time.time() - t0
        posted = procs.receiver_count(receiver_url) if receiver_url else 0
        if db.kind == "postgresql":
            assert db.name is not None
            # backends opened during the load count whole; the scratch database's only
            before["postgres"] = 0.0
            after["postgres"] = sum(procs.cpu_seconds(pid) - pg_before.get(pid, 0.0)
                                    for pid in pg_backend_pids(db.url, db.name))
        xacts = xact_commits(db) - xacts
        for spy_proc in spies:
            spy_proc.wait(60)
        figures = db_figures(db, t0)
        time.sleep(1.5)  # the statistics collector's delay
        updated, hot = parts_updates(db)
        writes = table_writes(db) if args.tables else {}
        top = statements(db, reset=False) if args.statements else []
    accepted = load["requests"] - load["errors"]
    out = {
        "db": args.db, "mode": f"open {args.rate:g}/s" if args.rate else
        f"wrk {args.connections} conns", "load1": load1,
        "accepted_per_s": round(accepted / load["seconds"]),
        "handed_per_s": round(figures["sent"] / took),
        "queued_at_end": figures["queued"], "errors": load["errors"],
        **({"callbacks_per_s": round(posted / took)} if args.callbacks else {}),
        "p50_ms": round(load["p50_ms"], 1), "p99_ms": round(load["p99_ms"], 1),
        "submit_p50_ms": round(figures["submit_p50_ms"], 1),
        "submit_p99_ms": round(figures["submit_p99_ms"], 1),
        "db_commits_per_send": round(xacts / max(1, accepted), 2),
        "part_updates_per_send": round(updated / max(1, accepted), 2),
        "hot_share_of_part_updates": round(hot / max(1, updated), 2),
        "cpu_ms_per_send": {k: round(1000 * (after[k] - before[k]) / max(1, accepted), 3)
                            for k in named},
    }
    out["cpu_ms_total"] = round(sum(v for k, v in out["cpu_ms_per_send"].items()  # type: ignore[union-attr]
                                    if k != "smsc-sim"), 3)
    print(json.dumps(out))
    if args.timeline:
        print_timeline(figures["timed"])
    per = max(1, accepted)
    for name, counts in sorted(writes.items()):
        was = writes_before.get(name, (0, 0, 0, 0))
        ins, upd, hot_upd, dele = (round((c - b) / per, 2)
                                   for c, b in zip(counts, was, strict=True))
        if ins or upd or dele:
            print(f"  {name:24} per send: inserted {ins}, updated {upd} (HOT {hot_upd}), "
                  f"deleted {dele}", file=sys.stderr)
    for query, calls, rows, total in top:
        print(f"  {total / per:.4f} ms/send  {calls} calls  {rows / max(1, calls):.1f} rows/call "
              f"{total / max(1, calls):.3f} ms/call  {' '.join(query.split())[:150]}",
              file=sys.stderr)
    os.environ.get("KEEP") or subprocess.run(["rm", "-rf", str(workdir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
