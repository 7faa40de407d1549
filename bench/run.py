"""Run the benchmarks of issue 5 on SQLite and PostgreSQL, print each figure beside its
ceiling, and append the results to docs/benchmarks.md.

    .venv/bin/python bench/run.py [--quick] [--db sqlite|postgresql|both] [--only NAME ...]
                                  [--no-record | --record FILE]

NAME is one of: single, campaign, get_message, e2e, e2e_20ms, callbacks, sustained, jasmin
(repeat --only or separate with commas). `sustained` (about 10 minutes a database, 2 in quick
mode) and `jasmin` (the peer of bench/peers/jasmin/, once a run) run only when named.
`--quick` uses a few hundred to a few thousand messages (about a minute for everything); the
full run sends 100,000-part campaigns and takes several minutes.
PostgreSQL is reached at BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test),
where scratch databases `tikosms_bench_*` are created and dropped.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from bench.benchmarks import BENCHMARKS, FULL, QUICK, Context, Figure, Sizes, bench_campaign

RECORD = procs.ROOT / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM, and SIGINT even when started in the background (where a shell ignores it),
    # unwind the context managers: child processes stopped, scratch databases dropped
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    names = selected(args.only)
    steps: list[Any] = []
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    sizes = resize(QUICK if args.quick else FULL, args.size)
    workdir = procs.new_workdir()
    figures: list[Figure] = []
    notes: list[str] = []
    started = time.monotonic()
    load_before = procs.machine()["load"]
    try:
        notes += run_all(kinds, names, sizes, workdir, figures, steps)
    except KeyboardInterrupt:
        print(f"interrupted; process logs kept in {workdir}", file=sys.stderr)
        return 130
    failures = sum(1 for n in notes if " FAILED: " in n)
    elapsed = time.monotonic() - started
    info = procs.machine()
    info["load"] = f"{load_before} at start, {info['load']} at end"
    header = (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {info['commit']}, "
              f"{info['cores']} cores, {info['memory']}, Python {info['python']}, "
              f"{'quick' if args.quick else 'full'} run, {elapsed:.0f} s, "
              f"load average {info['load']}")
    table = markdown(figures)
    if steps:
        from bench.sustained import side_by_side, steps_table

        table += "\n\nSustained, every step:\n\n" + steps_table(steps)
        if any(s.setup.startswith("Jasmin") for s in steps):
            table += "\n\nSide by side, the same offered load:\n\n" + side_by_side(steps)
    print(f"\n{header}\n\n{table}")
    for note in notes:
        print(f"- {note}")
    if not args.no_record:
        record(args.record, header, table, notes)
        print(f"\nappended to {args.record}", file=sys.stderr)
    if failures == 0 and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"process logs kept in {workdir}", file=sys.stderr)
    return 1 if failures else 0


def run_all(kinds: list[str], names: list[str], sizes: Sizes, workdir: Path,
            figures: list[Figure], steps: list[Any] | None = None) -> list[str]:
    """Each benchmark on each database, in order; figures (and sustained steps) appended;
    the notes returned."""
    notes: list[str] = []
    for kind in kinds:
        ctx = Context(kind, sizes, workdir)
        for name in names:
            if name == "get_message" and "campaign" in names:
                continue  # read back by the campaign run, on the same server
            if name == "jasmin" and kind != kinds[-1]:
                continue  # the peer has no database of ours: once, after the last kind
            print(f"[{kind}] {name} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                if name == "campaign" and "get_message" in names:
                    figures += bench_campaign(ctx, write=True, read=True)
                else:
                    figures += BENCHMARKS[name](ctx)
            except Exception as exc:  # one benchmark failing must not stop the others
                traceback.print_exc()
                notes.append(f"{name} ({kind}) FAILED: {type(exc).__name__}: {exc}")
            print(f"[{kind}] {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr,
                  flush=True)
        notes += [n for n in ctx.notes if n not in notes]
        if steps is not None:
            steps += ctx.steps
    return notes


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmarks of the gateway against their ceilings.")
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--only", action="append", default=[],
                   help=f"run only these ({', '.join(BENCHMARKS)}); repeatable or a,b")
    p.add_argument("--size", action="append", default=[], metavar="FIELD=N",
                   help="override one size, e.g. e2e=20000 (fields of bench.benchmarks.Sizes)")
    p.add_argument("--record", type=Path, default=RECORD, help="markdown file to append to")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    p.add_argument("--no-record", action="store_true", help="print only")
    return p.parse_args(argv)


def selected(only: list[str]) -> list[str]:
    wanted = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown}; choose from {', '.join(BENCHMARKS)}")
    if not wanted:  # issue 5's benchmarks; the long sustained runs and the peer when named
        return [n for n in BENCHMARKS if n not in ("sustained", "jasmin")]
    return [n for n in BENCHMARKS if n in wanted]


def resize(sizes: Sizes, overrides: list[str]) -> Sizes:
    changes: dict[str, Any] = {}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in Sizes.__dataclass_fields__:
            known = ", ".join(Sizes.__dataclass_fields__)
            raise SystemExit(f"unknown size {name!r}; one of {known}")
        changes[name] = float(value) if name.endswith("_seconds") else int(value)
    return replace(sizes, **changes)


def markdown(figures: list[Figure]) -> str:
    rows = ["| benchmark | db | figure | value | ceiling | ceiling value | ratio | target | met |",
            "| --- | --- | --- | ---: | --- | ---: | ---: | --- | --- |"]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "**no**")
        ceiling = "-" if f.ceiling is None else fmt(f.ceiling)
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
        figure = f.figure + (f" ({f.note})" if f.note else "")
        rows.append(f"| {f.bench} | {f.db} | {figure} | {fmt(f.value)} | {f.ceiling_name} | "
                    f"{ceiling} | {ratio} | {f.target} | {met} |")
    return "\n".join(rows)


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def record(path: Path, header: str, table: str, notes: list[str]) -> None:
    """Append one run at the end of the file (the section `## Runs` collects them)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if "\n## Runs" not in text:
        text = text.rstrip("\n") + "\n\n## Runs\n\nAppended by `bench/run.py`, newest last.\n"
    block = f"\n### {header}\n\n{table}\n"
    if notes:
        block += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    path.write_text(text.rstrip("\n") + "\n" + block, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
