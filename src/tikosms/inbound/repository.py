"""The SQL of inbound SMS: owned numbers, fragments, inbound messages and opt-outs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.driver_sql import list_param
from tikosms.db.models import Account, InboundFragment, InboundMessage, OptOut, OwnedNumber


def _insert(conn: AsyncConnection, table: Any) -> Any:
    """INSERT with ON CONFLICT for this connection's dialect."""
    return (postgresql.insert(table) if conn.dialect.name == "postgresql"
            else sqlite.insert(table))


# --- owned numbers ------------------------------------------------------------------------

async def assign_number(conn: AsyncConnection, account_id: int, number: str, keyword: str,
                        now: datetime) -> int | None:
    """Give the number (for this keyword, "" for any) to the account; the previous owner of
    that number and keyword, or None when it had none."""
    previous = (await conn.execute(select(OwnedNumber.account_id).where(
        OwnedNumber.number == number, OwnedNumber.keyword == keyword))).scalar_one_or_none()
    stmt = _insert(conn, OwnedNumber).values(
        number=number, keyword=keyword, account_id=account_id, created_at=now)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=["number", "keyword"],
        set_={"account_id": account_id, "created_at": now}))
    return None if previous is None else int(previous)


async def unassign_number(conn: AsyncConnection, number: str, keyword: str | None) -> int:
    """Remove the number's rows (of this keyword only, when given); how many."""
    stmt = delete(OwnedNumber).where(OwnedNumber.number == number)
    if keyword is not None:
        stmt = stmt.where(OwnedNumber.keyword == keyword)
    return int((await conn.execute(stmt)).rowcount or 0)


async def list_numbers(conn: AsyncConnection, account_id: int | None = None) -> Sequence[Row]:
    stmt = select(OwnedNumber).order_by(OwnedNumber.number, OwnedNumber.keyword)
    if account_id is not None:
        stmt = stmt.where(OwnedNumber.account_id == account_id)
    return (await conn.execute(stmt)).all()


async def owners_of(conn: AsyncConnection, number: str) -> dict[str, int]:
    """keyword ("" for the default owner) -> account id, for one number."""
    rows = await conn.execute(select(OwnedNumber.keyword, OwnedNumber.account_id)
                              .where(OwnedNumber.number == number))
    return {keyword: account_id for keyword, account_id in rows}


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """What the inbound path needs of an account."""

    inbound_url: str | None
    stop_keywords: str | None


async def inbound_settings(conn: AsyncConnection, account_id: int) -> InboundSettings | None:
    row = (await conn.execute(select(Account.inbound_url, Account.stop_keywords)
                              .where(Account.id == account_id))).first()
    return None if row is None else InboundSettings(row.inbound_url, row.stop_keywords)


# --- fragments of concatenated MO ---------------------------------------------------------

async def lock_assembly(conn: AsyncConnection, assembly: str) -> None:
    """Serialise the transactions adding parts of one message (two parts arriving at once on
    two binds must not both miss the other). PostgreSQL: an advisory lock for the transaction;
    SQLite: every write transaction holds the database's write lock already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(
            func.hashtextextended(assembly, 0))))


async def add_fragment(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Store a part; a part already there (an SMSC's redelivery) is left as it is."""
    await conn.execute(_insert(conn, InboundFragment).values(**values)
                       .on_conflict_do_nothing(index_elements=["assembly", "seq"]))


async def fragments_of(conn: AsyncConnection, assembly: str) -> Sequence[Row]:
    return (await conn.execute(
        select(InboundFragment).where(InboundFragment.assembly == assembly)
        .order_by(InboundFragment.seq))).all()


async def delete_fragments(conn: AsyncConnection, assembly: str) -> None:
    await conn.execute(delete(InboundFragment).where(InboundFragment.assembly == assembly))


async def expire_fragments(conn: AsyncConnection, before: datetime) -> list[tuple[int, int]]:
    """Delete the messages whose first part came before `before` and that are still
    incomplete; (parts received, total) of each."""
    stale = select(InboundFragment.assembly).group_by(InboundFragment.assembly).having(
        func.min(InboundFragment.received_at) < before)
    rows = (await conn.execute(
        select(func.count(), func.max(InboundFragment.total))
        .where(InboundFragment.assembly.in_(stale)).group_by(InboundFragment.assembly))).all()
    if rows:
        await conn.execute(delete(InboundFragment).where(InboundFragment.assembly.in_(stale)))
    return [(int(n), int(total)) for n, total in rows]


# --- inbound messages ---------------------------------------------------------------------

async def insert_inbound(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(insert(InboundMessage).values(**values)
                                .returning(InboundMessage.id))
    return int(result.scalar_one())


def inbound_query(account_id: int, *, since: datetime | None, until: datetime | None,
                  to: str | None, after: tuple[datetime, int] | None, limit: int) -> Any:
    """The account's inbound messages, newest first, one keyset page (index
    `(account_id, received_at, id)`): `after` is the last (received_at, id) of the page before."""
    stmt = select(InboundMessage).where(InboundMessage.account_id == account_id)
    if since is not None:
        stmt = stmt.where(InboundMessage.received_at >= since)
    if until is not None:
        stmt = stmt.where(InboundMessage.received_at < until)
    if to is not None:
        stmt = stmt.where(InboundMessage.recipient == to)
    if after is not None:
        stmt = stmt.where(or_(
            InboundMessage.received_at < after[0],
            and_(InboundMessage.received_at == after[0], InboundMessage.id < after[1])))
    return stmt.order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc()).limit(limit)


