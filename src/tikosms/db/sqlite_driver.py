"""aiosqlite connections whose statements cost one trip to the driver's thread, not four.

aiosqlite runs each sqlite3 call on its connection's thread and hands the result back to the
event loop, and SQLAlchemy's adapter makes four such calls per statement: create the cursor,
execute, fetch the rows, close the cursor. Each trip waits for the event loop to come round,
so under load a transaction of eight statements held SQLite's one write lock for ~30 loop
turns (7 ms measured for a batch of single sends at 1,000/s), and every other writer waited
that long. The cursor here does all four on the thread in one call (the first 1,000 rows
fetched with the execute; a larger result, as a stream reads, is fetched in further calls),
so a statement is one trip. Everything else is aiosqlite's own `Connection`.

**Writers of several processes** (`tikosms serve` runs delivery in a process of its own; `api`
and `worker` on one file): SQLite's own wait for another process's write lock is its busy
handler, which sleeps 1, 2, 5, 10... up to 100 ms between tries, so a send behind the worker's
write waited tens of milliseconds after the lock was free (`bench/quick_sustained.py --split`,
open 1,000/s: p99 accept 144 and 329 ms without the lock below, 29 and 34 ms with it). Each
connection to a file database therefore takes an exclusive `flock` on `<database>-lock` before
`BEGIN IMMEDIATE`, on its own thread, and lets it go after the COMMIT or ROLLBACK. A writer that
finds it taken waits in the kernel, woken at its release, through a thread of the connection's
own (`_LockWaiter`: the kernel has no timed `flock`, and the connection's thread waits for that
one with a time limit); trying every 0.2-1 ms instead cost the waiting process 0.43 ms of CPU
for a 3 ms wait, 1.27 ms for 10 ms, against 0.24 blocking (docs/benchmarks.md). In one process the
engine's lock already orders the writers (`Database.begin`), so only another process's writer
is ever waited for. A writer that waits `LOCK_WAIT` seconds fails as SQLite would ("database
is locked").

`connect(database, **kwargs)` takes what `sqlite3.connect` takes; the engine uses it through
SQLAlchemy's `async_creator` (`tikosms.db.engine`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import aiosqlite

FIRST_ROWS = 1000  # rows fetched with the execute; the rest (a stream) in calls of their own
LOCK_WAIT = 30.0  # seconds a writer waits for another process's write lock (as busy_timeout)
BEGIN_WRITE = "BEGIN IMMEDIATE"


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
        if sql == BEGIN_WRITE:
            self._conn._lock_writer()
        cursor = self._conn._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            return self._first(cursor)
        except BaseException:
            cursor.close()
            if sql == BEGIN_WRITE:
                self._conn._unlock_writer()
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
    """aiosqlite's connection, with the cursor above (made without a trip to the thread) and
    the writers' lock of a file database (see the module's docstring)."""

    _lock_fd: int | None = None  # `<database>-lock`, open while the connection is
    _waiter: _LockWaiter | None = None  # made at the first wait for another process
    _locked = False  # this connection holds it (on its thread only)

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    def _lock_writer(self) -> None:
        """On the thread, before BEGIN IMMEDIATE: wait for the other processes' writers."""
        fd = self._lock_fd
        if fd is None or self._locked:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self._waiter is None:
                self._waiter = _LockWaiter(fd)
            self._waiter.wait(LOCK_WAIT)
        self._locked = True

    def _unlock_writer(self) -> None:
        if self._locked and self._lock_fd is not None:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _commit_and_unlock(self) -> None:
        try:
            self._conn.commit()
        finally:
            if not self._conn.in_transaction:  # a failed COMMIT keeps its transaction
                self._unlock_writer()

    def _rollback_and_unlock(self) -> None:
        try:
            self._conn.rollback()
        finally:
            self._unlock_writer()

    async def commit(self) -> None:
        await self._execute(self._commit_and_unlock)

    async def rollback(self) -> None:
        await self._execute(self._rollback_and_unlock)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._close_lock()

    def stop(self) -> Any:
        """aiosqlite's forced close (SQLAlchemy's terminate, a connection collected without
        being returned): the lock goes too, on the thread, after whatever is queued there."""
        self._tx.put_nowait((None, self._close_lock))
        return super().stop()

    def _close_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        self._locked = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.close()
        if fd is not None:
            os.close(fd)  # the lock, if still held, goes with it


class _LockWaiter:
    """Waits in the kernel for a connection's `flock` (a blocking LOCK_EX, woken at the release)
    on a thread of its own, so that the connection's thread can give up after a time limit.

    It locks a duplicate of the connection's descriptor: an `flock` belongs to the open file
    description, which both share, so the lock it takes is the connection's, released by the
    connection's LOCK_UN. A wait given up is ended on this thread when the lock comes: it is
    released at once."""

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self._requests: queue.SimpleQueue[list[bool] | None] = queue.SimpleQueue()
        self._granted: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._mutex = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sqlite-lock-waiter", daemon=True)
        self._thread.start()

    def wait(self, limit: float) -> None:
        """Return once the lock is the connection's; raise as SQLite does after `limit` s."""
        request = [False]  # decided: given up here, or granted there (under the mutex)
        started = time.monotonic()
        self._requests.put(request)
        try:
            self._granted.get(timeout=limit)
            return
        except queue.Empty:
            with self._mutex:
                if not request[0]:
                    request[0] = True
                    waited = time.monotonic() - started
                    raise sqlite3.OperationalError(
                        f"database is locked (another process has been writing for "
                        f"{waited:.0f} s)") from None
        self._granted.get()  # taken as the limit ran out: ours after all

    def _run(self) -> None:
        try:
            while (request := self._requests.get()) is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                with self._mutex:
                    if request[0]:  # given up: not the connection's any more
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
                        continue
                    request[0] = True
                self._granted.put(True)
        finally:
            os.close(self._fd)

    def close(self) -> None:
        """The thread ends after the wait in progress, if any (its lock released then)."""
        self._requests.put(None)


def _lock_path(database: str, kwargs: dict[str, Any]) -> str | None:
    """`<database>-lock` for a file database opened for writing; None for memory databases
    and URIs (read-only copies in this codebase)."""
    if database in ("", ":memory:") or kwargs.get("uri") or database.startswith("file:"):
        return None
    return f"{os.path.realpath(database)}-lock"  # one file whatever the path's spelling


def connect(database: str, **kwargs: Any) -> OneTripConnection:
    """Like `aiosqlite.connect`: await it (its thread starts then, as a daemon)."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, **kwargs)

    conn = OneTripConnection(connector, 64)
    conn._thread.daemon = True  # as SQLAlchemy's adapter does: never keeps the process up
    path = _lock_path(database, kwargs)
    if path is not None:
        try:
            conn._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:  # another user's file: flock works on a read-only one too
            with contextlib.suppress(OSError):
                conn._lock_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass  # no folder: opening the database says so, in SQLite's words
    return conn
