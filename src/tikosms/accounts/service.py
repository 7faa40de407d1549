"""Accounts, API tokens, balance and ledger: the business rules.

Tokens are 256 random bits (`tk_` + URL-safe base64), shown once, stored only as SHA-256, and
compared in constant time. A balance never changes without a ledger row (`repository.apply_ledger`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.accounts import repository as repo
from tikosms.callbacks.signing import generate_secret
from tikosms.db.types import utcnow
from tikosms.errors import NotAuthenticated, OperatorError

TOKEN_PREFIX = "tk_"


@dataclass(frozen=True, slots=True)
class AuthenticatedAccount:
    id: int
    name: str
    currency: str
    status: str
    signing_secret: str
    token_id: int = 0
    cached: bool = False  # from TokenCache: not read from the database for this request


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_amount(value: str | Decimal | int, what: str = "amount") -> Decimal:
    """Operator input -> Decimal with at most 6 decimals, or a clear OperatorError."""
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise OperatorError(f"{what} {value!r} is not a number (example: 100 or 12.50)") from None
    if not d.is_finite():
        raise OperatorError(f"{what} {value!r} is not a finite number")
    if d.as_tuple().exponent < -6:  # type: ignore[operator]
        raise OperatorError(f"{what} {value!r} has more than 6 decimals")
    return d


async def create_account(
    conn: AsyncConnection,
    *,
    name: str,
    currency: str = "EUR",
    balance: Decimal = Decimal(0),
    credit_limit: Decimal = Decimal(0),
) -> tuple[int, str, int]:
    """Create an account and its first API token; returns (account_id, token, token_id)."""
    name = name.strip()
    if not name:
        raise OperatorError("account name must not be empty")
    currency = currency.strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise OperatorError(f"currency {currency!r} is not a 3-letter ISO 4217 code (e.g. EUR)")
    if credit_limit < 0:
        raise OperatorError("credit limit must be 0 or more")
    account_id = await repo.insert_account(
        conn, name=name, currency=currency, credit_limit=credit_limit,
        signing_secret=generate_secret(),
    )
    if balance:
        await repo.apply_ledger(conn, account_id, balance, "topup", note="opening balance")
    token, token_id = await create_token(conn, account_id)
    return account_id, token, token_id


async def create_token(conn: AsyncConnection, account_id: int) -> tuple[str, int]:
    if await repo.get_account(conn, account_id) is None:
        raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")
    token = new_token()
    token_id = await repo.insert_token(conn, account_id, hash_token(token), token[:10])
    return token, token_id


async def revoke_token(conn: AsyncConnection, token_id: int) -> None:
    if not await repo.revoke_token(conn, token_id, utcnow()):
        raise OperatorError(f"no active token with id {token_id} (see: tikosms tokens list ID)")


class TokenCache:
    """Tokens of active accounts seen in the last `seconds`, so that a send does not read its
    token. Safe because a send's own transaction checks the token again (still not revoked,
    the account still active: `messaging.batch_sql.token_states`), so a revoked token or a
    suspended account is refused at once all the same. Unknown tokens and suspended accounts
    are never cached."""

    def __init__(self, seconds: float = 60.0, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, AuthenticatedAccount]] = {}

    def get(self, digest: str) -> AuthenticatedAccount | None:
        hit = self._entries.get(digest)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.seconds:
            del self._entries[digest]
            return None
        return hit[1]

    def put(self, digest: str, account: AuthenticatedAccount) -> None:
        if account.status != "active":
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (time.monotonic(), dataclasses.replace(account, cached=True))

    def drop(self, authorization: str | None) -> None:
        digest = _digest_of(authorization)
        if digest is not None:
            self._entries.pop(digest, None)


def _digest_of(authorization: str | None) -> str | None:
    """The SHA-256 of a well-formed bearer token, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        return None
    return hash_token(token)


async def authenticate(conn: AsyncConnection, authorization: str | None,
                       cache: TokenCache | None = None) -> AuthenticatedAccount:
    """`Authorization: Bearer <token>` -> the account, or NotAuthenticated (401). With `cache`,
    a token seen recently is not read again (for sends only: they check it when written)."""
    digest = _digest_of(authorization)
    if digest is None:
        raise NotAuthenticated()
    if cache is not None:
        hit = cache.get(digest)
        if hit is not None:
            return hit
    row = await repo.token_by_hash(conn, digest)
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated()
    if not hmac.compare_digest(row.token_hash, digest):
        raise NotAuthenticated()
    account = AuthenticatedAccount(
        id=row.account_id,
        name=row.name,
        currency=row.currency,
        status=row.status,
        signing_secret=row.signing_secret,
        token_id=row.token_id,
    )
    if cache is not None:
        cache.put(digest, account)
    return account


async def topup(conn: AsyncConnection, account_id: int, amount: Decimal, note: str | None = None
                ) -> Decimal:
    if await repo.get_account(conn, account_id) is None:
        raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")
    if amount == 0:
        raise OperatorError("amount must not be 0")
    new_balance = await repo.apply_ledger(
        conn, account_id, amount, "topup" if amount > 0 else "adjustment", note=note
    )
    assert new_balance is not None
    return new_balance


async def refund(
    conn: AsyncConnection, account_id: int, amount: Decimal, campaign_id: str | None, note: str
) -> None:
    if amount > 0:
        await repo.apply_ledger(
            conn, account_id, amount, "refund", campaign_id=campaign_id, note=note
        )
