"""Group commit for single sends.

One-time codes arrive in bursts from one account. Written one transaction each, every send holds
the account's balance row lock through its own commit, whose WAL flush takes milliseconds: one
account could not go past a few hundred sends a second. Here the sends that arrive while a
transaction is being written are written together in the next one: one flush for all of them,
each still reserved, checked and answered on its own (a 402 for one send fails nothing else).

No extra waiting: the first send finds the writer idle and is written at once; the batch is
simply whatever queued up during the previous write.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.engine import Database
from tikosms.db.models import IdempotencyKey
from tikosms.db.types import naive_utc, to_micros, utcnow
from tikosms.errors import AccountSuspended, NotAuthenticated, PaymentRequired
from tikosms.messaging import batch_sql
from tikosms.messaging import repository as repo
from tikosms.messaging.idempotency import TTL
from tikosms.messaging.service import PreparedSend

log = logging.getLogger("tikosms.messaging")

MAX_BATCH = 256  # sends per transaction
ROWS_FIRST_LIMIT = 2000  # parts: up to this many are written before the balance is reserved


@dataclass(slots=True)
class Idempotency:
    key: str
    endpoint: str
    request_hash: str


@dataclass(slots=True)
class _Item:
    prepared: PreparedSend
    payload: bytes  # the answer, stored with an idempotency key
    idem: Idempotency | None
    done: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop()
                                      .create_future())


# outcomes of one send
STORED = "stored"
KEY_TAKEN = "key_taken"  # the idempotency key was committed by another request first


class SendWriter:
    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Item] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0

    async def write(self, prepared: PreparedSend, payload: bytes,
                    idem: Idempotency | None) -> str:
        """Store one send; returns STORED or KEY_TAKEN, or raises PaymentRequired (402) or the
        database's error."""
        item = _Item(prepared, payload, idem)
        self._queue.append(item)
        if self._drainer is None or self._drainer.done():
            # a task of its own: a client hanging up must not cut other sends' transaction
            self._drainer = asyncio.create_task(self._drain())
        return await asyncio.shield(item.done)

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                async with self.db.begin() as conn:
                    outcomes = await self._write(conn, batch)
            except BaseException as exc:
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.batches += 1
            for item, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    item.done.set_exception(outcome)
                else:
                    item.done.set_result(outcome)

    async def _write(self, conn: AsyncConnection, batch: list[_Item]) -> list[Any]:
        now = utcnow()
        outcomes: list[Any] = [None] * len(batch)
        # the token was checked when the request came, perhaps from a cache: a token revoked or
        # an account suspended since is refused here, in the transaction that would charge it
        token_ids = sorted({item.prepared.token_id for item in batch if item.prepared.token_id})
        if token_ids:
            states = await batch_sql.token_states(conn, token_ids)
            for i, item in enumerate(batch):
                if item.prepared.token_id:
                    revoked, status = states.get(item.prepared.token_id, (True, ""))
                    if revoked:
                        outcomes[i] = NotAuthenticated()
                    elif status != "active":
                        outcomes[i] = AccountSuspended()
        for i, item in enumerate(batch):
            p = item.prepared
            if outcomes[i] is None and item.idem is not None \
                    and not await _claim_key(conn, p.account_id, item, now):
                outcomes[i] = KEY_TAKEN
        candidates = [i for i, o in enumerate(outcomes) if o is None]
        # The rows first and the balance last: the account row stays locked from its UPDATE to
        # the commit, so the fewer statements after it, the less two API processes wait on each
        # other. A large campaign reserves first, so that a 402 does not write 100,000 rows.
        rows_first = sum(len(batch[i].prepared.rows) for i in candidates) <= ROWS_FIRST_LIMIT
        if rows_first:
            await self._insert_rows(conn, [batch[i].prepared for i in candidates])
        # reserve: one UPDATE per account for all its sends of the batch (the usual case);
        # when the sum does not fit, send by send, so that each gets its own answer
        by_account: dict[int, list[int]] = {}
        for i in candidates:
            by_account.setdefault(batch[i].prepared.account_id, []).append(i)
        ledger: list[tuple[Any, ...]] = []
        now_n = naive_utc(now)
        # accounts in id order: two batches (two API processes) never wait on each other's rows
        for account_id, indexes in sorted(by_account.items()):
            costs = [to_micros(batch[i].prepared.result.cost) for i in indexes]  # micro-units
            whole = sum(costs)
            final = await batch_sql.reserve(conn, account_id, whole, now)
            if final is not None:
                after = final + whole
                for i, cost in zip(indexes, costs, strict=True):
                    after -= cost
                    ledger.append(_ledger_row(batch[i].prepared, cost, after, now_n))
                    outcomes[i] = STORED
                continue
            for i, cost in zip(indexes, costs, strict=True):
                balance = await batch_sql.reserve(conn, account_id, cost, now)
                if balance is None:
                    await _release_key(conn, batch[i])
                    outcomes[i] = PaymentRequired()
                else:
                    ledger.append(_ledger_row(batch[i].prepared, cost, balance, now_n))
                    outcomes[i] = STORED
        stored = [batch[i].prepared for i in candidates if outcomes[i] == STORED]
        if rows_first and len(stored) < len(candidates):
            refused = [batch[i].prepared.result.campaign_id for i in candidates
                       if outcomes[i] != STORED]
            await batch_sql.delete_campaigns(conn, refused)
        if not rows_first:
            await self._insert_rows(conn, stored)
        await batch_sql.insert_ledger(conn, ledger)
        return outcomes


    @staticmethod
    async def _insert_rows(conn: AsyncConnection, sends: list[PreparedSend]) -> None:
        if sends:
            await batch_sql.insert_campaigns(conn, [p.campaign for p in sends])
            await repo.bulk_insert_parts(conn, [row for p in sends for row in p.rows])


def _ledger_row(p: PreparedSend, cost: int, balance_after: int, now: datetime
                ) -> tuple[Any, ...]:
    """A reserve's ledger row (batch_sql.LEDGER_COLUMNS): micro-units, naive UTC."""
    return (p.account_id, -cost, balance_after, "reserve", p.result.campaign_id, None, now)


async def _release_key(conn: AsyncConnection, item: _Item) -> None:
    """A send refused with 402 does not keep its idempotency key: it may be retried."""
    if item.idem is not None:
        await conn.execute(delete(IdempotencyKey).where(
            IdempotencyKey.account_id == item.prepared.account_id,
            IdempotencyKey.key == item.idem.key))


async def _claim_key(conn: AsyncConnection, account_id: int, item: _Item, now: Any) -> bool:
    """Insert the idempotency key with its answer; False when another request holds it."""
    assert item.idem is not None
    # an expired key may be reused: its old row goes first
    await conn.execute(delete(IdempotencyKey).where(
        IdempotencyKey.account_id == account_id, IdempotencyKey.key == item.idem.key,
        IdempotencyKey.created_at < now - TTL))
    stmt = _insert_ignore(conn).values(
        account_id=account_id, key=item.idem.key, endpoint=item.idem.endpoint,
        request_hash=item.idem.request_hash, status_code=200,
        response_body=item.payload.decode(), created_at=now,
    ).on_conflict_do_nothing().returning(IdempotencyKey.key)
    return (await conn.execute(stmt)).first() is not None


def _insert_ignore(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(IdempotencyKey)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(IdempotencyKey)
