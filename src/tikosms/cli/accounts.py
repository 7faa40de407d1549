"""tikosms accounts ... and tikosms tokens ..."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click
from sqlalchemy import Row

from tikosms import formats
from tikosms.accounts import repository as repo
from tikosms.accounts import service
from tikosms.cli.base import cli, emit, json_option, run
from tikosms.db.engine import Database
from tikosms.errors import OperatorError


def account_dict(row: Row) -> dict[str, Any]:
    return {
        "account_id": row.id,
        "name": row.name,
        "currency": row.currency,
        "balance": f"{row.balance:.4f}",
        "credit_limit": f"{row.credit_limit:f}".rstrip("0").rstrip("."),
        "status": row.status,
        "signing_secret": row.signing_secret,
        "balance_updated": formats.balance_updated(row.balance_updated_at),
        "created_at": row.created_at.isoformat(),
    }


@cli.group("accounts")
def accounts_group() -> None:
    """API customers: accounts, balances, credit limits."""


@accounts_group.command("create")
@click.option("--name", required=True, help="customer name")
@click.option("--currency", default="EUR", show_default=True, help="ISO 4217 code")
@click.option("--balance", default="0", show_default=True, help="opening balance (a top-up)")
@click.option("--credit-limit", default="0", show_default=True,
              help="how far below zero the balance may go")
@json_option
def create(name: str, currency: str, balance: str, credit_limit: str, as_json: bool) -> None:
    """Create an account and its first API token (shown once)."""
    opening = service.parse_amount(balance, "balance") if _ok(balance) else Decimal(0)
    limit = service.parse_amount(credit_limit, "credit limit")

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            account_id, token, token_id = await service.create_account(
                conn, name=name, currency=currency, balance=opening, credit_limit=limit
            )
            row = await repo.get_account(conn, account_id)
        assert row is not None
        return {**account_dict(row), "token": token, "token_id": token_id}

    data = run(go)
    emit(data, as_json, lambda d: (
        f"created account {d['account_id']} ({d['name']}, {d['currency']}), balance "
        f"{d['balance']}, credit limit {d['credit_limit']}\n"
        f"API token (shown only now, keep it safe): {d['token']}\n"
        f"callback signing secret: {d['signing_secret']}"
    ))


def _ok(value: str) -> bool:
    return value.strip() not in ("", "0")


@accounts_group.command("list")
@json_option
def list_(as_json: bool) -> None:
    """All accounts with their balances."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return [account_dict(r) for r in await repo.list_accounts(conn)]

    rows = run(go)

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no accounts yet (create one: tikosms accounts create --name NAME)"
        lines = [f"{'ID':>5}  {'NAME':<24} {'CUR':<4} {'BALANCE':>14} {'CREDIT':>10}  STATUS"]
        lines += [
            f"{r['account_id']:>5}  {r['name'][:24]:<24} {r['currency']:<4} {r['balance']:>14} "
            f"{r['credit_limit']:>10}  {r['status']}"
            for r in rows
        ]
        return "\n".join(lines)

    emit(rows, as_json, table)


