"""tikosms db upgrade | prune | partitions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from tikosms.cli.base import cli, database_url, emit, ensure_schema, fail, json_option, run


@cli.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations) and retention."""


@db_group.command("upgrade")
def upgrade() -> None:
    """Create or upgrade the schema to the latest version."""
    from tikosms.db.migrate import head_revision

    try:
        ensure_schema(database_url())
    except Exception as exc:
        fail(f"migration failed: {exc}", code=2)
    click.echo(f"database is at schema revision {head_revision()}")


@db_group.command("prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0, min_open=True, max=36500),
              default=None, metavar="DAYS",
              help="delete final parts last changed more than DAYS days ago (fractions "
              "allowed) [default: TIKOSMS_RETENTION_DAYS]")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="write what is deleted to DIR first, one CSV file per table (and one per "
              "dropped partition)")
@click.option("--gzip", "compress", is_flag=True, help="gzip the export files (.csv.gz)")
@click.option("--format", "export_format", type=click.Choice(["csv", "parquet"]),
              default="csv", show_default=True,
              help="format of the dropped partitions' files (parquet needs pyarrow; rows "
              "deleted in batches are always CSV)")
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="rows per transaction")
@click.option("--dry-run", is_flag=True,
              help="count what would be deleted; delete and export nothing")
@json_option
def prune(days: float | None, export_dir: Path | None, compress: bool, export_format: str,
          batch: int, dry_run: bool, as_json: bool) -> None:
    """Delete delivery history older than the retention: final parts of finished campaigns,
    their callback events, finished callbacks, campaigns left without parts, expired pending
    receipts and idempotency keys. PostgreSQL: whole partitions first (those with nothing in
    flight; the others are listed with the reason), then the rest in batches, beside live
    traffic. The ledger is never touched. Progress goes to stderr, the summary to stdout."""
    from tikosms.config import get_settings
    from tikosms.db.export import CsvExport
    from tikosms.db.retention import Cutoffs, PruneError, prune
    from tikosms.db.types import utcnow
    from tikosms.errors import OperatorError

    settings = get_settings()
    if days is None:
        days = settings.retention_days or None
    if days is None:
        fail("no retention set: pass --older-than DAYS or set TIKOSMS_RETENTION_DAYS")
    if compress and export_dir is None:
        fail("--gzip needs --export DIR")
    now = utcnow()
    cutoffs = Cutoffs.of(now, days, settings)
    export = None
    partition_export: Any = None
    if export_dir is not None and not dry_run:
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        export = CsvExport(export_dir, stamp, compress)
        export.check()
        if export_format == "parquet":
            from tikosms.db.partition_retention import ParquetExport

            try:
                partition_export = ParquetExport(export_dir, stamp)
            except ImportError:
                fail("--format parquet needs pyarrow (pip install pyarrow)")

    async def go(db: Any) -> Any:
        try:
            return await prune(db, cutoffs, batch=batch, dry_run=dry_run, export=export,
                               progress=_progress(dry_run), partition_export=partition_export)
        except PruneError as exc:
            done = exc.report.rows if exc.report else {}
            before = ", ".join(f"{t} {n}" for t, n in done.items() if n) or "nothing"
            raise OperatorError(f"{exc} (deleted before it: {before})") from exc

    report = run(go)
    data = {
        "dry_run": dry_run,
        "older_than_days": days,
        "cutoff": cutoffs.history,
        "pending_receipts_cutoff": cutoffs.pending_receipts,
        "idempotency_keys_cutoff": cutoffs.idempotency_keys,
        ("would_delete" if dry_run else "deleted"): report.rows,
        "batches": report.batches,
        "seconds": round(report.seconds, 3),
        "export": ({t: {"file": str(p), "rows": export.rows.get(t, 0)}
                    for t, p in [*export.files.items(),
                                 *(partition_export.files.items() if partition_export
                                   else [])]} if export else None),
        "partitions": [_outcome(o) for o in report.partitions],
    }
    emit(data, as_json, _summary)


def _outcome(o: Any) -> dict[str, Any]:
    return {"table": o.table, "partition": o.name, "from": o.start, "to": o.end,
            "dropped": o.dropped, "kept_because": o.reason, "rows": o.rows, "bytes": o.bytes,
            "export_file": o.export_file}


