"""tikosms db upgrade | prune."""

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
              help="write what is deleted to DIR first, one CSV file per table")
@click.option("--gzip", "compress", is_flag=True, help="gzip the export files (.csv.gz)")
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="rows per transaction")
@click.option("--dry-run", is_flag=True,
              help="count what would be deleted; delete and export nothing")
@json_option
def prune(days: float | None, export_dir: Path | None, compress: bool, batch: int,
          dry_run: bool, as_json: bool) -> None:
    """Delete delivery history older than the retention: final parts of finished campaigns,
    their callback events, finished callbacks, campaigns left without parts, expired pending
    receipts and idempotency keys. In batches, beside live traffic. The ledger is never
    touched. Progress goes to stderr, the summary to stdout."""
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
    if export_dir is not None and not dry_run:
        export = CsvExport(export_dir, now.strftime("%Y%m%dT%H%M%SZ"), compress)
        export.check()

    async def go(db: Any) -> Any:
        try:
            return await prune(db, cutoffs, batch=batch, dry_run=dry_run, export=export,
                               progress=_progress(dry_run))
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
                    for t, p in export.files.items()} if export else None),
    }
    emit(data, as_json, _summary)


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
