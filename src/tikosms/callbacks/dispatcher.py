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

Posts stream: up to `callback_concurrency` claimed chains (a part's pending events, in order)
are posted at once, while one loop takes turns with the database: each turn records the posts
finished since the last one and claims what the window of events in flight has room for, in one
transaction. The receiver does not wait while we talk to the database, nor a round for its
slowest post. The turn's SQL runs on the driver (`tikosms.callbacks.repository`).

Fairness (issue 9): one slow endpoint must not take every poster. Claimed chains wait by account
and destination host; a chain starts only while its host has fewer than
`callback_concurrency_per_host` posts in flight and its account fewer than
`callback_concurrency_per_account`, and the accounts take turns (round robin). A slow host (its
posts take over SLOW_POST, or none of its posts has finished for that long) keeps only as many
chains waiting as it may post at once; the rest are given back to the queue unposted (no attempt
counted, order kept) and due again after about one of its posts' duration, so they neither fill
the window of claimed events nor come back every turn.

Delivery first (issue 11): in a process that delivers too (`tikosms worker`, serve's delivery
process), the posts and the carriers' traffic share one event loop, and with callbacks on at
2,000 sends/s the posts took the loop from delivery (827 parts/s handed to the SMSC against
1,930 without callbacks, on 2 cores). When the delivery worker has a backlog (`yield_to`: its
last claim came back full) while the loop runs late (PACE_TICK's timer fires LOOP_BUSY late or
more, on a moving average), the posts start at a limited rate: half the rate of the last tick,
halved again every tick that the pressure lasts, down to MIN_RATE chains a second; it grows by
a fifth a tick once the pressure is gone, and the limit ends after a second without it. A cap
on the posts in flight would not do: a fast endpoint answers 4 posts in flight 1,000 times a
second. Callbacks then fall behind, not the SMS, and catch up when the backlog is gone; a slow
endpoint (a loop on time) or a carrier's own throttling (no backlog of claims) never limits
them.

Logs name an event by id and its URL by scheme, host and path only: a query string may carry a
customer's token, and payloads (numbers, text) and signing secrets are never logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from urllib.parse import urlsplit

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
# A host whose posts take longer than this (on average, or its oldest in flight) is slow: it
# keeps only as many claimed chains waiting as it may post at once.
SLOW_POST = 1.0  # seconds
SLOW_HOST_MIN_DELAY = 1.0  # seconds: a chain given back by a slow host is due again at least...
DURATION_WEIGHT = 0.2  # weight of the newest post in a host's moving average of post durations
HOST_STATS_KEPT = 10_000  # hosts; past this many the averages start again
PACE_TICK = 0.05  # seconds between looks at the loop's lateness and delivery's backlog
LOOP_BUSY = 0.01  # seconds late (moving average): the event loop has no time to spare
MIN_RATE = 20.0  # chains a second at least while yielding to delivery
YIELD_END = 1.0  # seconds without the pressure before the limit ends
YIELD_WINDOW = 5.0  # seconds of the limited rate: the claimed events waiting, at most
YIELD_LOG_EVERY = 60.0  # seconds: the "callbacks yield" line at most this often
# On PostgreSQL a turn starts at least this long after the one before (not after an idle
# spell: a trickle's events go at once). Without it a fast receiver had a turn start as soon as
# the last one ended, a few events each: its statements (9 round trips) cost more than its rows.
# Not on SQLite: there a bigger turn holds the one write lock longer, and the sends waiting for
# it showed it (quick runs at 1,500/s with callbacks: p99 accept 62-67 ms against 30-32).
TURN_GAP = 0.02  # seconds



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
                 batch: int = 2000, idle_poll: float = IDLE_POLL,
                 yield_to: Callable[[], bool] | None = None) -> None:
        self.db = db
        self.idle_poll = idle_poll  # seconds between claims when nothing is due
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.batch = batch  # events claimed, and posts recorded, per transaction, at most
        self.delivered = 0
        # A lease outlasts a few timeouts, so an event waiting for a free post slot keeps it.
        self._lease = max(LEASE, timedelta(seconds=3 * settings.callback_timeout_seconds))
        self._window = WINDOW_PER_POST * settings.callback_concurrency
        concurrency = settings.callback_concurrency
        self.yield_to = yield_to  # the delivery worker has a backlog (see the module's doc)
        # chains started per second at most while yielding to delivery; None: no limit
        self.rate_limit: float | None = None
        self._tokens = 0.0  # chains that may start now under the limit
        self._started = 0  # chains started since the last tick
        self._loop_late = 0.0  # moving average of PACE_TICK's lateness, seconds
        self._host_cap = settings.callback_concurrency_per_host or max(1, concurrency // 4)
        self._account_cap = (settings.callback_concurrency_per_account
                             or max(1, concurrency // 2))
        # claimed chains waiting for a post slot, by account (in turn order) and host
        self._waiting: dict[int, dict[str, deque[tuple[Sequence[ClaimedEvent], float]]]] = {}
        self._host_waiting: Counter[str] = Counter()  # chains waiting, by host
        self._host_busy: Counter[str] = Counter()  # chains being posted, by host
        self._account_busy: Counter[int] = Counter()
        self._posting = 0  # chains being posted
        # host -> monotonic time its last post ended (or its first of a busy spell started)
        self._host_last_end: dict[str, float] = {}
        self._host_duration: dict[str, float] = {}  # moving average of post seconds, by host
        self._shed = 0  # chains given back because their host was slow (for tests and figures)
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
        self._posters: set[asyncio.Task[None]] = set()
        self._closed = False  # no post starts any more (the loop has ended)
        self._task: asyncio.Task[None] | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callbacks")
        if self.yield_to is not None:
            self._pacer = asyncio.create_task(self._pace(), name="callbacks-pace")

    def wake(self) -> None:
        self._progress.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Claim nothing more; finish the posts in flight and record them, then stop.

        Claimed events not yet posted go back to the queue at once. After `grace` seconds the
        rest is cancelled: those events come back when their lease runs out.
        """
        self._stopping = True
        self._progress.set()
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
        self._start_posts()  # gives back every chain still waiting
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
            self._closed = True
            for task in list(self._posters):
                task.cancel()
            await asyncio.gather(*self._posters, return_exceptions=True)

    async def _keep_books(self) -> None:
        """The one loop that talks to the database: each turn records the posts finished since
        the last one and claims as many events as the window has room for, in one transaction
        (on SQLite, one wait for the write lock instead of two). Posts run meanwhile, so the
        turns batch themselves: the slower a turn, the more it records next time; and on
        PostgreSQL a turn starts TURN_GAP after the one before at the soonest."""
        min_claim = min(self.batch, self.settings.callback_concurrency)
        idle = False  # the last claim found nothing due
        turn_gap = TURN_GAP if self.db.is_postgres else 0.0
        last_turn = -turn_gap
        while not (self._stopping and self._in_window == 0):
            gap = last_turn + turn_gap - time.monotonic()
            if gap > 0 and not self._stopping:
                await asyncio.sleep(gap)  # the posts that end meanwhile go in this turn
            finished = self._finished[:self.batch]
            window = self._window
            if self.rate_limit is not None:  # no more waiting in memory than a few seconds' worth
                window = min(window, max(min_claim, int(YIELD_WINDOW * self.rate_limit)))
            room = window - self._in_window + len(finished)
            want = 0 if self._stopping or room < min_claim else min(self.batch, room)
            if not finished and (want == 0 or idle):
                self._progress.clear()
                try:
                    # a bounded wait even with the window full: a host may turn slow meanwhile
                    await asyncio.wait_for(self._progress.wait(), self.idle_poll)
                except TimeoutError:
                    pass
                self._shed_slow_hosts()
                idle = False
                continue
            self._progress.clear()
            last_turn = time.monotonic()
            try:
                chains, held_back = await self._turn(finished, want)
            except Exception as exc:
                # Not the exception's text: a database error repeats its SQL parameters
                # (payloads: numbers, text). Its traceback is there at debug level.
                log.error("callback bookkeeping failed (%s); retrying in 1 s",
                          _error_name(exc))
                log.debug("callback bookkeeping failure", exc_info=True)
                await asyncio.sleep(1)
                continue
            del self._finished[:len(finished)]
            self._in_window += sum(len(chain) for chain in chains) - len(finished)
            idle = want > 0 and not chains and not held_back
            start_by = self._start_by()
            for chain in chains:
                self._wait_for_slot(chain, start_by)
            self._shed_slow_hosts()
            self._start_posts()

    def _start_by(self) -> float:
        """The monotonic time after which an event claimed now must not be posted: its post
        could then outlast its lease (another dispatcher could claim and post it too)."""
        return time.monotonic() + self._lease.total_seconds() - (
            self.settings.callback_timeout_seconds + START_MARGIN)

    def _wait_for_slot(self, chain: Sequence[ClaimedEvent], start_by: float) -> None:
        account, host = chain[0].account_id, host_of(chain[0].url)
        hosts = self._waiting.setdefault(account, {})
        hosts.setdefault(host, deque()).append((chain, start_by))
        self._host_waiting[host] += 1

    def _start_posts(self) -> None:
        """Start waiting chains while posts are free: a task per chain that can start now (none
        waits on a semaphore, which would cost more CPU than the post's own Python). Stopping,
        every waiting chain goes back to the queue instead."""
        if self._closed:
            return
        if self._stopping:
            now = utcnow()
            for hosts in self._waiting.values():
                for queue in hosts.values():
                    for chain, _ in queue:
                        for event in chain:
                            self._finish(Finished(event, None, now))
            self._waiting.clear()
            self._host_waiting.clear()
            return
        while self._posting < self.settings.callback_concurrency:
            if self.rate_limit is not None and self._tokens < 1:
                return  # yielding to delivery: the next tick lets more start
            picked = self._pick()
            if picked is None:
                return
            if self.rate_limit is not None:
                self._tokens -= 1
            self._started += 1
            account, host, chain, start_by = picked
            self._posting += 1
            if not self._host_busy[host]:
                self._host_last_end[host] = time.monotonic()  # a busy spell starts
            self._host_busy[host] += 1
            self._account_busy[account] += 1
            task = asyncio.create_task(self._post_in_slot(account, host, chain, start_by))
            self._posters.add(task)
            task.add_done_callback(self._posters.discard)

    def _pick(self) -> tuple[int, str, Sequence[ClaimedEvent], float] | None:
        """The next chain to post: the first account in turn order below its cap with a chain
        for a host below its cap; that account then goes to the end of the turn order."""
        for account, hosts in self._waiting.items():
            if self._account_busy[account] >= self._account_cap:
                continue
            for host, queue in hosts.items():
                if self._host_busy[host] >= self._host_cap:
                    continue
                chain, start_by = queue.popleft()
                self._host_waiting[host] -= 1
                if not queue:
                    del hosts[host]
                    del self._host_waiting[host]
                del self._waiting[account]
                if hosts:
                    self._waiting[account] = hosts  # its next turn after the others'
                return account, host, chain, start_by
        return None

    async def _post_in_slot(self, account: int, host: str, chain: Sequence[ClaimedEvent],
                            start_by: float) -> None:
        try:
            await self._post_chain(chain, start_by)
        finally:
            self._posting -= 1
            self._host_busy[host] -= 1
            if not self._host_busy[host]:
                del self._host_busy[host]
            self._account_busy[account] -= 1
            if not self._account_busy[account]:
                del self._account_busy[account]
            self._start_posts()

    async def _pace(self) -> None:
        """Limit the rate posts start at while delivery is behind and the loop is late; lift
        the limit once they are not (see the module's docstring)."""
        assert self.yield_to is not None
        calm = 0  # ticks in a row without the pressure
        shown: float | None = -1.0
        episodes = 0  # times the limit began since the last log line about it
        logged_at = -YIELD_LOG_EVERY
        while True:
            started = time.monotonic()
            await asyncio.sleep(PACE_TICK)
            elapsed = time.monotonic() - started
            self._loop_late += 0.3 * (elapsed - PACE_TICK - self._loop_late)
            rate, self._started = self._started / elapsed, 0
            if self._loop_late > LOOP_BUSY and self.yield_to():
                calm = 0
                if self.rate_limit is None:
                    episodes += 1
                    if started - logged_at >= YIELD_LOG_EVERY:  # a line a minute at most
                        log.info("callbacks yield to delivery: parts are waiting and the "
                                 "process has no time to spare (posts were starting at %.0f/s; "
                                 "%d time(s) since the last such line)", rate, episodes)
                        logged_at, episodes = started, 0
                    self.rate_limit, self._tokens = rate, 0.0
                self.rate_limit = max(MIN_RATE, min(self.rate_limit, rate) / 2)
            elif self.rate_limit is not None:
                calm += 1
                if calm * PACE_TICK >= YIELD_END:
                    self.rate_limit = None
                    log.debug("callbacks no longer yield to delivery")
                    self._start_posts()
                else:
                    self.rate_limit *= 1.2
            if self.rate_limit is not None:
                self._tokens = min(self._tokens + self.rate_limit * elapsed,
                                   max(1.0, 2 * self.rate_limit * PACE_TICK))
                self._start_posts()
            if self.rate_limit != shown:
                shown = self.rate_limit
                metrics.callback_yield_rate(shown or 0.0)

    def _host_is_slow(self, host: str, now: float) -> bool:
        if self._host_duration.get(host, 0.0) > SLOW_POST:
            return True
        return bool(self._host_busy[host]) and now - self._host_last_end.get(host, now) > SLOW_POST

    def _shed_slow_hosts(self) -> None:
        """Give back the chains a slow host cannot start soon: it keeps as many waiting as it
        may post at once, so that its backlog neither fills the window of claimed events nor
        waits in memory for minutes. They are due again after about one of its posts."""
        now = time.monotonic()
        shed_at = None
        for hosts in self._waiting.values():
            for host, queue in list(hosts.items()):
                if len(queue) <= self._host_cap or not self._host_is_slow(host, now):
                    continue
                if shed_at is None:
                    shed_at = utcnow()
                delay = max(SLOW_HOST_MIN_DELAY, min(
                    self.settings.callback_timeout_seconds,
                    max(self._host_duration.get(host, 0.0),
                        now - self._host_last_end.get(host, now))))
                due = shed_at + timedelta(seconds=delay)
                while len(queue) > self._host_cap:
                    chain, _ = queue.pop()
                    self._host_waiting[host] -= 1
                    self._shed += 1
                    for event in chain:
                        self._finish(Finished(event, None, due))
                log.info("callbacks to %s are slow (posts take %.1f s): their chains beyond "
                         "%d wait %.1f s in the queue", host, self._host_duration.get(host, 0.0),
                         self._host_cap, delay)

    def _note_post(self, host: str, seconds: float) -> None:
        self._host_last_end[host] = time.monotonic()
        average = self._host_duration.get(host)
        if average is None and len(self._host_duration) >= HOST_STATS_KEPT:
            self._host_duration.clear()
            self._host_last_end = {h: t for h, t in self._host_last_end.items()
                                   if h in self._host_busy}
        self._host_duration[host] = seconds if average is None else (
            average + DURATION_WEIGHT * (seconds - average))

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
        self._note_post(host_of(event.url), attempt.duration_ms / 1000)
        now = utcnow()
        made = event.attempts + 1
        state, due = "delivered", now
        if not attempt.ok:
            retry = None if refused else self.policy.next_attempt_at(event.created_at, made, now)
            if retry is None:
                state = "failed"
                log.warning("callback %s to %s given up after %d attempts: %s",
                            event.event_id, describe_url(event.url), made, attempt.error)
            else:
                state, due = "pending", retry
                log.info("callback %s to %s failed (%s); attempt %d at %s", event.event_id,
                         describe_url(event.url), attempt.error, made + 1,
                         retry.strftime("%H:%M:%S"))
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


def _error_name(exc: BaseException) -> str:
    """The kind of an error, with its driver's kind for a database error (for example
    `DBAPIError from ConnectionDoesNotExistError`), and nothing of its text."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return f"{type(exc).__name__} from {type(orig).__name__}"
    return type(exc).__name__


@functools.lru_cache(maxsize=4096)  # a customer's URL is posted to again and again
def host_of(url: str) -> str:
    """The destination a cap applies to: scheme, host and port (as aiohttp pools connections)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.split("?", 1)[0][:200]  # posting it fails anyway; one bucket per URL
    return f"{parts.scheme}://{parts.hostname}:{port or ''}"


@functools.lru_cache(maxsize=4096)
def describe_url(url: str) -> str:
    """A callback URL as logs show it: scheme, host, port and path, never the query string
    (it may carry the customer's own token) nor user info."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    netloc = parts.hostname or ""
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


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