@db_group.command("partitions")
@click.option("--ensure", is_flag=True,
              help="create the missing partitions up to TIKOSMS_PARTITION_AHEAD_DAYS ahead")
@json_option
def partitions(ensure: bool, as_json: bool) -> None:
    """List the partitions of the partitioned tables (PostgreSQL) with their time range,
    rows (the planner's estimate) and size; --ensure creates those missing ahead first."""
    from tikosms.config import get_settings
    from tikosms.db import partitions as pt
    from tikosms.db.partition_retention import upkeep_connection
    from tikosms.db.types import utcnow
    from tikosms.errors import OperatorError

    settings = get_settings()

    async def go(db: Any) -> Any:
        if not db.is_postgres:
            raise OperatorError("partitions are PostgreSQL's: SQLite keeps plain tables "
                                "(tikosms db prune deletes in batches there)")
        now = utcnow()
        created: list[str] = []
        if ensure:
            async with upkeep_connection(db) as conn:
                created = await pt.ensure(conn, now, settings.partition_days,
                                          settings.partition_ahead_days)
        async with db.connect() as conn:
            found = await pt.list_partitions(conn)
        return {"created": created, "now": now, "partitions": [
            {"table": p.table, "partition": p.name, "from": p.start, "to": p.end,
             "rows_estimate": p.rows, "bytes": p.bytes, "detach_pending": p.detach_pending}
            for p in found],
            "covered_until": {t.name: pt.covered_until(found, t.name, now) for t in pt.TABLES}}

    emit(run(go), as_json, _partitions_summary)


def _partitions_summary(data: dict[str, Any]) -> str:
    lines = [f"created {name}" for name in data["created"]]
    lines.append(f"{'partition':<34} {'from (UTC)':<17} {'to (UTC)':<17} {'rows':>12} "
                 f"{'size':>10}")
    for p in data["partitions"]:
        start = f"{p['from']:%Y-%m-%d %H:%M}" if p["from"] else "(before 0012)"
        end = f"{p['to']:%Y-%m-%d %H:%M}" if p["to"] else "-"
        rows = "?" if p["rows_estimate"] < 0 else f"~{p['rows_estimate']:,}"
        lines.append(f"{p['partition']:<34} {start:<17} {end:<17} {rows:>12} "
                     f"{_size(p['bytes']):>10}" + ("  detach pending" if p["detach_pending"]
                                                   else ""))
    for table, until in data["covered_until"].items():
        lines.append(f"{table}: inserts have partitions until "
                     + (f"{until:%Y-%m-%d %H:%M} UTC" if until else "NONE (inserts fail: run "
                        "tikosms db partitions --ensure)"))
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _summary(data: dict[str, Any]) -> str:
    verb = "would delete" if data["dry_run"] else "deleted"
    rows = data.get("would_delete") or data.get("deleted") or {}
    lines = [f"history last changed before {data['cutoff']:%Y-%m-%d %H:%M:%S} UTC "
             f"({data['older_than_days']:g} days); {verb}:"]
    lines += [f"  {table:<18} {n:>12,}" for table, n in rows.items()]
    lines.append(f"{data['batches']} batches in {data['seconds']:.1f} s; "
                 "ledger entries are never deleted")
    for table, f in (data["export"] or {}).items():
        lines.append(f"exported {f['rows']:,} {table} rows to {f['file']}")
    for p in data["partitions"]:
        if p["dropped"] or not p["kept_because"]:
            lines.append(f"{'would drop' if data['dry_run'] else 'dropped'} partition "
                         f"{p['partition']} (~{p['rows']:,} rows)")
        else:
            lines.append(f"kept partition {p['partition']}: {p['kept_because']}")
    return "\n".join(lines)


def _progress(dry_run: bool) -> Any:
    """Progress lines on stderr: at most one a second, and one when a new phase starts."""
    started = time.monotonic()
    last_at, last_phase = 0.0, ""
    verb = "found" if dry_run else "deleted"

    def show(phase: str, rows: dict[str, int]) -> None:
        nonlocal last_at, last_phase
        now = time.monotonic()
        if phase == last_phase and now - last_at < 1.0:
            return
        last_at, last_phase = now, phase
        so_far = ", ".join(f"{t} {n:,}" for t, n in rows.items() if n)
        click.echo(f"prune: {phase}: {so_far} {verb} so far ({now - started:.1f} s)", err=True)

    return show