# --- opt-outs -----------------------------------------------------------------------------

async def add_opt_out(conn: AsyncConnection, account_id: int, recipient: str, sender: str,
                      source: str, keyword: str | None, now: datetime) -> bool:
    """True when it is new (an existing one is kept as it was)."""
    result = await conn.execute(
        _insert(conn, OptOut).values(account_id=account_id, recipient=recipient, sender=sender,
                                     source=source, keyword=keyword, created_at=now)
        .on_conflict_do_nothing(index_elements=["account_id", "recipient", "sender"]))
    return bool(result.rowcount)


async def add_opt_outs(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Many opt-outs in multi-row INSERTs (those already there are kept); how many are new."""
    added = 0
    for start in range(0, len(rows), OPT_OUT_CHUNK):
        result = await conn.execute(
            _insert(conn, OptOut).values(list(rows[start:start + OPT_OUT_CHUNK]))
            .on_conflict_do_nothing(index_elements=["account_id", "recipient", "sender"]))
        added += int(result.rowcount or 0)
    return added


OPT_OUT_CHUNK = 1000  # rows per INSERT (6 parameters each: below SQLite's 32,766)


async def remove_opt_outs(conn: AsyncConnection, account_id: int, recipient: str,
                          senders: Sequence[str] | None) -> int:
    """Remove the recipient's opt-outs (for these senders only, when given); how many."""
    stmt = delete(OptOut).where(OptOut.account_id == account_id, OptOut.recipient == recipient)
    if senders is not None:
        stmt = stmt.where(OptOut.sender.in_(list(senders)))
    return int((await conn.execute(stmt)).rowcount or 0)


def opt_outs_query(account_id: int, *, after: tuple[str, str] | None, limit: int | None,
                   sender: str | None = None) -> Any:
    """The account's opt-outs by recipient then sender (the primary key's order)."""
    stmt = select(OptOut).where(OptOut.account_id == account_id)
    if sender is not None:
        stmt = stmt.where(OptOut.sender == sender)
    if after is not None:
        stmt = stmt.where(tuple_(OptOut.recipient, OptOut.sender) > tuple_(*after))
    stmt = stmt.order_by(OptOut.recipient, OptOut.sender)
    return stmt if limit is None else stmt.limit(limit)


_ANY_OPT_OUT = {
    "postgresql": "SELECT 1 FROM opt_outs WHERE account_id = $1 LIMIT 1",
    "sqlite": "SELECT 1 FROM opt_outs WHERE account_id = ? LIMIT 1",
}
_OPTED_OUT_AMONG = {
    "postgresql": "SELECT DISTINCT recipient FROM opt_outs WHERE account_id = $1 "
                  "AND sender IN ($2, '') AND recipient = ANY($3::varchar[])",
    "sqlite": "SELECT DISTINCT recipient FROM opt_outs WHERE account_id = ? "
              "AND sender IN (?, '') AND recipient IN (SELECT value FROM json_each(?))",
}


_OPTED_OUT_PAIRS = {
    "postgresql": "SELECT o.account_id, o.recipient, o.sender FROM opt_outs o "
                  "JOIN unnest($1::int[], $2::varchar[]) AS q(account_id, recipient) "
                  "ON o.account_id = q.account_id AND o.recipient = q.recipient",
    # CROSS JOIN keeps the pairs as the outer loop: one primary-key probe per pair (a row-value
    # IN over json_each was planned as a scan of the account's opt-outs)
    "sqlite": "SELECT o.account_id, o.recipient, o.sender FROM json_each(?) AS q "
              "CROSS JOIN opt_outs AS o ON o.account_id = json_extract(q.value, '$[0]') "
              "AND o.recipient = json_extract(q.value, '$[1]')",
}


async def opt_outs_of(conn: Any, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str, str]]:
    """The opt-outs (account, recipient, sender) held for these (account, recipient) pairs: one
    query for a whole group-commit batch of single sends."""
    if not pairs:
        return set()
    if conn.dialect.name == "postgresql":
        params: tuple[Any, ...] = ([a for a, _ in pairs], [r for _, r in pairs])
    else:
        params = (list_param(conn, [[a, r] for a, r in pairs]),)
    result = await conn.exec_driver_sql(_OPTED_OUT_PAIRS[conn.dialect.name], params)
    return {(row[0], row[1], row[2]) for row in result}


async def opted_out_among(conn: Any, account_id: int, sender: str, recipients: Sequence[str]
                          ) -> set[str]:
    """The recipients among these who opted out of this sender (or of the whole account): one
    query with the list as one parameter, after a one-row check that the account has any."""
    dialect = conn.dialect.name
    if not recipients or (await conn.exec_driver_sql(
            _ANY_OPT_OUT[dialect], (account_id,))).first() is None:
        return set()
    result = await conn.exec_driver_sql(
        _OPTED_OUT_AMONG[dialect], (account_id, sender, list_param(conn, recipients)))
    return {row[0] for row in result}
