"""Driver-level SQL for the group commit of sends (`writer.SendWriter`).

At thousands of one-time codes a second, SQLAlchemy Core's statement building and result
processing cost more than the database itself. The writer's statements are written here once
per dialect and run with `exec_driver_sql`: on PostgreSQL every multi-row INSERT is one
statement over arrays (`unnest`), on SQLite an executemany. Money is bound in micro-units and
times as naive UTC, as the column types (`db.types`) store them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.driver_sql import (
    BulkInsert,
    as_columns,
    list_param,
    quoted,
    run_with_list,
    unnest_params,
)
from tikosms.db.types import naive_utc, sqlite_time
from tikosms.messaging.repository import PART_COLUMNS, PART_PG_TYPES, bulk_insert_parts

_TOKEN_STATES = {
    "postgresql": "SELECT t.id, t.revoked_at IS NOT NULL, a.status FROM api_tokens t "
                  "JOIN accounts a ON a.id = t.account_id WHERE t.id = ANY($1::int[])",
    "sqlite": "SELECT t.id, t.revoked_at IS NOT NULL, a.status FROM api_tokens t "
              "JOIN accounts a ON a.id = t.account_id "
              "WHERE t.id IN (SELECT value FROM json_each(?))",
}

# `status = 'active'` here too: a suspension committed after `token_states` read the account
# still stops the charge (the send is then refused with 402)
_RESERVE = (
    "UPDATE accounts SET balance = balance - {p1}, balance_updated_at = {p2} "
    "WHERE id = {p3} AND status = 'active' AND balance - {p1} >= -credit_limit "
    "RETURNING balance"
)
_RESERVE_SQL = {
    "postgresql": _RESERVE.format(p1="$1::bigint", p2="$2::timestamp", p3="$3"),
    "sqlite": _RESERVE.format(p1="?1", p2="?2", p3="?3"),
}

LEDGER_COLUMNS = ("account_id", "amount", "balance_after", "reason", "campaign_id", "note",
                  "created_at")
_LEDGER_PG_TYPES = ("int", "bigint", "bigint", "varchar", "varchar", "varchar", "timestamp")

CAMPAIGN_COLUMNS = (
    "id", "account_id", "kind", "sender", "sender_type", "message", "recipients",
    "duplicates_removed", "invalid_removed", "total_parts", "cost", "callback_url",
    "scheduled_at", "concurrency", "status", "created_at", "updated_at",
)
_CAMPAIGN_PG_TYPES = (
    "varchar", "int", "varchar", "varchar", "varchar", "text", "int", "int", "int", "int",
    "bigint", "text", "timestamp", "smallint", "varchar", "timestamp", "timestamp",
)
CAMPAIGN_COST = CAMPAIGN_COLUMNS.index("cost")  # micro-units: what the send reserves
CAMPAIGN_KIND = CAMPAIGN_COLUMNS.index("kind")  # single | bulk

LEDGER = BulkInsert("ledger_entries", LEDGER_COLUMNS, _LEDGER_PG_TYPES, ("created_at",))
CAMPAIGNS = BulkInsert("campaigns", CAMPAIGN_COLUMNS, _CAMPAIGN_PG_TYPES,
                       ("scheduled_at", "created_at", "updated_at"))


# PostgreSQL: a batch's campaigns and parts written, and its tokens checked, in one round trip
# (data-modifying WITH parts run whatever the main query reads)
_N_CAMPAIGN = len(CAMPAIGN_COLUMNS)
_INSERT_SENDS_PG = (
    f"WITH c AS (INSERT INTO campaigns ({quoted(CAMPAIGN_COLUMNS)}) "
    f"SELECT * FROM unnest({unnest_params(_CAMPAIGN_PG_TYPES)})), "
    f"p AS (INSERT INTO parts ({quoted(PART_COLUMNS)}) "
    f"SELECT * FROM unnest({unnest_params(PART_PG_TYPES, _N_CAMPAIGN + 1)})) "
    "SELECT t.id, t.revoked_at IS NOT NULL, a.status FROM api_tokens t "
    "JOIN accounts a ON a.id = t.account_id "
    f"WHERE t.id = ANY(${_N_CAMPAIGN + len(PART_COLUMNS) + 1}::int[])"
)

# PostgreSQL: one account's reserve and the ledger rows of its sends in one round trip; no row
# comes back when the balance (or the account's status) does not allow it. `rest`: what the
# later sends of the batch take, so that each row's balance_after is the balance it left.
_RESERVE_LEDGER_PG = (
    "WITH r AS (UPDATE accounts SET balance = balance - $1::bigint, "
    "balance_updated_at = $2::timestamp "
    "WHERE id = $3 AND status = 'active' AND balance - $1::bigint >= -credit_limit "
    "RETURNING balance) "
    f"INSERT INTO ledger_entries ({quoted(LEDGER_COLUMNS)}) "
    "SELECT $3, -c.cost, r.balance + c.rest, 'reserve', c.cid, NULL, $2::timestamp "
    "FROM r, unnest($4::bigint[], $5::bigint[], $6::varchar[]) WITH ORDINALITY "
    "AS c(cost, rest, cid, n) ORDER BY c.n "
    # no NOTIFY here: it would take a database-wide lock at this transaction's commit (the
    # workers are told after the commit: delivery/notify.py PartsSignal)
    "RETURNING 1"
)


async def insert_sends(conn: AsyncConnection, campaigns: Sequence[tuple[Any, ...]],
                       parts: Sequence[tuple[Any, ...]], token_ids: Sequence[int]
                       ) -> dict[int, tuple[bool, str]]:
    """Write the sends' campaigns and parts, and return `token_states(token_ids)`."""
    if conn.dialect.name != "postgresql":
        await insert_campaigns(conn, campaigns)
        await bulk_insert_parts(conn, parts)
        return await token_states(conn, token_ids) if token_ids else {}
    params = (*as_columns(campaigns, _N_CAMPAIGN), *as_columns(parts, len(PART_COLUMNS)),
              list(token_ids))
    result = await conn.exec_driver_sql(_INSERT_SENDS_PG, params)
    rows: list[tuple[Any, ...]] = [tuple(r) for r in result]
    return {int(r[0]): (bool(r[1]), str(r[2])) for r in rows}