@accounts_group.command("show")
@click.argument("account_id", type=int)
@json_option
def show(account_id: int, as_json: bool) -> None:
    """One account: balance, credit limit, signing secret, tokens and the latest ledger rows."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.connect() as conn:
            row = await repo.get_account(conn, account_id)
            if row is None:
                raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")
            tokens = await repo.list_tokens(conn, account_id)
            ledger = await repo.ledger_for(conn, account_id, limit=20)
        return {
            **account_dict(row),
            "tokens": [_token_dict(t) for t in tokens],
            "ledger": [
                {"id": e.id, "amount": str(e.amount), "balance_after": str(e.balance_after),
                 "reason": e.reason, "campaign_id": e.campaign_id, "note": e.note,
                 "created_at": e.created_at.isoformat()}
                for e in ledger
            ],
        }

    data = run(go)

    def human(d: dict[str, Any]) -> str:
        lines = [
            f"account {d['account_id']}: {d['name']} ({d['status']})",
            f"  balance        {d['balance']} {d['currency']} (updated {d['balance_updated']})",
            f"  credit limit   {d['credit_limit']}",
            f"  signing secret {d['signing_secret']}",
            f"  tokens         {len(d['tokens'])} "
            f"({sum(1 for t in d['tokens'] if not t['revoked_at'])} active)",
            "  latest ledger rows:",
        ]
        lines += [
            f"    {e['created_at'][:19]}  {e['reason']:<10} {e['amount']:>14}  -> "
            f"{e['balance_after']}  {e['note'] or e['campaign_id'] or ''}"
            for e in d["ledger"]
        ] or ["    (none)"]
        return "\n".join(lines)

    emit(data, as_json, human)


@accounts_group.command("topup")
@click.argument("account_id", type=int)
@click.argument("amount")
@click.option("--note", default=None, help="shown in the ledger")
@json_option
def topup(account_id: int, amount: str, note: str | None, as_json: bool) -> None:
    """Add AMOUNT to the balance (negative to correct a mistake); writes a ledger row."""
    value = service.parse_amount(amount)

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            balance = await service.topup(conn, account_id, value, note)
        return {"account_id": account_id, "amount": str(value), "balance": f"{balance:.4f}"}

    emit(run(go), as_json, lambda d: f"account {account_id}: balance is now {d['balance']}")


@accounts_group.command("set-credit-limit")
@click.argument("account_id", type=int)
@click.argument("limit")
@json_option
def set_credit_limit(account_id: int, limit: str, as_json: bool) -> None:
    """Let the balance go down to -LIMIT."""
    value = service.parse_amount(limit, "credit limit")
    if value < 0:
        raise click.BadParameter("the credit limit must be 0 or more", param_hint="LIMIT")

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            if not await repo.set_account_fields(conn, account_id, credit_limit=value):
                raise OperatorError(f"no account with id {account_id}")
        return {"account_id": account_id, "credit_limit": str(value)}

    emit(run(go), as_json, lambda d: f"account {account_id}: credit limit is now {value}")


def _set_status(account_id: int, status: str, as_json: bool) -> None:
    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            if not await repo.set_account_fields(conn, account_id, status=status):
                raise OperatorError(f"no account with id {account_id}")
        return {"account_id": account_id, "status": status}

    emit(run(go), as_json, lambda d: f"account {account_id} is now {status}")


@accounts_group.command("suspend")
@click.argument("account_id", type=int)
@json_option
def suspend(account_id: int, as_json: bool) -> None:
    """Refuse new sends from this account (403); reads keep working."""
    _set_status(account_id, "suspended", as_json)


@accounts_group.command("resume")
@click.argument("account_id", type=int)
@json_option
def resume(account_id: int, as_json: bool) -> None:
    """Allow sends again."""
    _set_status(account_id, "active", as_json)


def _token_dict(t: Row) -> dict[str, Any]:
    return {
        "token_id": t.id, "account_id": t.account_id, "prefix": t.prefix,
        "created_at": t.created_at.isoformat(),
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
    }


@cli.group("tokens")
def tokens_group() -> None:
    """API tokens (stored only as hashes; shown once)."""


@tokens_group.command("create")
@click.argument("account_id", type=int)
@json_option
def token_create(account_id: int, as_json: bool) -> None:
    """A new token for ACCOUNT_ID."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            token, token_id = await service.create_token(conn, account_id)
        return {"account_id": account_id, "token_id": token_id, "token": token}

    emit(run(go), as_json, lambda d: f"token {d['token_id']} (shown only now): {d['token']}")


@tokens_group.command("list")
@click.argument("account_id", type=int)
@json_option
def token_list(account_id: int, as_json: bool) -> None:
    """Tokens of ACCOUNT_ID (prefix only)."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            if await repo.get_account(conn, account_id) is None:
                raise OperatorError(f"no account with id {account_id}")
            return [_token_dict(t) for t in await repo.list_tokens(conn, account_id)]

    emit(run(go), as_json, lambda rows: "\n".join(
        f"{t['token_id']:>5}  {t['prefix']}...  created {t['created_at'][:19]}  "
        + (f"REVOKED {t['revoked_at'][:19]}" if t["revoked_at"] else "active")
        for t in rows) or "no tokens")


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
@json_option
def token_revoke(token_id: int, as_json: bool) -> None:
    """Revoke TOKEN_ID: requests with it get 401 from now on."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            await service.revoke_token(conn, token_id)
        return {"token_id": token_id, "revoked": True}

    emit(run(go), as_json, f"token {token_id} revoked")
