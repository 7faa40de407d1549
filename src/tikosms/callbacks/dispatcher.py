"""Sends the callback outbox: signed POSTs, retried with backoff for at least 24 hours.

Order per part: an event is sent only when it is its part's first pending event, so a customer
never sees "DELIVRD" before "ENROUTE" (a late intermediate state never overwrites a final one on
their side either). Several processes can dispatch from one PostgreSQL without sending an event
twice at the same time: a claim locks its rows (`FOR UPDATE SKIP LOCKED`) and leases them.

The claim is an index range scan on `(state, next_attempt_at)` whatever the backlog: due events
first, then, for their parts only, the lowest pending id per part (index `(part_id, id)`). An
event with an earlier pending event is not sent but held back: its `next_attempt_at` moves to
just after its predecessor's, so it does not come back every round; when the predecessor
finishes, `_record` makes its part's pending events due at once. A leased event's
`next_attempt_at` is its lease's end, so events in flight leave the due range too, and an event
claimed by a process that died comes back when the lease runs out.

Posts stream: `callback_concurrency` posts run at once, each event its own task, while one loop
takes turns with the database: each turn records the posts finished since the last one and
claims what the window of events in flight has room for, in one transaction. The receiver does
not wait while we talk to the database, nor a round for its slowest post.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.callbacks import signing
from tikosms.callbacks.retry import RetryPolicy
from tikosms.callbacks.sender import CallbackSender, DeliveryAttempt
from tikosms.callbacks.ssrf import CallbackHostUnresolved, CallbackUrlError, check_callback_host
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Account, CallbackAttempt, CallbackEvent
from tikosms.db.types import utcnow

log = logging.getLogger("tikosms.callbacks")

LEASE = timedelta(seconds=60)  # at least; see CallbackDispatcher._lease
HELD_BACK_GAP = timedelta(milliseconds=1)  # a held-back event is due this long after the one before
# ...but at most this long after now while the one before is leased: its release by `_record`
# can be missed when the claim holding it back runs in another process during that record.
HELD_BACK_RECHECK = timedelta(seconds=5)
START_MARGIN = 5.0  # seconds: a post starts only if it can time out this long before its lease ends
WINDOW_PER_POST = 8  # events claimed and not yet recorded, per concurrent post
IDLE_POLL = 0.5  # seconds between claims when nothing is due and nobody wakes us

# "Pending" for queries by part: `state` through an expression, so that no index on it applies
# and the planner takes `(part_id, id)`. Without statistics (a freshly filled table) both
# SQLite and PostgreSQL may otherwise prefer `(state, next_attempt_at)`: every pending event.
_PENDING_BY_PART = func.coalesce(CallbackEvent.state, "") == "pending"

# An outcome: the attempt and whether to give up at once (a refused URL); None when the event
# was not posted at all (stopping, or its lease too close to its end) and goes back to the queue.
Outcome = tuple[DeliveryAttempt, bool] | None


class CallbackDispatcher:
    def __init__(self, db: Database, settings: Settings, policy: RetryPolicy | None = None,
                 batch: int = 500) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.batch = batch  # events claimed, and posts recorded, per transaction, at most
        self.delivered = 0
        # A lease outlasts a few timeouts, so an event waiting for a free post slot keeps it.
        self._lease = max(LEASE, timedelta(seconds=3 * settings.callback_timeout_seconds))
        self._window = WINDOW_PER_POST * settings.callback_concurrency
        self._posts = asyncio.Semaphore(settings.callback_concurrency)
        self._sender = CallbackSender(
            timeout=settings.callback_timeout_seconds, limit=settings.callback_concurrency,
            limit_per_host=settings.callback_concurrency,
            allow_private=settings.callback_allow_private,
        )
        self._secrets: dict[int, str] = {}
        self._finished: list[tuple[Row, Outcome]] = []  # posted (or given back), not recorded
        self._progress = asyncio.Event()  # a post finished, or something may have become due
        self._in_window = 0  # claimed and not yet recorded
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callbacks")

    def wake(self) -> None:
        self._progress.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Claim nothing more; finish the posts in flight and record them, then stop.

        Claimed events not yet posted go back to the queue at once. After `grace` seconds the
        rest is cancelled: those events come back when their lease runs out.
        """
        self._stopping = True
        self._progress.set()
        if self._task:
            done, _ = await asyncio.wait([self._task], timeout=grace)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._sender.close()

    async def run_once(self) -> int:
        """One claim, its posts and their record; the number of events posted."""
        claimed, _ = await self._turn([], self.batch)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send(row) for row in claimed))
        await self._turn(list(zip(claimed, outcomes, strict=True)), 0)
        return len(claimed)

    async def _run(self) -> None:
        try:
            await self._keep_books()
        finally:
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _keep_books(self) -> None:
        """The one loop that talks to the database: each turn records the posts finished since
        the last one and claims as many events as the window has room for, in one transaction
        (on SQLite, one wait for the write lock instead of two). Posts run meanwhile, so the
        turns batch themselves: the slower a turn, the more it records next time."""
        min_claim = min(self.batch, self.settings.callback_concurrency)
        idle = False  # the last claim found nothing due
        while not (self._stopping and self._in_window == 0):
            finished = self._finished[:self.batch]
            room = self._window - self._in_window + len(finished)
            want = 0 if self._stopping or room < min_claim else min(self.batch, room)
            if not finished and (want == 0 or idle):
                self._progress.clear()
                try:
                    await asyncio.wait_for(self._progress.wait(), IDLE_POLL if want else None)
                except TimeoutError:
                    pass
                idle = False
                continue
            self._progress.clear()
            try:
                claimed, held_back = await self._turn(finished, want)
            except Exception:
                log.exception("callback bookkeeping failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            del self._finished[:len(finished)]
            self._in_window += len(claimed) - len(finished)
            idle = want > 0 and not claimed and not held_back
            start_by = time.monotonic() + self._lease.total_seconds() - (
                self.settings.callback_timeout_seconds + START_MARGIN)
            for row in claimed:
                task = asyncio.create_task(self._post(row, start_by))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _post(self, row: Row, start_by: float) -> None:
        outcome: Outcome = None
        try:
            async with self._posts:
                # Not after stop(), nor so late that the lease could end during the post
                # (another dispatcher could then claim the event and post it too).
                if not self._stopping and time.monotonic() < start_by:
                    outcome = await self._send(row)
        finally:
            self._finished.append((row, outcome))
            self._progress.set()

    async def _turn(self, finished: Sequence[tuple[Row, Outcome]],
                    want: int) -> tuple[Sequence[Row], int]:
        """Record `finished`, then claim up to `want` events, in one transaction; returns the
        claimed events and how many due ones were held back. Recording first lets the claim see
        the events that finished posts have just released."""
        claimed: Sequence[Row] = []
        held_back = delivered = 0
        async with self.db.begin() as conn:
            if finished:
                delivered = await self._record(conn, finished)
            if want:
                claimed, held_back = await self._claim(conn, want)
        self.delivered += delivered
        return claimed, held_back

    async def _claim(self, conn: AsyncConnection, limit: int) -> tuple[Sequence[Row], int]:
        """Lease up to `limit` due events that are first pending of their part; returns them
        and how many due events were held back behind an earlier one."""
        now = utcnow()
        lease_until = now + self._lease
        due = (
            select(CallbackEvent.id, CallbackEvent.part_id)
            .where(
                CallbackEvent.state == "pending",
                CallbackEvent.next_attempt_at <= now,
                (CallbackEvent.lease_until.is_(None)) | (CallbackEvent.lease_until < now),
            )
            # Not by id too: the index alone gives this order, with no sort of the backlog.
            .order_by(CallbackEvent.next_attempt_at)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True, of=CallbackEvent)
        candidates = (await conn.execute(due)).all()
        if not candidates:
            return [], 0
        firsts = await _first_pending(conn, {c.part_id for c in candidates})
        ready = [c.id for c in candidates if firsts[c.part_id] == c.id]
        held_back = [c for c in candidates if firsts[c.part_id] != c.id]
        if held_back:
            await _hold_back(conn, held_back, firsts, set(ready), now)
        if not ready:
            return [], len(held_back)
        claimed = (await conn.execute(
            update(CallbackEvent).where(CallbackEvent.id.in_(ready))
            .values(lease_until=lease_until, next_attempt_at=lease_until)
            .returning(CallbackEvent.id, CallbackEvent.event_id, CallbackEvent.part_id,
                       CallbackEvent.account_id, CallbackEvent.url, CallbackEvent.payload,
                       CallbackEvent.attempts, CallbackEvent.created_at)
        )).all()
        missing = {r.account_id for r in claimed} - self._secrets.keys()
        if missing:
            for a in await conn.execute(select(Account.id, Account.signing_secret)
                                        .where(Account.id.in_(missing))):
                self._secrets[a.id] = a.signing_secret
        return claimed, len(held_back)

    async def _send(self, row: Row) -> tuple[DeliveryAttempt, bool]:
        """Returns the attempt and whether to give up at once (a refused URL)."""
        url: str = row.url
        try:
            await check_callback_host(url, self.settings.callback_allow_private)
        except CallbackHostUnresolved as exc:
            return DeliveryAttempt(False, None, f"cannot resolve host: {exc.reason}", 0.0), False
        except CallbackUrlError as exc:
            return DeliveryAttempt(False, None, f"callback refused: {exc.reason}", 0.0), True
        body = row.payload.encode()
        headers = signing.headers(self._secrets[row.account_id], row.event_id, int(time.time()),
                                  body)
        return await self._sender.post(url, body, headers), False

    async def _record(self, conn: AsyncConnection,
                      finished: Sequence[tuple[Row, Outcome]]) -> int:
        """Attempts recorded, events finished, rescheduled or given back, and the next pending
        event of each finished event's part made due; returns how many were delivered."""
        now = utcnow()
        attempts, updates, given_back, done_parts = [], [], [], set()
        delivered = 0
        for row, outcome in finished:
            if outcome is None:
                given_back.append({"eid": row.id})
                continue
            attempt, refused = outcome
            attempts.append({
                "event_id": row.id, "attempted_at": now, "status_code": attempt.status,
                "error": attempt.error, "duration_ms": int(attempt.duration_ms),
            })
            made = row.attempts + 1
            state, ended, nxt = "pending", None, None
            if attempt.ok:
                state, ended = "delivered", now
                delivered += 1
            else:
                nxt = None if refused else self.policy.next_attempt_at(row.created_at, made, now)
                if nxt is None:
                    state, ended = "failed", now
                    log.warning("callback %s to %s given up after %d attempts: %s",
                                row.event_id, row.url, made, attempt.error)
                else:
                    log.info("callback %s to %s failed (%s); attempt %d at %s", row.event_id,
                             row.url, attempt.error, made + 1, nxt.strftime("%H:%M:%S"))
            if ended is not None:
                done_parts.add(row.part_id)
            updates.append({
                "eid": row.id, "made": made, "code": attempt.status, "err": attempt.error,
                "st": state, "fin": ended, "nxt": nxt or now,
            })
        if updates:
            await conn.execute(
                update(CallbackEvent).where(CallbackEvent.id == bindparam("eid")).values(
                    attempts=bindparam("made"), lease_until=None,
                    last_status_code=bindparam("code"), last_error=bindparam("err"),
                    state=bindparam("st"), finished_at=bindparam("fin"),
                    next_attempt_at=bindparam("nxt"),
                ),
                updates,
            )
            await conn.execute(insert(CallbackAttempt), attempts)
        if given_back:
            await conn.execute(
                update(CallbackEvent).where(CallbackEvent.id == bindparam("eid"))
                .values(lease_until=None, next_attempt_at=now),
                given_back,
            )
        if done_parts:
            await _release_parts(conn, done_parts, now)
        return delivered


async def _first_pending(conn: AsyncConnection, part_ids: Iterable[int]) -> dict[int, int]:
    """The lowest pending event id of each part (index `(part_id, id)`)."""
    rows = await conn.execute(
        select(CallbackEvent.part_id, func.min(CallbackEvent.id))
        .where(_PENDING_BY_PART, CallbackEvent.part_id.in_(list(part_ids)))
        .group_by(CallbackEvent.part_id)
    )
    return {part_id: first for part_id, first in rows}


async def _hold_back(conn: AsyncConnection, held_back: Sequence[Row],
                     firsts: dict[int, int], ready: set[int], now: datetime) -> None:
    """Make each held-back event due just after its predecessor (its part's first pending one).

    A predecessor waiting for a retry is due then; a leased one (claimed now or by another
    dispatcher) is rechecked in a few seconds, and one due already (another dispatcher is
    claiming it), right after now. `_record` makes the event due at once when its predecessor
    finishes.
    """
    others = {firsts[e.part_id] for e in held_back} - ready
    recheck = now + HELD_BACK_RECHECK
    due_at = {pid: recheck for pid in ready}
    if others:
        for pid, due, leased in await conn.execute(
            select(CallbackEvent.id, CallbackEvent.next_attempt_at, CallbackEvent.lease_until)
            .where(CallbackEvent.id.in_(others))
        ):
            due_at[pid] = min(due, recheck) if leased is not None and leased > now else due
    await conn.execute(
        update(CallbackEvent).where(CallbackEvent.id == bindparam("eid"))
        .values(next_attempt_at=bindparam("due")),
        [{"eid": e.id, "due": max(due_at[firsts[e.part_id]], now) + HELD_BACK_GAP}
         for e in held_back],
    )


async def _release_parts(conn: AsyncConnection, part_ids: Iterable[int], now: datetime) -> None:
    """Make the pending events of these parts due now: their predecessor has just finished.

    Only the first of each part will be posted; the next claim holds back the others again.
    None of them waits for a retry (only a part's first pending event is ever attempted) nor is
    leased (ours was the first), so all are set.
    """
    await conn.execute(
        update(CallbackEvent)
        .where(_PENDING_BY_PART, CallbackEvent.part_id.in_(list(part_ids)))
        .values(next_attempt_at=now)
    )