async def reserve_with_ledger(conn: AsyncConnection, account_id: int, costs: Sequence[int],
                              campaign_ids: Sequence[str], now: datetime) -> bool:
    """Take the sum of `costs` (micro-units) from the balance if the credit limit allows it,
    with a `reserve` ledger row per send; False (nothing changed) when it does not. The
    UPDATE holds the account row until commit."""
    whole = sum(costs)
    rests, taken = [], 0
    for cost in costs:
        taken += cost
        rests.append(whole - taken)
    if conn.dialect.name == "postgresql":
        result = await conn.exec_driver_sql(_RESERVE_LEDGER_PG, (
            whole, naive_utc(now), account_id, list(costs), rests, list(campaign_ids)))
        return len(result.all()) == len(costs)
    final = await reserve(conn, account_id, whole, now)
    if final is None:
        return False
    now_n = naive_utc(now)
    await insert_ledger(conn, [
        (account_id, -cost, final + rest, "reserve", cid, None, now_n)
        for cost, rest, cid in zip(costs, rests, campaign_ids, strict=True)])
    return True


async def token_states(conn: AsyncConnection, token_ids: Sequence[int]
                       ) -> dict[int, tuple[bool, str]]:
    """token id -> (revoked, the account's status), for the tokens that exist."""
    rows = await run_with_list(conn, _TOKEN_STATES, token_ids)
    return {int(r[0]): (bool(r[1]), str(r[2])) for r in rows}


async def reserve(conn: AsyncConnection, account_id: int, micros: int, now: datetime
                  ) -> int | None:
    """Take `micros` (micro-units) from the balance if the credit limit allows it: the balance
    after, in micro-units, or None (nothing changed). One conditional UPDATE, which holds the
    row lock until commit."""
    dialect = conn.dialect.name
    when: Any = naive_utc(now) if dialect == "postgresql" else sqlite_time(naive_utc(now))
    result = await conn.exec_driver_sql(_RESERVE_SQL[dialect], (micros, when, account_id))
    row = result.first()
    return None if row is None else int(row[0])


_DELETE_SENDS = {
    "postgresql": ("DELETE FROM parts WHERE campaign_id = ANY($1::varchar[])",
                   "DELETE FROM campaigns WHERE id = ANY($1::varchar[])"),
    "sqlite": ("DELETE FROM parts WHERE campaign_id IN (SELECT value FROM json_each(?))",
               "DELETE FROM campaigns WHERE id IN (SELECT value FROM json_each(?))"),
}


async def delete_campaigns(conn: AsyncConnection, campaign_ids: Sequence[str]) -> None:
    """Take back the rows of sends written in this transaction and then refused (402)."""
    param = list_param(conn, campaign_ids)
    for sql in _DELETE_SENDS[conn.dialect.name]:
        await conn.exec_driver_sql(sql, (param,))


async def insert_ledger(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Ledger rows (LEDGER_COLUMNS; money in micro-units, times naive UTC) for reserves
    already made."""
    await LEDGER.run(conn, rows)


async def insert_campaigns(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Campaign rows (CAMPAIGN_COLUMNS; money in micro-units, times naive UTC)."""
    await CAMPAIGNS.run(conn, rows)
