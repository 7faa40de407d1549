"""Wake-ups: a send accepted by an API process wakes the delivery workers of every process at
once, instead of at their next poll (`TIKOSMS_IDLE_POLL_SECONDS`).

The signal is a PostgreSQL NOTIFY on `tikosms_parts`, sent by `PartsSignal` after the send's
transaction has committed, on a connection of its own, never inside the send's transaction: a
NOTIFY there takes a database-wide lock at commit and holds it through the commit's WAL flush,
which serialises every committing send. Signals are coalesced: one is in flight at a time, two
are 10 ms apart at least, and the accounts of everything committed meanwhile go in the next.
The payload names the accounts with new due parts and their kind (`s12 c57`: account 12's
single sends, account 57's campaign parts; `s9 c9` both), so that a worker claims by account
without looking them up; `*` means "unknown, look": a payload too long, or a listener that
was not listening for a while.

Each worker keeps one connection of its own that listens. A lost signal or listener is only
slower, never wrong: the worker still polls (and looks up the accounts with due parts), and the
listener reconnects with a growing pause.

On a SQLite file (`tikosms serve` runs delivery in a process of its own; `api` + `worker` on one
machine) the same payload goes as a datagram to a Unix socket in Linux's abstract namespace
named after the database file's real path (`wake_address`): no file to clean up, nothing to
configure. One worker listens per database (a second one polls); a datagram nobody receives is
dropped. Any local process can send one: a wake-up only makes the worker look sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tikosms.config import get_settings
from tikosms.db.engine import keepalive, server_settings, sqlite_file

log = logging.getLogger("tikosms.delivery")

CHANNEL = "tikosms_parts"
UNKNOWN = "*"  # the payload when what was written is not said
MAX_PAYLOAD = 7000  # bytes; PostgreSQL refuses 8000 and more
# seconds between two notifications of one process: under a trickle of single sends (500/s:
# one every 2 ms) a NOTIFY per send was a statement and a transaction of its own per send, and
# a wake-up per send for every worker. A worker woken lingers `claim_linger_seconds` (20 ms)
# before it claims, so what is committed within this spacing of the last notification is claimed
# by the claim that notification started: spaced below the linger, the wake-ups add no delay.
SPACING = 0.01

# account id -> the kinds of its new due parts: SINGLE, CAMPAIGN, or both (SINGLE | CAMPAIGN)
DueAccounts = dict[int, int]
SINGLE, CAMPAIGN = 1, 2
_KINDS = (("s", SINGLE), ("c", CAMPAIGN))


def encode(accounts: DueAccounts) -> str:
    payload = " ".join(f"{letter}{account}" for account, kinds in sorted(accounts.items())
                       for letter, kind in _KINDS if kinds & kind)
    return payload if len(payload) <= MAX_PAYLOAD else UNKNOWN


def decode(payload: str) -> DueAccounts | None:
    """The accounts a payload names, or None when it does not say (look them up)."""
    accounts: DueAccounts = {}
    letters = dict(_KINDS)
    for token in payload.split():
        kind, number = letters.get(token[:1]), token[1:]
        if kind is None or not number.isdigit():
            return None
        accounts[int(number)] = accounts.get(int(number), 0) | kind
    return accounts or None


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://...` or `postgresql://...` -> the DSN asyncpg takes."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def wake_address(database_url: str) -> bytes | None:
    """The abstract Unix socket the delivery worker of a SQLite file database listens on;
    None where there is none (PostgreSQL, a memory database, not Linux)."""
    path = sqlite_file(database_url)
    if path is None or not sys.platform.startswith("linux"):
        return None
    digest = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
    return b"\0tikosms-wake-" + digest.encode()


class WakeListener:
    """The SQLite counterpart of `PartsListener`: the datagrams of `wake_address`."""

    def __init__(self, address: bytes,
                 on_notify: Callable[[DueAccounts | None], None]) -> None:
        self.address = address
        self.on_notify = on_notify
        self.listening = False
        self._sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.address)
        except OSError as exc:
            sock.close()
            log.info("another delivery worker listens for this database's wake-ups (%s); "
                     "this one finds new parts by polling", exc.strerror or exc)
            return
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self.listening = True

    def _readable(self) -> None:
        """Each datagram waiting, passed on (the worker merges what it is told)."""
        assert self._sock is not None
        for _ in range(1000):  # then the loop's other work; the rest at the next turn
            try:
                payload = self._sock.recv(MAX_PAYLOAD + 100)
            except OSError:  # none left (BlockingIOError), or the socket is gone
                return
            try:
                accounts = decode(payload.decode("ascii", "replace"))
            except ValueError:  # not ours (any local process can send): "look"
                accounts = None
            self.on_notify(accounts)

    async def stop(self) -> None:
        sock, self._sock = self._sock, None
        self.listening = False
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()


class PartsListener:
    def __init__(self, database_url: str,
                 on_notify: Callable[[DueAccounts | None], None]) -> None:
        """`on_notify(accounts)`: called on each notification with the accounts it names, or
        None when what was written is unknown (look it up)."""
        self.dsn = asyncpg_dsn(database_url)
        self.on_notify = on_notify
        self.listening = asyncio.Event()  # set while a connection listens
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parts-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        pause = 1.0
        while True:
            lost = asyncio.Event()
            conn: Any = None
            try:
                # keepalive: a server gone without closing is noticed, not listened to forever
                ka = get_settings().database_tcp_keepalive_seconds
                conn = await asyncpg.connect(self.dsn, timeout=10,
                                             server_settings=server_settings(0, ka))
                if ka > 0:
                    keepalive(conn._transport.get_extra_info("socket"), ka)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(
                    CHANNEL, lambda _c, _pid, _ch, payload: self.on_notify(decode(payload)))
                self.listening.set()
                pause = 1.0
                self.on_notify(None)  # anything accepted while we were not listening
                await lost.wait()
                log.warning("the listener for new parts lost its database connection; "
                            "reconnecting (meanwhile new parts are found by polling)")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot listen for new parts (%s); polling meanwhile, retrying in "
                            "%.0f s", exc, pause)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)


class PartsSignal:
    """Tells the delivery workers which accounts have new due parts, after the commit.

    `stored(accounts)` is called by the send writers once their transaction has committed; it
    never waits. `local` (the delivery worker of this process, `tikosms serve`) is told at
    once; on PostgreSQL a NOTIFY goes to the other processes' workers, coalesced (one in
    flight, and `SPACING` between two; what is stored meanwhile goes in the next).
    """

    def __init__(self, db: Any) -> None:
        self.db = db
        self.local: Callable[[DueAccounts | None], None] | None = None
        # SQLite: the datagrams to another process's worker (None: no such socket)
        self._wake_to = None if db.is_postgres else wake_address(db.url)
        self._wake_sock: socket.socket | None = None
        self.sent = 0  # notifications sent (metrics, tests)
        self._pending: DueAccounts = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False

    def stored(self, accounts: DueAccounts) -> None:
        if not accounts or self._closed:
            return
        if self.local is not None:
            self.local(accounts)
        if not self.db.is_postgres:
            if self.local is None:  # the worker is another process's
                self._datagram(accounts)
            return
        for account, kinds in accounts.items():
            self._pending[account] = self._pending.get(account, 0) | kinds
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send(), name="parts-signal")

    async def _send(self) -> None:
        while self._pending:
            accounts, self._pending = self._pending, {}
            try:
                async with self.db.connect() as conn:  # autocommit: its own tiny transaction
                    await conn.exec_driver_sql("SELECT pg_notify($1, $2)",
                                               (CHANNEL, encode(accounts)))
                self.sent += 1
                if self._failing:
                    self._failing = False
                    log.info("wake-up signals to the workers are sent again")
                await asyncio.sleep(SPACING)
            except Exception as exc:
                # the workers find these parts at their next poll; nothing is lost
                if not self._failing:
                    self._failing = True
                    log.warning("cannot signal the workers of new parts (%s); they find them by "
                                "polling meanwhile", type(exc).__name__)
                return

    def _datagram(self, accounts: DueAccounts) -> None:
        """To the worker of this SQLite database, if one listens; never waits."""
        to = self._wake_to
        if to is None:
            return
        try:
            if self._wake_sock is None:
                self._wake_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._wake_sock.setblocking(False)
            self._wake_sock.sendto(encode(accounts).encode(), to)
            self.sent += 1
        except OSError:
            pass  # nobody listens, or its queue is full: the worker finds them by polling

    async def close(self) -> None:
        """Let a notification in flight finish (2 s at most); none is sent after this."""
        self.local = None
        self._closed = True
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None
        self._pending = {}
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 2.0)
