"""tikosms numbers ..., tikosms opt-outs ..., tikosms accounts update ... (inbound SMS)."""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

import click

from tikosms.cli.accounts import accounts_group
from tikosms.cli.base import cli, emit, json_option, run
from tikosms.db.engine import Database
from tikosms.errors import OperatorError
from tikosms.inbound import manage
from tikosms.inbound import repository as repo


@accounts_group.command("update")
@click.argument("account_id", type=int)
@click.option("--inbound-url", default=None, metavar="URL",
              help="POST the account's inbound SMS here (signed like status callbacks); "
              "'' removes it.")
@click.option("--stop-keywords", default=None, metavar="WORDS",
              help="The account's own stop keywords, comma-separated (beside STOP, QUIT, END, "
              "REVOKE, OPT OUT, CANCEL, UNSUBSCRIBE, STOPALL); '' removes them.")
@json_option
def account_update(account_id: int, inbound_url: str | None, stop_keywords: str | None,
                   as_json: bool) -> None:
    """Change an account's inbound settings."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            values = await manage.update_account(conn, account_id, inbound_url=inbound_url,
                                                 stop_keywords=stop_keywords)
        return {"account_id": account_id, **values}

    emit(run(go), as_json, lambda d: f"account {account_id} updated: " + ", ".join(
        f"{k}={v if v is not None else '(none)'}" for k, v in d.items() if k != "account_id"))


@cli.group("numbers")
def numbers_group() -> None:
    """Numbers and short codes that receive SMS (MO), and the account each one goes to."""


@numbers_group.command("assign")
@click.argument("account_id", type=int)
@click.argument("number")
@click.option("--keyword", default=None,
              help="Only MO whose first word is this keyword (case-insensitive) go to this "
              "account; without it, the account is the number's default owner.")
@json_option
def numbers_assign(account_id: int, number: str, keyword: str | None, as_json: bool) -> None:
    """Route MO sent to NUMBER (optionally starting with KEYWORD) to ACCOUNT_ID."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            clean, word, previous = await manage.assign_number(conn, account_id, number,
                                                               keyword)
        return {"number": clean, "keyword": word or None, "account_id": account_id,
                "previous_account_id": previous}

    def human(d: dict[str, Any]) -> str:
        what = f"number {d['number']}" + (f" keyword {d['keyword']}" if d["keyword"] else "")
        moved = (f" (was account {d['previous_account_id']})"
                 if d["previous_account_id"] not in (None, account_id) else "")
        return f"{what} -> account {account_id}{moved}"

    emit(run(go), as_json, human)


@numbers_group.command("unassign")
@click.argument("number")
@click.option("--keyword", default=None, help="Only this keyword's row (default: every row).")
@json_option
def numbers_unassign(number: str, keyword: str | None, as_json: bool) -> None:
    """Stop routing MO sent to NUMBER (they are then stored unrouted)."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            removed = await manage.unassign_number(conn, number, keyword)
        return {"number": number, "removed": removed}

    emit(run(go), as_json, lambda d: f"number {number}: {d['removed']} assignment(s) removed")


@numbers_group.command("list")
@click.option("--account", "account_id", type=int, default=None, help="Only this account's.")
@json_option
def numbers_list(account_id: int | None, as_json: bool) -> None:
    """Numbers and keywords with their accounts."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return [{"number": r.number, "keyword": r.keyword or None,
                     "account_id": r.account_id, "created_at": r.created_at.isoformat()}
                    for r in await repo.list_numbers(conn, account_id)]

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no numbers assigned (tikosms numbers assign ACCOUNT_ID NUMBER)"
        lines = [f"{'NUMBER':<20} {'KEYWORD':<16} ACCOUNT"]
        lines += [f"{r['number']:<20} {r['keyword'] or '(any)':<16} {r['account_id']}"
                  for r in rows]
        return "\n".join(lines)

    emit(run(go), as_json, table)


@cli.group("opt-outs")
def opt_outs_group() -> None:
    """Recipients who opted out (STOP): sends to them are refused."""


@opt_outs_group.command("list")
@click.argument("account_id", type=int)
@json_option
def opt_outs_list(account_id: int, as_json: bool) -> None:
    """The account's opt-outs."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            rows = (await conn.execute(repo.opt_outs_query(account_id, after=None,
                                                           limit=None))).all()
        return [manage.opt_out_view(r) for r in rows]

    emit(run(go), as_json, lambda rows: "\n".join(
        f"{r['to']:<20} from {r['from'] or '(every sender)':<16} {r['source']:<8} "
        f"{r['keyword'] or '':<12} {r['created_at']}" for r in rows) or "no opt-outs")


@opt_outs_group.command("add")
@click.argument("account_id", type=int)
@click.argument("number")
@click.option("--from", "sender", default=None,
              help="Only sends from this number of the account (default: every sender).")
@json_option
def opt_outs_add(account_id: int, number: str, sender: str | None, as_json: bool) -> None:
    """Suppress NUMBER for ACCOUNT_ID."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            recipient, from_, created = await _value_error_async(
                manage.add_opt_out(conn, account_id, number, sender, "cli"))
        return {"to": recipient, "from": from_ or None, "created": created}

    emit(run(go), as_json, lambda d: f"{d['to']} opted out"
         + (f" of {d['from']}" if d["from"] else "")
         + ("" if d["created"] else " (already)"))


async def _value_error_async(coro: Any) -> Any:
    try:
        return await coro
    except ValueError as exc:
        raise OperatorError(str(exc)) from None


@opt_outs_group.command("remove")
@click.argument("account_id", type=int)
@click.argument("number")
@click.option("--from", "sender", default=None,
              help="Only the opt-out from this sender (default: all of NUMBER's).")
@json_option
def opt_outs_remove(account_id: int, number: str, sender: str | None, as_json: bool) -> None:
    """Let sends to NUMBER go again."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            removed = await _value_error_async(
                manage.remove_opt_out(conn, account_id, number, sender))
        if not removed:
            raise OperatorError(f"no opt-out of account {account_id} for {number}")
        return {"to": number, "removed": removed}

    emit(run(go), as_json, lambda d: f"{number}: {d['removed']} opt-out(s) removed")


@opt_outs_group.command("import")
@click.argument("account_id", type=int)
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@json_option
def opt_outs_import(account_id: int, csv_file: Any, as_json: bool) -> None:
    """Add the numbers of CSV_FILE ('-': standard input): a `to` column (or the first one)
    and an optional `from` column."""
    text = csv_file.read()

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            result = await manage.import_opt_outs(conn, account_id,
                                                  manage.read_opt_out_csv(text))
        return {"added": result.added, "already": result.existing, "bad": result.bad,
                "errors": result.errors}

    data = run(go)
    emit(data, as_json, lambda d: "\n".join(
        [f"imported: {d['added']} added, {d['already']} already there, "
         f"{d['bad']} bad row(s) skipped", *d["errors"]]))


@opt_outs_group.command("export")
@click.argument("account_id", type=int)
def opt_outs_export(account_id: int) -> None:
    """The account's opt-outs as CSV on standard output (to,from,source,keyword,created_at)."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            rows = (await conn.execute(repo.opt_outs_query(account_id, after=None,
                                                           limit=None))).all()
        return [manage.opt_out_view(r) for r in rows]

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["to", "from", "source", "keyword", "created_at"])
    for r in run(go):
        writer.writerow([r["to"], r["from"] or "", r["source"], r["keyword"] or "",
                         r["created_at"]])
    sys.stdout.write(out.getvalue())
