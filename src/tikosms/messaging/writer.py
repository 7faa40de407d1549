"""Group commit for single sends.

One-time codes arrive in bursts from one account. Written one transaction each, every send holds
the account's balance row lock through its own commit, whose WAL flush takes milliseconds: one
account could not go past a few hundred sends a second. Here the sends that arrive while a
transaction is being written are written together in the next one: one flush for all of them,
each still reserved, checked and answered on its own (a 402 for one send fails nothing else).

A send that finds the writer idle is written at once, unless sends are arriving as a stream
(`linger`, `TIKOSMS_SEND_LINGER_SECONDS`, 3 ms): when the smoothed gap between two sends is
below it, the writer lets the sends of the next `linger` seconds join first, for as long as
lingering brings company (a client that sends one request at a time, waiting for each answer,
comes as often as a stream, but nothing can join its sends: they stop waiting). Under a trickle
(500 sends/s: one every 2 ms) every send was a transaction of its own, five round trips each
(BEGIN, opt-outs, rows, reserve, COMMIT) that cost about as much CPU in the API and in
PostgreSQL as the send itself; lingering groups them two to four at a time. A send that comes
alone (the gap is larger) never waits, and under load the writer is never idle, so the batch is
whatever queued up during the previous write, as without a linger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.engine import Database
from tikosms.db.models import IdempotencyKey
from tikosms.db.types import utcnow
from tikosms.delivery.notify import CAMPAIGN, SINGLE, DueAccounts, PartsSignal
from tikosms.errors import AccountSuspended, NotAuthenticated, PaymentRequired
from tikosms.inbound.optouts import OptedOut, opted_out_sends
from tikosms.messaging import batch_sql
from tikosms.messaging import repository as repo
from tikosms.messaging.idempotency import TTL
from tikosms.messaging.service import PreparedSend
from tikosms.observability.metrics import SEND_BATCH

log = logging.getLogger("tikosms.messaging")

MAX_BATCH = 256  # sends per transaction
GAP_WEIGHT = 0.2  # the smoothed gap between sends moves this much towards each new gap
MAX_GAP = 1.0  # seconds: a longer pause counts as this (one pause does not outweigh a stream)
# the share of recent lingers that ended with more than one send to write (smoothed): under
# WORTH_MIN the writer stops lingering, and tries once every PROBE_EVERY batches
WORTH_WEIGHT = 0.2
WORTH_MIN = 0.3
PROBE_EVERY = 16
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
    at: float = 0.0  # monotonic time it came


# outcomes of one send
STORED = "stored"
KEY_TAKEN = "key_taken"  # the idempotency key was committed by another request first


class SendWriter:
    def __init__(self, db: Database, max_batch: int = MAX_BATCH,
                 signal: PartsSignal | None = None, linger: float = 0.0) -> None:
        """`signal`: told after each commit which accounts have new due parts (it wakes the
        delivery workers). `linger`: seconds an idle writer lets a stream of sends gather (0:
        never waits)."""
        self.db = db
        self.max_batch = max_batch
        self.signal = signal
        self.linger = linger if max_batch > 1 else 0.0
        self._queue: list[_Item] = []
        self._drainer: asyncio.Task[None] | None = None
        self._last = 0.0  # monotonic time of the last send
        self._gap = MAX_GAP  # smoothed seconds between two sends
        self._worth = 1.0  # smoothed share of lingers that ended with company
        self._since_probe = 0
        self.batches = 0
        self.lingered = 0  # batches that waited for a stream's next sends (metrics, tests)

    async def write(self, prepared: PreparedSend, payload: bytes,
                    idem: Idempotency | None) -> str:
        """Store one send; returns STORED or KEY_TAKEN, or raises PaymentRequired (402) or the
        database's error."""
        now = time.monotonic()
        item = _Item(prepared, payload, idem, at=now)
        self._gap += GAP_WEIGHT * (min(now - self._last, MAX_GAP) - self._gap)
        self._last = now
        self._queue.append(item)
        if self._drainer is None or self._drainer.done():
            # a task of its own: a client hanging up must not cut other sends' transaction
            self._drainer = asyncio.create_task(self._drain())
        return await asyncio.shield(item.done)

    async def close(self, within: float = 5.0) -> None:
        """Let the sends already taken (one lingering included) be written and answered before
        the database goes: `within` seconds at most."""
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            try:
                await asyncio.wait_for(asyncio.shield(drainer), within)
            except TimeoutError:
                log.error("%d single sends not yet written after %.0f s at shutdown; their "
                          "clients get no answer and nothing is charged", len(self._queue),
                          within)

    def _should_linger(self) -> bool:
        """Sends come closer together than the linger, and lingering has been bringing company.
        A client that sends one request at a time (the next after the answer) comes as often
        as a stream but no send ever joins its wait: after a few fruitless lingers its sends
        are written at once, with one probe every PROBE_EVERY batches in case a stream begins."""
        if not self.linger or self._gap >= self.linger or len(self._queue) >= self.max_batch:
            return False
        if self._worth >= WORTH_MIN:
            return True
        self._since_probe += 1
        return self._since_probe >= PROBE_EVERY

    async def _drain(self) -> None:
        while self._queue:
            if self._should_linger():
                # a stream: the batch waits until its first send has waited `linger` (the
                # sends that came during the last commit have waited through it already)
                wait = self._queue[0].at + self.linger - time.monotonic()
                if wait > 0:
                    self.lingered += 1
                    self._since_probe = 0
                    await asyncio.sleep(wait)
                    company = 1.0 if len(self._queue) > 1 else 0.0
                    self._worth += WORTH_WEIGHT * (company - self._worth)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                await self._commit(batch)
            except DBAPIError as exc:
                if len(batch) == 1 or not _is_data_error(exc):
                    _fail(batch, exc)
                    continue
                # one send's value refused by the database (a character it cannot store, a
                # number out of range) must not fail the others: each is tried on its own
                log.warning("send batch refused by the database (%s); retrying its %d sends "
                            "one by one", type(exc.orig).__name__, len(batch))
                for item in batch:
                    try:
                        await self._commit([item])
                    except BaseException as one:
                        _fail([item], one)
                        if not isinstance(one, Exception):
                            raise
            except BaseException as exc:
                _fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise

    async def _commit(self, batch: list[_Item]) -> None:
        async with self.db.begin() as conn:
            outcomes = await self._write(conn, batch)
        self.batches += 1
        if self.max_batch > 1:  # the campaigns' writer (one a transaction) is not group commit
            SEND_BATCH.observe(len(batch))
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                item.done.set_exception(outcome)
            else:
                item.done.set_result(outcome)
        if self.signal is not None:
            try:
                self.signal.stored(_due_accounts(batch, outcomes))
            except Exception:  # committed and answered: the workers find them by polling
                log.exception("waking the delivery workers failed (they poll meanwhile)")

    async def _write(self, conn: AsyncConnection, batch: list[_Item]) -> list[Any]:
        """One batch in few round trips (PostgreSQL: the rows and the token check in one
        statement, then one statement per account that reserves and writes the ledger)."""
        now = utcnow()
        outcomes: list[Any] = [None] * len(batch)
        if conn.dialect.name == "postgresql":
            await _lock_keys(conn, batch)
        for i, item in enumerate(batch):
            p = item.prepared
            if item.idem is not None and not await _claim_key(conn, p.account_id, item, now):
                outcomes[i] = KEY_TAKEN
        candidates = [i for i, o in enumerate(outcomes) if o is None]
        # recipients who opted out (STOP): checked here, one query for the batch, in the
        # transaction that would store the send
        singles = [i for i in candidates if batch[i].prepared.opt_out is not None]
        if singles:
            keys = [(batch[i].prepared.account_id, *batch[i].prepared.opt_out)  # type: ignore[misc]
                    for i in singles]
            for j in await opted_out_sends(conn, keys):
                outcomes[singles[j]] = OptedOut()
                await _release_key(conn, batch[singles[j]])
            candidates = [i for i in candidates if outcomes[i] is None]
        if not candidates:
            return outcomes
        sends = [batch[i].prepared for i in candidates]
        token_ids = sorted({p.token_id for p in sends if p.token_id})
        # The rows first and the balance last: the account row stays locked from its UPDATE to
        # the commit, so the fewer statements after it, the less two API processes wait on each
        # other. A large campaign reserves first, so that a 402 does not write 100,000 rows.
        rows_first = sum(len(p.rows) for p in sends) <= ROWS_FIRST_LIMIT
        if rows_first:
            states = await batch_sql.insert_sends(
                conn, [p.campaign for p in sends], [row for p in sends for row in p.rows],
                token_ids)
        else:
            states = await batch_sql.token_states(conn, token_ids) if token_ids else {}
        # the token was checked when the request came, perhaps from a cache: a token revoked or
        # an account suspended since is refused here, in the transaction that would charge it
        for i in candidates:
            token_id = batch[i].prepared.token_id
            if token_id:
                revoked, status = states.get(token_id, (True, ""))
                if revoked:
                    outcomes[i] = NotAuthenticated()
                elif status != "active":
                    outcomes[i] = AccountSuspended()
        # reserve: one statement per account for all its sends of the batch (the usual case);
        # when the sum does not fit, send by send, so that each gets its own answer
        by_account: dict[int, list[int]] = {}
        for i in candidates:
            if outcomes[i] is None:
                by_account.setdefault(batch[i].prepared.account_id, []).append(i)
        # accounts in id order: two batches (two API processes) never wait on each other's rows
        for account_id, indexes in sorted(by_account.items()):
            costs = [batch[i].prepared.campaign[batch_sql.CAMPAIGN_COST]  # micro-units
                     for i in indexes]
            ids = [batch[i].prepared.result.campaign_id for i in indexes]
            if await batch_sql.reserve_with_ledger(conn, account_id, costs, ids, now):
                for i in indexes:
                    outcomes[i] = STORED
                continue
            for i, cost, campaign_id in zip(indexes, costs, ids, strict=True):
                if await batch_sql.reserve_with_ledger(conn, account_id, [cost], [campaign_id],
                                                       now):
                    outcomes[i] = STORED
                else:
                    outcomes[i] = PaymentRequired()
        refused = [i for i in candidates if outcomes[i] != STORED]
        for i in refused:
            await _release_key(conn, batch[i])  # a refused send may be retried with its key
        if rows_first and refused:
            await batch_sql.delete_campaigns(
                conn, [batch[i].prepared.result.campaign_id for i in refused])
        if not rows_first:
            stored = [batch[i].prepared for i in candidates if outcomes[i] == STORED]
            if stored:
                await batch_sql.insert_campaigns(conn, [p.campaign for p in stored])
                await repo.bulk_insert_parts(conn, [row for p in stored for row in p.rows])
        return outcomes


