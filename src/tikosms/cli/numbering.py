"""tikosms numbering import FILE.csv | list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from tikosms.cli.base import cli, emit, json_option, run
from tikosms.db.engine import Database
from tikosms.db.models import NumberingPrefix
from tikosms.errors import OperatorError
from tikosms.numbering import replace_plan
from tikosms.numbers import parse_numbering_csv


@cli.group("numbering")
def numbering_group() -> None:
    """The operator's numbering plan: prefix -> MCC/MNC, before the shipped data."""


@numbering_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def import_(file: Path, as_json: bool) -> None:
    """Replace the numbering plan with FILE (CSV: prefix,mcc,mnc; longest prefix wins)."""
    try:
        rows = parse_numbering_csv(file.read_text(encoding="utf-8-sig"))
    except ValueError as exc:
        raise OperatorError(f"{file}: {exc}") from None

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            n = await replace_plan(conn, rows)
        return {"imported": n}

    emit(run(go), as_json, lambda d: f"imported {d['imported']} prefixes from {file} "
                                     "(running servers pick them up within 5 s)")


@numbering_group.command("list")
@json_option
def list_(as_json: bool) -> None:
    """The imported prefixes."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            rows = await conn.execute(select(NumberingPrefix).order_by(NumberingPrefix.prefix))
            return [{"prefix": r.prefix, "mcc": r.mcc, "mnc": r.mnc} for r in rows]

    emit(run(go), as_json, lambda rows: "\n".join(
        f"{r['prefix']:<16} {r['mcc']}{r['mnc'] or ''}" for r in rows) or "no prefixes imported")
