"""tikosms smpp-users ... (customers' SMPP credentials) and tikosms smpp-server (the server
alone, for PostgreSQL deployments where `tikosms api` and `tikosms worker` run apart)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from tikosms.cli.base import cli, emit, fail, json_option, run
from tikosms.db.engine import Database
from tikosms.smpp_server import users


@cli.group("smpp-users")
def smpp_users() -> None:
    """Customers' SMPP credentials: each binds to the SMPP server for one account."""


@smpp_users.command("create")
@click.argument("account_id", type=int)
@click.option("--system-id", required=True, help="the system_id the customer binds with")
@click.option("--password", required=True, help="its password (at most 8 characters: SMPP 3.4)")
@click.option("--max-binds", type=int, default=4, show_default=True,
              help="connections at once")
@click.option("--window", type=int, default=100, show_default=True,
              help="submit_sm awaiting a response per bind; more: ESME_RMSGQFUL")
@click.option("--tps", type=float, default=None,
              help="submit_sm per second across its binds (default: no limit)")
@click.option("--burst", type=int, default=None,
              help="submit_sm at once above the rate before ESME_RTHROTTLED (default 2 x tps)")
@click.option("--allow-ip", multiple=True, metavar="CIDR",
              help="bind only from these addresses (repeat or comma-separate; default any)")
@json_option
def create(account_id: int, system_id: str, password: str, max_binds: int, window: int,
           tps: float | None, burst: int | None, allow_ip: tuple[str, ...],
           as_json: bool) -> None:
    """Give ACCOUNT_ID an SMPP login (the password is stored as an argon2id hash only)."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            user_id = await users.create_user(
                conn, account_id, system_id, password, max_binds=max_binds, window=window,
                tps=tps, burst=burst, allow_ip=allow_ip)
            return next(u for u in await users.list_users(conn, account_id)
                        if u["id"] == user_id)

    data = run(go)
    emit(data, as_json, lambda d: (
        f"SMPP user {d['system_id']} created for account {d['account_id']} "
        f"(max binds {d['max_binds']}, window {d['window']}, "
        f"tps {d['tps'] if d['tps'] is not None else 'unlimited'}"
        f"{', allowed from ' + d['allow_ip'] if d['allow_ip'] else ''})"))


@smpp_users.command("list")
@click.option("--account", "account_id", type=int, default=None, help="one account only")
@click.option("--all", "include_revoked", is_flag=True, help="revoked users too")
@json_option
def list_(account_id: int | None, include_revoked: bool, as_json: bool) -> None:
    """SMPP users (never their passwords)."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return await users.list_users(conn, account_id, include_revoked)

    rows = run(go)

    def human(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no SMPP users (add one: tikosms smpp-users create ACCOUNT_ID ...)"
        lines = [f"{'system_id':<16} {'account':>7} {'binds':>5} {'window':>6} {'tps':>8} "
                 f"{'burst':>6}  allow_ip / revoked"]
        for r in rows:
            tail = r["allow_ip"] or "any"
            if r["revoked_at"] is not None:
                tail += f"  revoked {r['revoked_at']:%Y-%m-%d %H:%M}"
            lines.append(f"{r['system_id']:<16} {r['account_id']:>7} {r['max_binds']:>5} "
                         f"{r['window']:>6} {r['tps'] if r['tps'] is not None else '-':>8} "
                         f"{r['burst'] if r['burst'] is not None else '-':>6}  {tail}")
        return "\n".join(lines)

    emit(rows, as_json, human)


@smpp_users.command("revoke")
@click.argument("system_id")
def revoke(system_id: str) -> None:
    """Revoke an SMPP user: new binds are refused, its binds are closed within seconds."""

    async def go(db: Database) -> None:
        async with db.begin() as conn:
            await users.revoke_user(conn, system_id)

    run(go)
    click.echo(f"SMPP user {system_id} revoked")


@cli.command("smpp-server")
@click.option("--host", default=None, help="address to listen on [env: TIKOSMS_SMPP_HOST, "
              "else TIKOSMS_HOST]")
@click.option("--smpp-port", "--port", "port", type=int, default=None,
              help="port [env: TIKOSMS_SMPP_PORT, default 2775]")
def smpp_server_command(host: str | None, port: int | None) -> None:
    """The SMPP server for customers alone (PostgreSQL: beside `tikosms api` and `worker`;
    `tikosms serve` runs it embedded). SIGTERM unbinds the customers and exits."""
    from tikosms.cli.serve import _prepare, _run_loop
    from tikosms.smpp_server.runtime import smpp_server

    settings = _prepare(False)
    settings = settings.model_copy(update={k: v for k, v in
                                           {"smpp_host": host, "smpp_port": port}.items()
                                           if v is not None})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        db = Database(settings.database_url, settings.database_pool_size)
        try:
            try:
                server_cm = smpp_server(db, settings)
                server = await server_cm.__aenter__()
            except OSError as exc:
                fail(f"cannot listen on {settings.smpp_host or settings.host}:"
                     f"{settings.smpp_port}: {exc.strerror or exc}", code=2)
            click.echo(f"TikoSMS SMPP server listening on {server.config.host}:{server.port} "
                       "(SIGTERM to stop)", err=True)
            await stop.wait()
            click.echo("stopping: unbinding customers...", err=True)
            await server_cm.__aexit__(None, None, None)
        finally:
            await db.dispose()

    _run_loop(main())
