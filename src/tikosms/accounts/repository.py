"""SQL for accounts, tokens and the ledger. Every balance change goes through `apply_ledger`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import Account, ApiToken, LedgerEntry
from tikosms.db.types import utcnow


async def insert_account(
    conn: AsyncConnection,
    *,
    name: str,
    currency: str,
    credit_limit: Decimal,
    signing_secret: str,
) -> int:
    now = utcnow()
    result = await conn.execute(
        insert(Account)
        .values(
            name=name,
            currency=currency,
            balance=Decimal(0),
            credit_limit=credit_limit,
            status="active",
            signing_secret=signing_secret,
            balance_updated_at=now,
            created_at=now,
        )
        .returning(Account.id)
    )
    return int(result.scalar_one())


async def get_account(conn: AsyncConnection, account_id: int) -> Row | None:
    result = await conn.execute(select(Account).where(Account.id == account_id))
    return result.first()


async def list_accounts(conn: AsyncConnection) -> Sequence[Row]:
    return (await conn.execute(select(Account).order_by(Account.id))).all()


async def set_account_fields(conn: AsyncConnection, account_id: int, **values: object) -> bool:
    result = await conn.execute(update(Account).where(Account.id == account_id).values(**values))
    return bool(result.rowcount)


async def apply_ledger(
    conn: AsyncConnection,
    account_id: int,
    amount: Decimal,
    reason: str,
    *,
    campaign_id: str | None = None,
    note: str | None = None,
    enforce_credit_limit: bool = False,
) -> Decimal | None:
    """Add `amount` (negative to charge) to the balance and write its ledger row, atomically.

    With `enforce_credit_limit`, the update only happens while the new balance stays at or above
    -credit_limit; returns None when it would not (nothing is written). The single conditional
    UPDATE takes the row lock, so concurrent reserves on PostgreSQL queue behind each other and
    can never overdraw.
    """
    now = utcnow()
    new_balance = await change_balance(conn, account_id, amount, now, enforce_credit_limit)
    if new_balance is None:
        return None
    await conn.execute(
        insert(LedgerEntry).values(
            account_id=account_id,
            amount=amount,
            balance_after=new_balance,
            reason=reason,
            campaign_id=campaign_id,
            note=note,
            created_at=now,
        )
    )
    return Decimal(new_balance)


async def change_balance(
    conn: AsyncConnection, account_id: int, amount: Decimal, now: datetime,
    enforce_credit_limit: bool,
) -> Decimal | None:
    """The balance UPDATE alone; the caller writes the ledger row (see apply_ledger)."""
    stmt = (
        update(Account)
        .where(Account.id == account_id)
        .values(balance=Account.balance + amount, balance_updated_at=now)
        .returning(Account.balance)
    )
    if enforce_credit_limit:
        stmt = stmt.where(Account.balance + amount >= -Account.credit_limit)
    value = (await conn.execute(stmt)).scalar_one_or_none()
    return None if value is None else Decimal(value)


async def ledger_for(conn: AsyncConnection, account_id: int, limit: int = 50) -> Sequence[Row]:
    return (
        await conn.execute(
            select(LedgerEntry)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.id.desc())
            .limit(limit)
        )
    ).all()


async def insert_token(
    conn: AsyncConnection, account_id: int, token_hash: str, prefix: str
) -> int:
    result = await conn.execute(
        insert(ApiToken)
        .values(account_id=account_id, token_hash=token_hash, prefix=prefix, created_at=utcnow())
        .returning(ApiToken.id)
    )
    return int(result.scalar_one())


async def token_by_hash(conn: AsyncConnection, token_hash: str) -> Row | None:
    result = await conn.execute(
        select(
            ApiToken.id.label("token_id"),
            ApiToken.token_hash,
            ApiToken.revoked_at,
            Account.id.label("account_id"),
            Account.name,
            Account.currency,
            Account.status,
            Account.signing_secret,
        )
        .join(Account, Account.id == ApiToken.account_id)
        .where(ApiToken.token_hash == token_hash)
    )
    return result.first()


async def list_tokens(conn: AsyncConnection, account_id: int) -> Sequence[Row]:
    return (
        await conn.execute(
            select(ApiToken).where(ApiToken.account_id == account_id).order_by(ApiToken.id)
        )
    ).all()


async def revoke_token(conn: AsyncConnection, token_id: int, when: datetime) -> bool:
    result = await conn.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return bool(result.rowcount)
