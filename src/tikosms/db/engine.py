"""Engine and transactions for SQLite (embedded default) and PostgreSQL (asyncpg).

`Database` owns the async engine. `db.begin()` opens one transaction: the request or job wrapper
owns it, services run inside it and never commit behind the caller's back.

SQLite: WAL mode, a busy timeout, and `BEGIN IMMEDIATE` for every transaction, so that two
writers queue on the lock instead of failing with "database is locked" when a read transaction
upgrades to a write. Within one process the writers queue on an asyncio lock first (FIFO,
handed over the moment the last one commits): SQLite's own busy handler polls with sleeps of
up to 100 ms, which made a send wait on delivery's writes for far longer than they took. The
busy timeout still covers writers in other processes (the CLI beside `tikosms serve`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL, which other processes can open too; None for another
    database, a memory database or a `file:` URI."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    path = u.database or ""
    if path in ("", ":memory:") or path.startswith("file:") or "memory" in str(u.query):
        return None
    return path


def async_url(url: str) -> str:
    """`sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`; `postgresql://` -> `postgresql+asyncpg://`."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return str(u.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(
        f"unsupported database URL {u.render_as_string()!r}: "
        "use sqlite:///path.db or postgresql://user@host:5432/dbname"
    )


class Database:
    def __init__(self, url: str, pool_size: int = 10, log_sensitive: bool | None = None,
                 command_timeout: float = 0, *, idle_in_transaction_timeout: float | None = None,
                 tcp_keepalive: float | None = None) -> None:
        """`log_sensitive` (default: the setting TIKOSMS_LOG_SENSITIVE, off) lets SQL errors
        carry their parameters (phone numbers, message text) into logs and tracebacks.

        PostgreSQL only, all in seconds (0 = none):
        - `command_timeout`: a statement left that long without an answer fails. The API
          sets TIKOSMS_DATABASE_COMMAND_TIMEOUT_SECONDS (a 503 rather than a request held for
          good), the worker TIKOSMS_DATABASE_WORKER_COMMAND_TIMEOUT_SECONDS (longer: its batch
          updates may wait on row locks; the batch is retried);
        - `idle_in_transaction_timeout` (default: the setting): the server ends a session
          idle inside a transaction that long, releasing its locks;
        - `tcp_keepalive` (default: the setting): keepalive probes after that long idle, on
          both ends, so that a dead peer is noticed (see `keepalive`)."""
        self.url = url
        from tikosms.config import get_settings

        settings = get_settings()
        if log_sensitive is None:
            log_sensitive = settings.log_sensitive
        if idle_in_transaction_timeout is None:
            idle_in_transaction_timeout = settings.database_idle_in_transaction_timeout_seconds
        if tcp_keepalive is None:
            tcp_keepalive = settings.database_tcp_keepalive_seconds
        self.engine: AsyncEngine = _create_engine(
            url, pool_size, hide_parameters=not log_sensitive, command_timeout=command_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
            tcp_keepalive=tcp_keepalive)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._lock: asyncio.Lock | None = None  # made on the loop that first writes
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.Task[Any] | None = None  # the task in SQLite's write transaction

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; committed when the block ends, rolled back if it raises."""
        if not self.is_sqlite:
            async with self.engine.begin() as conn:
                yield conn
            return
        task = asyncio.current_task()
        if task is not None and task is self._writer:
            # it would wait for itself: SQLite has one writer, and this task is it
            raise RuntimeError("a write transaction inside another one on SQLite")
        async with self._write_lock():
            self._writer = task
            try:
                async with self.engine.begin() as conn:
                    yield conn
            finally:
                self._writer = None

    def _write_lock(self) -> asyncio.Lock:
        """SQLite's writers of this process, in turn (a lock per event loop: a Database may
        outlive the loop it was first used on, in tests and CLI commands)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    @asynccontextmanager
    async def connect(self, stream: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for reads. On PostgreSQL short reads run in autocommit (no BEGIN and
        ROLLBACK round trips); `stream=True` keeps a transaction for a server-side cursor. On
        SQLite a deferred BEGIN, so long reads do not hold the write lock."""
        async with self.engine.connect() as conn:
            if self.is_postgres and not stream:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                await conn.execution_options(tikosms_readonly=True)
            yield conn

    def lazy_connect(self) -> LazyConnection:
        """A read connection checked out only when a statement is run: a send whose token,
        numbering plan and rates all come from caches needs none."""
        return LazyConnection(self)

    async def dispose(self) -> None:
        await self.engine.dispose()
        # the in-process caches keep their engine as a key: let it go with the database
        from tikosms import numbering
        from tikosms.rates import service as rates

        numbering.invalidate()
        rates.invalidate()


class LazyConnection:
    """Stands in for the AsyncConnection of `Database.connect()` (`async with`); the real one
    is checked out from the pool on the first statement and returned when the block ends."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine
        self.dialect = db.engine.dialect
        self._cm: Any = None
        self._conn: AsyncConnection | None = None

    async def _real(self) -> AsyncConnection:
        if self._conn is None:
            cm = self.db.connect()
            self._conn = await cm.__aenter__()
            self._cm = cm  # only once entered: a failed checkout has nothing to close
        return self._conn

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._real()).execute(*args, **kwargs)

    async def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._real()).exec_driver_sql(*args, **kwargs)

    async def get_raw_connection(self) -> Any:
        return await (await self._real()).get_raw_connection()

    async def __aenter__(self) -> LazyConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            cm, self._cm, self._conn = self._cm, None, None
            await cm.__aexit__(*exc)


