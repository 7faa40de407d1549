"""Writes the console needs that no domain service offered yet. Thin, and meant to move to
their domain package (accounts/service.py): each goes through the
domain's repository and checks, as the CLI's commands do."""

from __future__ import annotations

from typing import Any

from tikosms.accounts import repository as accounts_repo
from tikosms.callbacks.signing import generate_secret
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