def _due_accounts(batch: list[_Item], outcomes: list[Any]) -> DueAccounts:
    due: DueAccounts = {}
    for item, outcome in zip(batch, outcomes, strict=True):
        p = item.prepared
        if outcome == STORED and p.rows:
            kind = SINGLE if p.campaign[batch_sql.CAMPAIGN_KIND] == "single" else CAMPAIGN
            due[p.account_id] = due.get(p.account_id, 0) | kind
    return due


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for item in batch:
        if not item.done.done():
            item.done.set_exception(exc)


def _is_data_error(exc: DBAPIError) -> bool:
    """The statement was refused for what it carried, not because the database is away."""
    return not exc.connection_invalidated and not isinstance(exc, OperationalError)


async def _release_key(conn: AsyncConnection, item: _Item) -> None:
    """A refused send (401, 403, 402) does not keep its idempotency key: it may be retried."""
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
    if conn.dialect.name == "postgresql":
        # partitioned by created_at (0012): the primary key holds only within a partition, so
        # the key's lifetime is looked at (the partitions that can hold it) under its lock
        taken = (await conn.execute(select(IdempotencyKey.key).where(
            IdempotencyKey.account_id == account_id, IdempotencyKey.key == item.idem.key,
            IdempotencyKey.created_at >= now - TTL).limit(1))).first()
        if taken is not None:
            return False
    stmt = _insert_ignore(conn).values(
        account_id=account_id, key=item.idem.key, endpoint=item.idem.endpoint,
        request_hash=item.idem.request_hash, status_code=200,
        response_body=item.payload.decode(), created_at=now,
    ).on_conflict_do_nothing().returning(IdempotencyKey.key)
    return (await conn.execute(stmt)).first() is not None


# the namespace (first int4) of the idempotency keys' advisory locks: two-int4 locks never
# meet single-bigint ones (the migration lock)
_KEY_LOCK_SPACE = 0x69646D6B  # "idmk"


async def _lock_keys(conn: AsyncConnection, batch: list[_Item]) -> None:
    """Lock the batch's idempotency keys until the commit, in one order for every process (two
    batches never deadlock on them): a request holding its key's lock is the only one that
    can look for and insert the key, so a key is stored once across partitions."""
    keys = sorted({f"{i.prepared.account_id}:{i.idem.key}" for i in batch if i.idem is not None})
    if keys:
        await conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock($1, hashtext(k)) "
            "FROM unnest($2::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
            (_KEY_LOCK_SPACE, keys))


def _insert_ignore(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(IdempotencyKey)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(IdempotencyKey)
