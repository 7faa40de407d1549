"""`tikosms operators create|list|delete`: the people who log in to the console at /admin."""

from __future__ import annotations

import sys
from typing import Any

import click

from tikosms.cli.base import cli, emit, json_option, run
from tikosms.console import auth
from tikosms.db.engine import Database
from tikosms.errors import OperatorError


@cli.group("operators")
def operators_group() -> None:
    """Operator users of the web console (/admin); not API customers."""


@operators_group.command("create")
@click.argument("name")
@click.option("--password", default=None, help="the password (else read from standard input, "
              "or asked for at a terminal); at least 8 characters")
@json_option
def create(name: str, password: str | None, as_json: bool) -> None:
    """Create an operator with an argon2id password hash."""
    if password is None:
        if sys.stdin.isatty():
            password = click.prompt("password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise OperatorError("no password given (--password PW or one line on standard input)")
    secret: str = password

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            op_id = await auth.create_operator(conn, name, secret)
        return {"id": op_id, "name": name.strip()}

    emit(run(go), as_json, lambda d: f"operator {d['name']} created (id {d['id']}); "
                                     "log in at /admin")


@operators_group.command("list")
@json_option
def list_(as_json: bool) -> None:
    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return [{"id": r.id, "name": r.name, "created_at": r.created_at,
                     "last_login_at": r.last_login_at} for r in await auth.list_operators(conn)]

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no operators (create one: tikosms operators create NAME)"
        return "\n".join(f"{r['id']:>4}  {r['name']:<24} last login "
                         f"{r['last_login_at'] or 'never'}" for r in rows)

    emit(run(go), as_json, table)


@operators_group.command("delete")
@click.argument("name")
@json_option
def delete(name: str, as_json: bool) -> None:
    """Delete an operator and end their sessions."""
    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            await auth.delete_operator(conn, name)
        return {"deleted": name}

    emit(run(go), as_json, f"operator {name} deleted")
