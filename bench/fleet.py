"""Fleet throughput (issue 13): 1, 2 and 3 `tikosms worker` processes on one PostgreSQL.

For each worker count: a scratch PostgreSQL database, `tikosms smsc-sim` with room to spare (no
rate limit, receipts at once), the simulator as carrier `sim` allowing `--binds` binds per
worker (slots: each worker holds that many) and no tps, `--apis` `tikosms api` processes and
N `tikosms worker` processes; one campaign of `--parts` parts is posted, then the database is
read every 0.25 s until every part has its
receipt. Per worker count: parts handed to the SMSC per second (parts with `sent_at`, from the
first to the last), receipts recorded per second (DELIVRD parts, from the first to the last),
and CPU ms per part of each process (/proc, from the POST to the last receipt). The ceiling
beside them, measured in the same run: the simulator alone fed by a bare SMPP client
(smpp34, one bind, window 100): what the SMSC side takes at most on this machine.

    .venv/bin/python bench/fleet.py                      # 20,000 parts, 1, 2 and 3 workers
    .venv/bin/python bench/fleet.py --parts 50000 --write   # and add the table to docs

Never run as a test (a shared 2-core machine moves every figure); tests/bench only checks its
arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from bench.benchmarks import _post
from bench.procs import Process

DOCS = procs.ROOT / "docs" / "benchmarks.md"
SECTION = "## Fleet: 1, 2 and 3 workers on one PostgreSQL (issue 13)"
WINDOW = 100


@dataclass
class Row:
    workers: int
    apis: int
    parts: int
    handed_per_s: float = 0.0
    receipts_per_s: float = 0.0
    seconds: float = 0.0  # from the POST to the last receipt
    finished: bool = False
    cpu_ms: dict[str, float] = field(default_factory=dict)  # process -> CPU ms per part


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=20_000, help="parts of the campaign")
    parser.add_argument("--workers", default="1,2,3",
                        help="worker counts to run, comma-separated (default 1,2,3)")
    parser.add_argument("--apis", type=int, default=1, choices=(1, 2),
                        help="`tikosms api` processes (default 1)")
    parser.add_argument("--binds", type=int, default=2, help="binds per worker to the SMSC")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a worker count may take before it is cut short")
    parser.add_argument("--write", action="store_true",
                        help=f"add the table to {DOCS.relative_to(procs.ROOT)}")
    args = parser.parse_args(argv)
    args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers takes counts of 1 or more, e.g. 1,2,3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = procs.new_workdir()
    started = datetime.now(UTC)
    info = procs.machine()
    print(f"fleet benchmark: {args.parts:,} parts, workers {args.workers}, {args.apis} api, "
          f"{args.binds} binds per worker; logs in {workdir}", flush=True)
    ceiling = smsc_ceiling(workdir, min(args.parts, 20_000))
    print(f"ceiling: bare SMPP client into the simulator {ceiling:,.0f} parts/s", flush=True)
    rows = []
    for workers in args.worker_counts:
        row = run_fleet(workdir, workers, args)
        rows.append(row)
        print(_line(row, ceiling), flush=True)
    table = render(rows, ceiling)
    print(table)
    if args.write:
        write_docs(table, args, info, started)
        print(f"written to {DOCS}")
    return 0


def smsc_ceiling(workdir: Path, parts: int) -> float:
    from tikosms.smpp.bench import raw_submit_rate

    port = procs.free_port()
    with Process([procs.TIKOSMS, "smsc-sim", "--port", str(port), "--stats-interval", "0"],
                 workdir / "smsc-ceiling.log", port=port):
        result = asyncio.run(raw_submit_rate(procs.HOST, port, parts=parts, window=WINDOW))
    return result.parts_per_second


def run_fleet(workdir: Path, workers: int, args: argparse.Namespace) -> Row:
    row = Row(workers, args.apis, args.parts)
    with ExitStack() as stack:
        db = stack.enter_context(procs.scratch_database("postgresql", workdir))
        account = procs.create_account(db, workdir)
        sim_port = procs.free_port()
        sim = stack.enter_context(Process(
            [procs.TIKOSMS, "smsc-sim", "--port", str(sim_port), "--stats-interval", "0"],
            workdir / f"smsc-{workers}w.log", port=sim_port))
        procs.tikosms(["carriers", "add", "sim", "--host", procs.HOST, "--port", str(sim_port),
                       "--system-id", "bench", "--password", "bench", "--window", str(WINDOW),
                       "--binds", str(args.binds * workers)], db, workdir)
        procs.tikosms(["routes", "add", "--match", "*", "--carrier", "sim"], db, workdir)
        pids = {"simulator": sim.pid}
        ports = []
        for i in range(args.apis):
            port = procs.free_port()
            api = stack.enter_context(Process([procs.TIKOSMS, "api"],
                                              workdir / f"api{i + 1}-{workers}w.log",
                                              procs.gateway_env(db, port), port))
            pids[f"api {i + 1}"] = api.pid
            ports.append(port)
        for i in range(workers):
            worker = stack.enter_context(Process([procs.TIKOSMS, "worker", "--only", "delivery"],
                                                 workdir / f"worker{i + 1}-{workers}w.log",
                                                 procs.gateway_env(db)))
            pids[f"worker {i + 1}"] = worker.pid
        # the carrier's binds are slots the workers share (delivery/slots.py): wait until each
        # worker holds its `--binds` of them
        deadline = time.monotonic() + 30
        held = ("SELECT count(DISTINCT holder) FROM carrier_slots WHERE holder IS NOT NULL "
                "AND lease_until > now() AT TIME ZONE 'utc'")
        while time.monotonic() < deadline and procs.count(db, held) < workers:
            time.sleep(0.25)
        time.sleep(2.0)  # their binds come up
        cpu0 = {name: procs.cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        body = {"from": "TikoBench", "message": "Spring sale: 20% off everything today",
                "recipients": procs.recipients(args.parts)}
        asyncio.run(_post(f"http://{procs.HOST}:{ports[0]}/v1/messages", account, body))
        while time.monotonic() - t0 < args.timeout:
            if procs.count(db, "SELECT count(*) FROM parts WHERE status = 'DELIVRD'") >= args.parts:
                row.finished = True
                break
            time.sleep(0.25)
        row.seconds = time.monotonic() - t0
        cpu1 = {name: procs.cpu_seconds(pid) for name, pid in pids.items()}
        row.cpu_ms = {name: 1000 * (cpu1[name] - cpu0[name]) / args.parts for name in pids}
        handed = _span(db, "sent_at", "sent_at IS NOT NULL")
        receipts = _span(db, "updated_at", "status = 'DELIVRD'")
        row.handed_per_s = handed[0] / handed[1] if handed[1] > 0 else 0.0
        row.receipts_per_s = receipts[0] / receipts[1] if receipts[1] > 0 else 0.0
    return row


def _span(db: procs.ScratchDb, column: str, where: str) -> tuple[int, float]:
    """(parts, seconds from the first to the last `column`) of the parts matching `where`."""
    parts = procs.count(db, f"SELECT count(*) FROM parts WHERE {where}")
    millis = procs.count(db, f"SELECT coalesce(extract(epoch FROM max({column}) - "
                             f"min({column})) * 1000, 0)::bigint FROM parts WHERE {where}")
    return parts, millis / 1000


def _line(row: Row, ceiling: float) -> str:
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in row.cpu_ms.items())
    return (f"{row.workers} worker(s): handed {row.handed_per_s:,.0f}/s, receipts "
            f"{row.receipts_per_s:,.0f}/s, {row.seconds:.1f} s"
            f"{'' if row.finished else ' (CUT SHORT)'}; CPU ms/part: {cpu}; "
            f"ceiling {ceiling:,.0f}/s")


def render(rows: list[Row], ceiling: float) -> str:
    lines = ["| workers | api | parts | handed to the SMSC/s | receipts recorded/s | "
             "ceiling: bare SMPP client/s | POST to last receipt, s | CPU ms per part |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_ms.items())
        lines.append(f"| {r.workers} | {r.apis} | {r.parts:,} | {r.handed_per_s:,.0f} | "
                     f"{r.receipts_per_s:,.0f} | {ceiling:,.0f} | {r.seconds:.1f}"
                     f"{'' if r.finished else ' (cut short)'} | {cpu} |")
    return "\n".join(lines)


def write_docs(table: str, args: argparse.Namespace, info: dict[str, str],
               started: datetime) -> None:
    heading = (f"### {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}, {info['cores']} "
               f"cores, {info['memory']}, Python {info['python']}, load average {info['load']} "
               f"at start; `bench/fleet.py --parts {args.parts} --workers {args.workers} "
               f"--apis {args.apis} --binds {args.binds}`")
    text = DOCS.read_text(encoding="utf-8")
    block = f"{heading}\n\n{table}\n"
    if SECTION in text:
        head, _, tail = text.partition(SECTION + "\n")
        text = f"{head}{SECTION}\n\n{block}{tail}"
    else:
        runs = text.find("\n## Runs")
        section = f"{SECTION}\n\n{block}\n"
        text = (text + "\n" + section if runs < 0
                else text[:runs + 1] + section + text[runs + 1:])
    DOCS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
