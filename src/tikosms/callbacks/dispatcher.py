"""Sends the callback outbox: signed POSTs, retried with backoff for at least 24 hours.

Order per part: an event is sent only when it is its part's first pending event, so a customer
never sees "DELIVRD" before "ENROUTE" (a late intermediate state never overwrites a final one on
their side either). Several processes can dispatch from one PostgreSQL without sending an event
twice at the same time: a claim locks its rows (`FOR UPDATE SKIP LOCKED`) and leases them.

The claim is an index range scan on `(state, next_attempt_at)` whatever the backlog: due events
first, then, for their parts only, the pending events of each part (index `(part_id, id)`). A
part whose first pending event is due is leased as a chain, that event and the pending ones
after it, posted in order by one poster (`plan_claim`). Any other due event is held back: its
`next_attempt_at` moves to just after its predecessor's, so it does not come back every round;
when the predecessor finishes, `_record` makes its part's pending events due at once. A leased
event's
`next_attempt_at` is its lease's end, so events in flight leave the due range too, and an event
claimed by a process that died comes back when the lease runs out.

Posts stream: `callback_concurrency` posters each post one claimed chain (a part's pending events,
in order) at a time, while one loop takes turns with the database: each turn records the posts
finished since the last one and claims what the window of events in flight has room for, in one
transaction. The receiver does not wait while we talk to the database, nor a round for its
slowest post. The turn's SQL runs on the driver (`tikosms.callbacks.repository`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.callbacks import repository, signing
from tikosms.callbacks.repository import AttemptRecord, ClaimedEvent, PendingEvent
from tikosms.callbacks.retry import RetryPolicy
from tikosms.callbacks.sender import CallbackSender, DeliveryAttempt
from tikosms.callbacks.ssrf import CallbackHostUnresolved, CallbackUrlError, check_callback_host
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.observability import metrics

log = logging.getLogger("tikosms.callbacks")

LEASE = timedelta(seconds=60)  # at least; see CallbackDispatcher._lease
HELD_BACK_GAP = timedelta(milliseconds=1)  # a held-back event is due this long after the one before
# ...but at most this long after now while the one before is leased: its release by `_record`
# can be missed when the claim holding it back runs in another process during that record.
HELD_BACK_RECHECK = timedelta(seconds=5)
START_MARGIN = 5.0  # seconds: a post starts only if it can time out this long before its lease ends
WINDOW_PER_POST = 32  # events claimed and not yet recorded, per concurrent post
IDLE_POLL = 0.5  # seconds between claims when nothing is due and nobody wakes us
# A callback URL's host check is reused this long (as aiohttp's DNS cache is): a lookup per
# post would cost more than the post. An answer that changes meanwhile is still checked by the
# sender's resolver, on the addresses it connects to.
HOST_CHECK_TTL = 10.0  # seconds
HOST_CHECKS_KEPT = 10_000  # URLs; past this many the cache starts again



@dataclass(frozen=True, slots=True)
class Finished:
    """A claimed event back from posting: its attempt, or None when it was not posted (stopping,
    its lease too close to its end, or the event before it to be retried) and goes back to the
    queue, due at `due`."""

    event: ClaimedEvent
    record: AttemptRecord | None
    due: datetime


class CallbackDispatcher:
    def __init__(self, db: Database, settings: Settings, policy: RetryPolicy | None = None,
                 batch: int = 2000, idle_poll: float = IDLE_POLL) -> None:
        self.db = db
        self.idle_poll = idle_poll  # seconds between claims when nothing is due
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.batch = batch  # events claimed, and posts recorded, per transaction, at most
        self.delivered = 0
        # A lease outlasts a few timeouts, so an event waiting for a free post slot keeps it.
        self._lease = max(LEASE, timedelta(seconds=3 * settings.callback_timeout_seconds))
        self._window = WINDOW_PER_POST * settings.callback_concurrency
        # claimed chains waiting for one of the `callback_concurrency` posters
        self._to_post: asyncio.Queue[tuple[Sequence[ClaimedEvent], float]] = asyncio.Queue()
        self._sender = CallbackSender(
            timeout=settings.callback_timeout_seconds, limit=settings.callback_concurrency,
            limit_per_host=settings.callback_concurrency,
            allow_private=settings.callback_allow_private,
        )
        self._secrets: dict[int, str] = {}
        # URL -> (monotonic time of the check, the refusal or None)
        self._host_checks: dict[str, tuple[float, CallbackUrlError | None]] = {}
        self._finished: list[Finished] = []  # posted (or given back), not recorded
        self._progress = asyncio.Event()  # a post finished, or something may have become due
        self._in_window = 0  # claimed and not yet recorded
        self._posters: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._posters = [asyncio.create_task(self._poster(), name=f"callbacks-post-{i}")
                         for i in range(self.settings.callback_concurrency)]
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
        """One claim, its posts and their record; the number of events claimed."""
        chains, _ = await self._turn([], self.batch)
        if not chains:
            return 0
        await asyncio.gather(*(self._post_chain(chain, self._start_by()) for chain in chains))
        finished, self._finished = self._finished, []
        await self._turn(finished, 0)
        return len(finished)

    async def _run(self) -> None:
        try:
            await self._keep_books()
        finally:
            for task in self._posters:
                task.cancel()
            await asyncio.gather(*self._posters, return_exceptions=True)

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
                    await asyncio.wait_for(self._progress.wait(),
                                           self.idle_poll if want else None)
                except TimeoutError:
                    pass
                idle = False
                continue
            self._progress.clear()
            try:
                chains, held_back = await self._turn(finished, want)
            except Exception:
                log.exception("callback bookkeeping failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            del self._finished[:len(finished)]
            self._in_window += sum(len(chain) for chain in chains) - len(finished)
            idle = want > 0 and not chains and not held_back
            start_by = self._start_by()
            for chain in chains:
                self._to_post.put_nowait((chain, start_by))

    def _start_by(self) -> float:
        """The monotonic time after which an event claimed now must not be posted: its post
        could then outlast its lease (another dispatcher could claim and post it too)."""
        return time.monotonic() + self._lease.total_seconds() - (
            self.settings.callback_timeout_seconds + START_MARGIN)

    async def _poster(self) -> None:
        """One of `callback_concurrency` tasks posting claimed chains, one post at a time (a
        task per chain, waiting on a semaphore, costs more CPU than the post's own Python)."""
        while True:
            chain, start_by = await self._to_post.get()
            await self._post_chain(chain, start_by)

    async def _post_chain(self, chain: Sequence[ClaimedEvent], start_by: float) -> None:
        """Post a part's claimed events one after the other, each once the one before it has
        ended (delivered, or given up). After a failure to be retried the rest go back to the
        queue, due just after that retry; if one is not posted at all, neither are the rest."""
        done = 0
        try:
            held: datetime | None = None  # the rest wait until then
            for event in chain:
                record = None
                if held is None and not self._stopping and time.monotonic() < start_by:
                    record = await self._attempt(event)
                if record is None:
                    held = held or utcnow()
                    self._finish(Finished(event, None, held))
                else:
                    if record.state == "pending":
                        held = record.next_attempt_at + HELD_BACK_GAP
                    self._finish(Finished(event, record, record.next_attempt_at))
                done += 1
        finally:
            if done < len(chain):  # cancelled: back to the queue
                now = utcnow()
                for event in chain[done:]:
                    self._finish(Finished(event, None, now))

    def _finish(self, finished: Finished) -> None:
        self._finished.append(finished)
        self._progress.set()

    async def _attempt(self, event: ClaimedEvent) -> AttemptRecord:
        """Post the event once; its record, with the next attempt decided."""
        attempt, refused = await self._send(event)
        now = utcnow()
        made = event.attempts + 1
        state, due = "delivered", now
        if not attempt.ok:
            retry = None if refused else self.policy.next_attempt_at(event.created_at, made, now)
            if retry is None:
                state = "failed"
                log.warning("callback %s to %s given up after %d attempts: %s",
                            event.event_id, event.url, made, attempt.error)
            else:
                state, due = "pending", retry
                log.info("callback %s to %s failed (%s); attempt %d at %s", event.event_id,
                         event.url, attempt.error, made + 1, retry.strftime("%H:%M:%S"))
        metrics.callback_attempted(state, attempt.duration_ms, event.created_at, now)
        return AttemptRecord(event.id, now, attempt.status, attempt.error,
                             int(attempt.duration_ms), made, state, due)

    async def _send(self, event: ClaimedEvent) -> tuple[DeliveryAttempt, bool]:
        """Returns the attempt and whether to give up at once (a refused URL)."""
        url = event.url
        try:
            await self._check_host(url)
        except CallbackHostUnresolved as exc:
            return DeliveryAttempt(False, None, f"cannot resolve host: {exc.reason}", 0.0), False
        except CallbackUrlError as exc:
            return DeliveryAttempt(False, None, f"callback refused: {exc.reason}", 0.0), True
        body = event.payload.encode()
        headers = signing.headers(self._secrets[event.account_id], event.event_id,
                                  int(time.time()), body)
        return await self._sender.post(url, body, headers), False

    async def _check_host(self, url: str) -> None:
        """`check_callback_host`, its answer kept for HOST_CHECK_TTL seconds (an unresolved
        name is asked again each time)."""
        now = time.monotonic()
        checked = self._host_checks.get(url)
        if checked is None or now - checked[0] > HOST_CHECK_TTL:
            refusal = None
            try:
                await check_callback_host(url, self.settings.callback_allow_private)
            except CallbackHostUnresolved:
                raise
            except CallbackUrlError as exc:
                refusal = exc
            if len(self._host_checks) >= HOST_CHECKS_KEPT:
                self._host_checks.clear()
            checked = self._host_checks[url] = (now, refusal)
        if checked[1] is not None:
            raise checked[1]

    async def _turn(self, finished: Sequence[Finished], want: int
                    ) -> tuple[list[list[ClaimedEvent]], int]:
        """Record `finished`, then claim up to `want` events, in one transaction; returns the
        claimed chains and how many due events were held back. Recording first lets the claim
        see the events that finished posts have just released."""
        chains: list[list[ClaimedEvent]] = []
        held_back = 0
        async with self.db.begin() as conn:
            if finished:
                await _record(conn, finished)
            if want:
                chains, held_back = await self._claim(conn, want)
        self.delivered += sum(
            1 for f in finished if f.record is not None and f.record.state == "delivered")
        return chains, held_back

    async def _claim(self, conn: AsyncConnection, limit: int
                     ) -> tuple[list[list[ClaimedEvent]], int]:
        """Lease the chains of up to `limit` due events; returns them and how many due events
        were held back behind an earlier one."""
        now = utcnow()
        candidates = await repository.due_events(conn, now, limit)
        if not candidates:
            return [], 0
        pending = await repository.pending_of_parts(conn, list({p for _, p in candidates}))
        chain_ids, held_back = plan_claim({i for i, _ in candidates}, pending, now)
        await repository.set_due(conn, held_back)
        if not chain_ids:
            return [], len(held_back)
        claimed = await repository.lease(conn, [i for c in chain_ids for i in c],
                                         now + self._lease)
        missing = {e.account_id for e in claimed} - self._secrets.keys()
        if missing:
            self._secrets.update(await repository.signing_secrets(conn, list(missing)))
        by_part: dict[int, list[ClaimedEvent]] = {}
        for event in sorted(claimed, key=lambda e: e.id):
            by_part.setdefault(event.part_id, []).append(event)
        return list(by_part.values()), len(held_back)


def plan_claim(candidates: Collection[int], pending: Sequence[PendingEvent], now: datetime
               ) -> tuple[list[list[int]], list[tuple[int, datetime]]]:
    """Which events to lease, and which due ones to hold back until when.

    `candidates` are the due events this claim has locked; `pending`, every pending event of
    their parts by part and id. A part whose first pending event is a candidate is leased as a
    chain: that event and the pending ones after it, posted in order by one task (they wait
    only for it, so an ENROUTE and its DELIVRD need one claim, not a hold-back and a release).
    Any other candidate is held back, due just after the event before it: when that one is
    due for a retry, or in a few seconds if it is leased (`_record` makes it due at once when
    that one finishes), or right after now if it is due already (another dispatcher is
    claiming it).
    """
    recheck = now + HELD_BACK_RECHECK
    chains: list[list[int]] = []
    held_back: list[tuple[int, datetime]] = []
    for _, of_part in groupby(pending, key=lambda e: e.part_id):
        events = list(of_part)
        first = events[0]
        chain: list[int] = []
        if first.id in candidates:
            for event in events:
                if event.id != first.id and _leased(event, now):
                    break  # another dispatcher's (never expected: it would hold the first)
                chain.append(event.id)
            chains.append(chain)
            wait = recheck
        elif _leased(first, now):
            wait = min(first.next_attempt_at, recheck)
        else:
            wait = first.next_attempt_at
        due = max(wait, now) + HELD_BACK_GAP
        held_back += [(e.id, due) for e in events[len(chain):] if e.id in candidates]
    return chains, held_back


def _leased(event: PendingEvent, now: datetime) -> bool:
    return event.lease_until is not None and event.lease_until > now


async def _record(conn: AsyncConnection, finished: Sequence[Finished]) -> None:
    """Attempts recorded, events finished, rescheduled or given back, and the next pending
    event of each part whose event has ended made due."""
    await repository.record_attempts(
        conn, [f.record for f in finished if f.record is not None])
    await repository.set_due(
        conn, [(f.event.id, f.due) for f in finished if f.record is None], give_back=True)
    ended = {f.event.part_id for f in finished
             if f.record is not None and f.record.state != "pending"}
    if ended:
        await repository.release_parts(conn, list(ended), utcnow())
