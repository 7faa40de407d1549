"""Streamed reads (every row of a campaign, every campaign of an account) that a slow client
cannot turn into a held database connection.

Rows are read in keyset pages (`WHERE key > last ORDER BY key LIMIT n`): a connection is taken
from the pool for one page and given back before the page is written to the client, so ten
clients reading a 100,000-part campaign at modem speed hold no connection while they read
(before: one server-side cursor each, for as long as the client took, and every pool slot gone).
A page is a consistent snapshot on its own; rows that change between pages are shown as they
are when their page is read (a status moving on), and none is skipped or repeated because the
key (parts.id, or campaigns' created_at then id) never changes.

Each account may hold `max_streams_per_account` streams at once per process; one more is a 429
with Retry-After.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from sqlalchemy import and_, or_
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tikosms.db.models import Campaign, Part
from tikosms.errors import RateLimited

STREAM_RETRY_AFTER = 2  # seconds a client refused a stream is told to wait


class StreamSlots:
    """Streams open per account in this process."""

    def __init__(self, per_account: int) -> None:
        self.per_account = per_account
        self._open: dict[int, int] = {}

    def acquire(self, account_id: int) -> None:
        held = self._open.get(account_id, 0)
        if held >= self.per_account:
            raise RateLimited(
                f"Too many streamed reads at once: at most {self.per_account} per account. "
                f"Retry after {STREAM_RETRY_AFTER} s, or read in pages (page, per_page).",
                code="too_many_streams", headers={"Retry-After": str(STREAM_RETRY_AFTER)})
        self._open[account_id] = held + 1

    def release(self, account_id: int) -> None:
        held = self._open.get(account_id, 0) - 1
        if held > 0:
            self._open[account_id] = held
        else:
            self._open.pop(account_id, None)

    def held(self, account_id: int) -> int:
        return self._open.get(account_id, 0)


def parts_after(stmt: Any, last: Any) -> Any:
    """The next page of parts of a campaign (ordered by parts.id)."""
    return stmt if last is None else stmt.where(Part.id > last.id)


def campaigns_after(stmt: Any, last: Any) -> Any:
    """The next page of campaigns, newest first (created_at desc, id desc)."""
    if last is None:
        return stmt
    return stmt.where(or_(Campaign.created_at < last.created_at,
                          and_(Campaign.created_at == last.created_at, Campaign.id < last.id)))


class _SlotResponse(StreamingResponse):
    """Gives the account's stream slot back however the response ends (finished, client gone,
    cancelled), even if its body was never started."""

    def __init__(self, body: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(body, media_type="application/json")
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def stream(db: Any, slots: StreamSlots, account_id: int, stmt: Any, after: Any, key: str,
           view: Any, page_rows: int) -> StreamingResponse:
    """Every row of `stmt` as `{"success":true,"<key>":[...]}`, read `page_rows` at a time."""
    slots.acquire(account_id)

    async def body() -> AsyncIterator[bytes]:
        yield b'{"success":true,"' + key.encode() + b'":['
        first = True
        last = None
        while True:
            async with db.connect() as conn:  # held for one page only
                rows = (await conn.execute(after(stmt, last).limit(page_rows))).all()
            if not rows:
                break
            chunk = [orjson.dumps(view(r)) for r in rows]
            yield (b"" if first else b",") + b",".join(chunk)
            first = False
            if len(rows) < page_rows:
                break
            last = rows[-1]
        yield b"]}"

    try:
        return _SlotResponse(body(), lambda: slots.release(account_id))
    except BaseException:
        slots.release(account_id)
        raise
