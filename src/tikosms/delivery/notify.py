"""PostgreSQL LISTEN/NOTIFY: a send accepted by an API process wakes the workers of every other
process at once, instead of at their next poll (`TIKOSMS_IDLE_POLL_SECONDS`).

The send's transaction says `pg_notify('tikosms_parts', '')` (messaging/batch_sql.py), or with
the payload `campaign` when campaigns are among its sends (the worker then looks up the accounts
with due campaign parts at once); PostgreSQL delivers it at commit, once per transaction and
payload. Each worker keeps one connection of its own that
listens. A lost listener is only slower, never wrong: the worker still polls, and the listener
reconnects with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tikosms.config import get_settings
from tikosms.db.engine import keepalive, server_settings

log = logging.getLogger("tikosms.delivery")

CHANNEL = "tikosms_parts"
CAMPAIGN = "campaign"  # the payload when campaign parts were written


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://...` or `postgresql://...` -> the DSN asyncpg takes."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


class PartsListener:
    def __init__(self, database_url: str, on_notify: Callable[[bool], None]) -> None:
        """`on_notify(campaign)`: called on each notification; `campaign` when campaign parts
        were written (or when what was written meanwhile is unknown)."""
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
                    CHANNEL, lambda _c, _pid, _ch, payload: self.on_notify(payload == CAMPAIGN))
                self.listening.set()
                pause = 1.0
                self.on_notify(True)  # anything accepted while we were not listening
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
