"""aiosqlite connections whose statements cost one trip to the driver's thread, not four.

aiosqlite runs each sqlite3 call on its connection's thread and hands the result back to the
event loop, and SQLAlchemy's adapter makes four such calls per statement: create the cursor,
execute, fetch the rows, close the cursor. Each trip waits for the event loop to come round,
so under load a transaction of eight statements held SQLite's one write lock for ~30 loop
turns (7 ms measured for a batch of single sends at 1,000/s), and every other writer waited
that long. The cursor here does all four on the thread in one call (the first 1,000 rows
fetched with the execute; a larger result, as a stream reads, is fetched in further calls),
so a statement is one trip. Everything else is aiosqlite's own `Connection`.

`connect(database, **kwargs)` takes what `sqlite3.connect` takes; the engine uses it through
SQLAlchemy's `async_creator` (`tikosms.db.engine`).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import aiosqlite

FIRST_ROWS = 1000  # rows fetched with the execute; the rest (a stream) in calls of their own


class OneTripCursor:
    """The cursor SQLAlchemy's aiosqlite adapter drives (`execute`, `fetch*`, `close`,
    `description`, `rowcount`, `lastrowid`, `arraysize`), one thread call per statement."""

    def __init__(self, conn: OneTripConnection) -> None:
        self._conn = conn
        self._open: sqlite3.Cursor | None = None  # rows still to fetch on the thread
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> OneTripCursor:
        await self._replace(self._conn._execute(self._run, "execute", sql, parameters or ()))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        await self._replace(self._conn._execute(self._run, "executemany", sql, parameters))
        return self

    async def _replace(self, call: Any) -> None:
        if self._open is not None:  # the last statement's rows were not all read
            await self.close()
        self._open, rows, self.description, self.rowcount, self.lastrowid = await call
        self._rows = deque(rows)

    def _run(self, method: str, sql: str, parameters: Any) -> tuple[Any, ...]:
        """On the connection's thread: the cursor's `execute` or `executemany`, then the
        first rows."""
        cursor = self._conn._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            return self._first(cursor)
        except BaseException:
            cursor.close()
            raise

    @staticmethod
    def _first(cursor: sqlite3.Cursor) -> tuple[Any, ...]:
        description = cursor.description
        rows = cursor.fetchmany(FIRST_ROWS) if description else []
        # rowcount and lastrowid are read before the close (close keeps them, to be sure)
        rowcount, lastrowid = cursor.rowcount, cursor.lastrowid
        if len(rows) < FIRST_ROWS:
            cursor.close()
            return None, rows, description, rowcount, lastrowid
        return cursor, rows, description, rowcount, lastrowid

    async def _more(self, size: int | None) -> None:
        """Fetch up to `size` more rows (all when None) into the buffer."""
        cursor = self._open
        if cursor is None:
            return

        def fetch() -> list[Any]:
            rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
            if size is None or len(rows) < size:
                cursor.close()
            return rows

        rows = await self._conn._execute(fetch)
        if size is None or len(rows) < size:
            self._open = None
        self._rows.extend(rows)

    async def fetchone(self) -> Any:
        if not self._rows:
            await self._more(FIRST_ROWS)
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        size = self.arraysize if size is None else size
        if len(self._rows) < size:
            await self._more(max(size - len(self._rows), FIRST_ROWS))
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    async def fetchall(self) -> Sequence[Any]:
        await self._more(None)
        rows, self._rows = list(self._rows), deque()
        return rows

    async def close(self) -> None:
        self._rows.clear()
        cursor, self._open = self._open, None
        if cursor is not None:
            await self._conn._execute(cursor.close)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while rows := await self.fetchmany(FIRST_ROWS):
            for row in rows:
                yield row


class OneTripConnection(aiosqlite.Connection):
    """aiosqlite's connection, with the cursor above (made without a trip to the thread)."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)


def connect(database: str, **kwargs: Any) -> OneTripConnection:
    """Like `aiosqlite.connect`: await it (its thread starts then, as a daemon)."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, **kwargs)

    conn = OneTripConnection(connector, 64)
    conn._thread.daemon = True  # as SQLAlchemy's adapter does: never keeps the process up
    return conn
