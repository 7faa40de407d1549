"""Writes the console needs that no domain service offered yet. Thin, and meant to move to
their domain packages (accounts/service.py, delivery/carriers_repo.py): each goes through the
domain's repository and checks, as the CLI's commands do."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update

from tikosms.accounts import repository as accounts_repo
from tikosms.callbacks.signing import generate_secret
from tikosms.db.models import CarrierRow
from tikosms.delivery import carriers_repo
from tikosms.errors import OperatorError

ACCOUNT_STATUSES = ("active", "suspended")


async def set_account_status(conn: Any, account_id: int, status: str) -> None:
    """Suspend or resume: a suspended account's sends are refused at once (the send's own
    transaction checks the account's status)."""
    if status not in ACCOUNT_STATUSES:
        raise OperatorError(f"status {status!r}: use active or suspended")
    if not await accounts_repo.set_account_fields(conn, account_id, status=status):
        raise OperatorError(f"no account with id {account_id}")


async def rotate_signing_secret(conn: Any, account_id: int) -> str:
    """A new callback signing secret; callbacks signed from now on use it."""
    secret = generate_secret()
    if not await accounts_repo.set_account_fields(conn, account_id, signing_secret=secret):
        raise OperatorError(f"no account with id {account_id}")
    return secret


async def update_carrier(conn: Any, name: str, *, host: str | None = None,
                         port: int | None = None, system_id: str | None = None,
                         password: str | None = None, settings: dict[str, Any] | None = None
                         ) -> None:
    """Change a carrier's connection fields and settings (merged into the stored ones),
    checked as `add_carrier` checks a new one."""
    row = await carriers_repo.require_carrier(conn, name)
    merged = {**json.loads(row.settings or "{}"), **(settings or {})}
    merged = {k: v for k, v in merged.items() if v is not None}
    values: dict[str, Any] = {"host": row.host if host is None else host,
              "port": row.port if port is None else port,
              "system_id": row.system_id if system_id is None else system_id,
              "password": row.password if password is None else password}
    carriers_repo.check_carrier(name=name, settings=merged, **values)
    await conn.execute(update(CarrierRow).where(CarrierRow.id == row.id)
                       .values(settings=json.dumps(merged, sort_keys=True), **values))
