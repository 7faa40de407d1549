"""Helpers for SQL run on the driver (`exec_driver_sql`) on both databases, for the hot paths
where SQLAlchemy Core's statement building and result processing cost more than the database:
a list of ids as one parameter, and multi-row INSERTs of rows given as stored tuples.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.types import sqlite_time


def list_param(conn: AsyncConnection, ids: Sequence[Any]) -> Any:
    """A list as one parameter: an array on PostgreSQL (`= ANY($1::int[])`), a JSON text on
    SQLite (`IN (SELECT value FROM json_each(?))`), rather than one parameter per item."""
    if conn.dialect.name == "postgresql":
        return list(ids)
    return orjson.dumps(list(ids)).decode()


async def run_with_list(conn: AsyncConnection, sql: dict[str, str], ids: Sequence[Any]
                        ) -> list[tuple[Any, ...]]:
    """Run `sql[dialect]`, whose only parameter is a list (see `list_param`); the rows."""
    result = await conn.exec_driver_sql(sql[conn.dialect.name], (list_param(conn, ids),))
    return [tuple(row) for row in result]


def quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def unnest_params(pg_types: Sequence[str], first: int = 1) -> str:
    """`$1::varchar[], $2::int[], ...`: one array parameter per column."""
    return ", ".join(f"${i}::{t}[]" for i, t in enumerate(pg_types, start=first))


def as_columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """The rows as one list per column (the arrays of an unnest)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


@dataclass(frozen=True)
class BulkInsert:
    """A multi-row INSERT of rows given as tuples, as stored (money in micro-units, times naive
    UTC): one statement over arrays (`unnest`) on PostgreSQL, not one bind per row; an
    executemany on SQLite, with times written as SQLAlchemy writes them."""

    table: str
    columns: tuple[str, ...]
    pg_types: tuple[str, ...]
    times: tuple[str, ...]  # the columns holding times

    @functools.cached_property
    def postgresql(self) -> str:
        return (f"INSERT INTO {self.table} ({quoted(self.columns)}) "
                f"SELECT * FROM unnest({unnest_params(self.pg_types)})")

    @functools.cached_property
    def sqlite(self) -> str:
        return (f"INSERT INTO {self.table} ({quoted(self.columns)}) "
                f"VALUES ({', '.join('?' for _ in self.columns)})")

    @functools.cached_property
    def time_indexes(self) -> frozenset[int]:
        return frozenset(self.columns.index(c) for c in self.times)

    async def run(self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(self.postgresql,
                                       tuple(as_columns(rows, len(self.columns))))
            return
        times = self.time_indexes
        values = [tuple(sqlite_time(v) if i in times and v is not None else v
                        for i, v in enumerate(row)) for row in rows]
        await conn.exec_driver_sql(self.sqlite, values)  # type: ignore[arg-type]
