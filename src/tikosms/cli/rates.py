"""tikosms rates import FILE.csv [--account ID] | list | export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tikosms import formats
from tikosms.accounts import repository as accounts_repo
from tikosms.cli.base import cli, emit, json_option, run
from tikosms.db.engine import Database
from tikosms.errors import OperatorError
from tikosms.rates import service


@cli.group("rates")
def rates_group() -> None:
    """Price lists: the default list, and per-account lists that come before it."""


@rates_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--account", "account_id", type=int, default=None,
              help="the account's own price list (default: the default list)")
@click.option("--replace", is_flag=True, help="remove the list's current rates first")
@json_option
def import_(file: Path, account_id: int | None, replace: bool, as_json: bool) -> None:
    """Add the rates of FILE (header: mcc,mnc,country,rate,start_date,end_date).

    A bad file is rejected whole, naming the line of the first problem."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise OperatorError(f"{file}: not a UTF-8 text file") from None
    try:
        rows = service.parse_rates_csv(text)
    except OperatorError as exc:
        raise OperatorError(f"{file}: {exc}") from None

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            if account_id is not None and await accounts_repo.get_account(conn, account_id) is None:
                raise OperatorError(f"no account with id {account_id}")
            removed = await service.clear_rates(conn, account_id) if replace else 0
            n = await service.import_rates(conn, rows, account_id)
        return {"added": n, "removed": removed, "account_id": account_id}

    target = f"account {account_id}" if account_id is not None else "the default price list"
    emit(run(go), as_json, lambda d: f"added {d['added']} rates to {target}"
         + (f" (removed {d['removed']} old ones)" if replace else ""))


@rates_group.command("list")
@click.option("--account", "account_id", type=int, default=None,
              help="an account's own list (default: the default list)")
@json_option
def list_(account_id: int | None, as_json: bool) -> None:
    """The rates of one price list."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            await _check_account(conn, account_id)
            rows = await service.list_rates(conn, account_id, only_account=True)
        return [
            {"mcc": r.mcc, "mnc": r.mnc, "mccmnc": r.mccmnc, "country": r.country,
             "rate": formats.rate(r.rate), "start_date": formats.rate_time(r.start_date),
             "end_date": formats.rate_time(r.end_date)}
            for r in rows
        ]

    emit(run(go), as_json, lambda rows: "\n".join(
        [f"{'MCCMNC':<7} {'COUNTRY':<24} {'RATE':>10}  FROM                 TO"]
        + [f"{r['mccmnc']:<7} {r['country'][:24]:<24} {r['rate']:>10}  {r['start_date']}  "
           f"{r['end_date']}" for r in rows]) if rows else "no rates in this list")


@rates_group.command("export")
@click.option("--account", "account_id", type=int, default=None)
def export(account_id: int | None) -> None:
    """Print a price list as CSV (the import format)."""

    async def go(db: Database) -> str:
        async with db.connect() as conn:
            await _check_account(conn, account_id)
            rows = await service.list_rates(conn, account_id, only_account=True)
        return service.export_csv(rows)

    click.echo(run(go), nl=False)


async def _check_account(conn: Any, account_id: int | None) -> None:
    if account_id is not None and await accounts_repo.get_account(conn, account_id) is None:
        raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")
