"""SQL for campaigns and parts, including each database's bulk path for storing parts.

PostgreSQL: asyncpg `copy_records_to_table` (COPY, ~250k rows/s). SQLite: the driver's
executemany with rows formatted as SQLAlchemy stores them (so string comparisons of times in
SQL stay right). Both run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.driver_sql import BulkInsert
from tikosms.db.models import Campaign, Part

# the columns a new part is written with, in COPY order
PART_COLUMNS = (
    "campaign_id", "message_id", "account_id", "part_no", "total_parts", "to", "text",
    "data_coding", "mccmnc", "cost", "client_ref", "callback_url", "status", "priority",
    "due_at", "attempts", "concat_ref", "created_at", "updated_at",
)


# COPY asks the server for the table's column types first: one more round trip that only pays
# off for many rows; up to this many go as one INSERT over arrays
COPY_THRESHOLD = 2000
COPY_SLICE = 20_000  # rows per COPY of a large campaign
PART_PG_TYPES = (
    "varchar", "varchar", "int", "smallint", "smallint", "varchar", "text", "smallint", "varchar",
    "bigint", "varchar", "text", "varchar", "smallint", "timestamp", "smallint", "int",
    "timestamp", "timestamp",
)


PARTS = BulkInsert("parts", PART_COLUMNS, PART_PG_TYPES, ("due_at", "created_at", "updated_at"))


async def bulk_insert_parts(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in PART_COLUMNS order; cost in micro-units (int), times naive UTC datetimes. Many
    rows on PostgreSQL go by COPY."""
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        raw = await conn.get_raw_connection()
        # in slices: asyncpg encodes the records on the event loop (~0.1 s per 20,000 rows)
        for start in range(0, len(rows), COPY_SLICE):
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                "parts", records=rows[start:start + COPY_SLICE], columns=list(PART_COLUMNS)
            )
        return
    await PARTS.run(conn, rows)


async def get_campaign(conn: AsyncConnection, account_id: int, campaign_id: str) -> Row | None:
    result = await conn.execute(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.account_id == account_id)
    )
    return result.first()


def campaigns_query(account_id: int, campaign_id: str | None) -> Any:
    stmt = select(Campaign).where(Campaign.account_id == account_id)
    if campaign_id is not None:
        stmt = stmt.where(Campaign.id == campaign_id)
    return stmt.order_by(Campaign.created_at.desc(), Campaign.id.desc())


async def count(conn: AsyncConnection, stmt: Any) -> int:
    result = await conn.execute(select(func.count()).select_from(stmt.order_by(None).subquery()))
    return int(result.scalar_one())


def parts_query(account_id: int, *, message_id: str | None, campaign_id: str | None) -> Any:
    """Parts with their campaign's sender; one row per part, in sending order."""
    stmt = (
        select(
            Part.id, Part.message_id, Part.campaign_id, Part.to, Part.text, Part.status,
            Part.data_coding, Part.mccmnc, Part.cost, Part.part_no, Part.total_parts,
            Part.sent_at, Part.delivered_at, Part.client_ref, Part.callback_url,
            Part.error_code, Campaign.sender, Campaign.sender_type,
            Campaign.callback_url.label("campaign_callback_url"),
        )
        .join(Campaign, Campaign.id == Part.campaign_id)
        .where(Part.account_id == account_id)
    )
    if message_id is not None:
        stmt = stmt.where(Part.message_id == message_id).order_by(Part.part_no)
    if campaign_id is not None:
        stmt = stmt.where(Part.campaign_id == campaign_id).order_by(Part.id)
    return stmt


async def stream_rows(conn: AsyncConnection, stmt: Any, batch: int = 2000
                      ) -> AsyncIterator[Row]:
    """Rows without holding them all: a server-side cursor on PostgreSQL."""
    result = await conn.stream(stmt.execution_options(yield_per=batch))
    async for row in result:
        yield row


async def set_campaign_fields(conn: AsyncConnection, campaign_id: str, **values: Any) -> None:
    await conn.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))