def _create_engine(url: str, pool_size: int, hide_parameters: bool = True,
                   command_timeout: float = 0, idle_in_transaction_timeout: float = 0,
                   tcp_keepalive: float = 0) -> AsyncEngine:
    aurl = async_url(url)
    if aurl.startswith("sqlite"):
        from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

        from tikosms.db import sqlite_driver

        # what SQLAlchemy would pass to sqlite3.connect for this URL (the path, uri mode...)
        cargs, cparams = SQLiteDialect_aiosqlite().create_connect_args(make_url(aurl))
        cparams["timeout"] = 30  # seconds to wait for the write lock (another process's)

        async def creator() -> Any:
            return await sqlite_driver.connect(*cargs, **cparams)

        engine = create_async_engine(
            aurl,
            hide_parameters=hide_parameters,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=4,
            max_overflow=4,
            async_creator=creator,  # one trip to the driver's thread per statement
        )
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        aurl,
        hide_parameters=hide_parameters,
        pool_size=pool_size,
        max_overflow=0,
        # no ping per checkout (a round trip per request); a dead connection is dropped by the
        # pool when it fails, and connections are renewed every few minutes
        pool_recycle=300,
        # timeout: seconds for a new connection (asyncpg's default is 60), so that a server out
        # of reach is a 503 within seconds and not a request held for a minute;
        # command_timeout: seconds a statement may wait for its answer (None: no limit)
        connect_args={"server_settings": server_settings(idle_in_transaction_timeout,
                                                         tcp_keepalive),
                      "timeout": CONNECT_TIMEOUT_S, "command_timeout": command_timeout or None},
    )
    _configure_postgres(engine, tcp_keepalive)
    return engine


CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_PROBES = 3


def server_settings(idle_in_transaction_timeout: float = 0, tcp_keepalive: float = 0
                    ) -> dict[str, str]:
    """Startup parameters of every PostgreSQL connection: UTC, no JIT, and the server's half
    of the timeouts (a backend whose client went away mid-transaction, or without closing, is
    ended and its transaction rolled back, so its row locks do not outlive it).

    JIT off: the gateway's statements do milliseconds of work, and PostgreSQL compiles a plan
    whose *estimated* cost passes `jit_above_cost` whatever it really does. The claim's generic
    plan crossed the thresholds once `parts` held ~130,000 rows (the UPDATE over the LATERAL
    candidates is estimated at 63,000 rows for the 500 it takes): each claim then spent ~1 s
    compiling 93 functions for 3 ms of execution, delivery fell behind its backlog, and the
    backlog kept it there (bench/sustained.py's closed-loop step after the overload step)."""
    settings = {"timezone": "UTC", "jit": "off"}
    if idle_in_transaction_timeout > 0:
        milliseconds = int(idle_in_transaction_timeout * 1000)
        settings["idle_in_transaction_session_timeout"] = str(milliseconds)
    if tcp_keepalive > 0:
        idle, interval = _keepalive_timers(tcp_keepalive)
        settings.update(tcp_keepalives_idle=str(idle), tcp_keepalives_interval=str(interval),
                        tcp_keepalives_count=str(KEEPALIVE_PROBES),
                        tcp_user_timeout=str(int(2 * tcp_keepalive * 1000)))  # milliseconds
    return settings


def _keepalive_timers(tcp_keepalive: float) -> tuple[int, int]:
    """(idle seconds before the first probe, seconds between probes): whole seconds, >= 1."""
    idle = max(1, round(tcp_keepalive))
    return idle, max(1, round(tcp_keepalive / KEEPALIVE_PROBES))


def keepalive(sock: Any, tcp_keepalive: float) -> None:
    """The client's half: keepalive probes on an idle connection, and unacknowledged data
    failing it after 2x `tcp_keepalive` s (TCP_USER_TIMEOUT; Linux). A server that went away
    without a FIN or RST (host down, network cut) is then noticed by a connection waiting
    in the pool or on an answer, instead of after the OS's two hours."""
    idle, interval = _keepalive_timers(tcp_keepalive)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                            ("TCP_KEEPCNT", KEEPALIVE_PROBES),
                            ("TCP_USER_TIMEOUT", int(2 * tcp_keepalive * 1000))):
            if hasattr(socket, name):  # Linux; other systems keep their defaults
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:  # a Unix socket (host=/run/postgresql) has no TCP options
        pass


def _configure_postgres(engine: AsyncEngine, tcp_keepalive: float = 0) -> None:
    if tcp_keepalive > 0:
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            transport = getattr(dbapi_connection.driver_connection, "_transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                keepalive(sock, tcp_keepalive)

    @event.listens_for(engine.sync_engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exc: BaseException | None) -> None:
        # The pool invalidates a connection on a disconnect error, then closes it "gracefully"
        # (SQLAlchemy's terminate: asyncpg close(timeout=2)). With the server cut away mid-use
        # that close was seen never to return (the send that hit it hung until the client gave
        # up, instead of a 503). A connection being invalidated is of no further use: abort its
        # socket now (synchronous, no round trip); the close that follows finds it closed.
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and not driver.is_closed():
            driver.terminate()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control from the driver so that we can say BEGIN IMMEDIATE
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it safe
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("tikosms_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def is_database_down(exc: BaseException) -> bool:
    """The database is out of reach (refused, cut, timed out, pool exhausted), as opposed to a
    statement it refused for what it carried: worth a retry later, not a traceback."""
    if isinstance(exc, OperationalError | PoolTimeout | ConnectionError | OSError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
