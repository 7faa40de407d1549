"""The delivery worker: claim due parts, submit them to carriers, record what happened.

One worker per process. Its tasks:
- the claimer takes due parts from the queue (`queue.claim_due_parts`) while fewer than
  `max_inflight` are out, and starts one submission per part (carriers bound their own windows);
- the recorder writes submit outcomes and receipts in batches, one transaction per batch; a
  receipt's handler returns (and the carrier acknowledges it) only after its batch committed;
- the lease keeper renews the leases of parts still in flight, so slow carriers keep their claims;
- housekeeping expires parts that waited too long, applies receipts that came early, and
  deletes unmatched receipts and idempotency keys past their expiry.

Crash exposure: a part passes a gate (`_gate`) before it goes to a carrier and gives its slot
back only once its outcome is committed. So at any moment at most the gate's size in parts may
be with a carrier without being on record: a SIGKILL can make another worker send those again
after the lease, never more. By default the gate holds two windows of every bind (at least
MIN_UNRECORDED), or UNRECORDED_SECONDS of the worker's measured throughput when that is more:
a fixed count would cap the throughput at the count over the time a result takes to be
recorded, which grows with what the process does beside delivery (callbacks).

One bad item fails alone: the recorder tells a value the database refuses (`poison`) from an
outage; on a data error it splits the batch until the bad item is alone and gives it a defined
outcome. Outages are retried with backoff, and the gate pauses submitting meanwhile.

Stopping (SIGTERM): no new claims; submissions in flight get a few seconds to finish; what is still
claimed then is released to the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from tikosms.config import Settings
from tikosms.db import statistics
from tikosms.db.engine import Database, is_database_down
from tikosms.db.models import ENROUTE, Campaign, Part, PendingReceipt
from tikosms.db.types import utcnow
from tikosms.delivery import expiry, poison, queue, rate_store, receipt_timeout, transitions
from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitResult
from tikosms.delivery.notify import (
    CAMPAIGN,
    SINGLE,
    DueAccounts,
    PartsListener,
    WakeListener,
    wake_address,
)
from tikosms.delivery.routing import Router
from tikosms.delivery.slots import SlotKeeper
from tikosms.delivery.transitions import Accepted, Rejected, Retry, Untrackable
from tikosms.messaging import lifecycle
from tikosms.observability import metrics
from tikosms.smpp import shared_rate

log = logging.getLogger("tikosms.delivery")


class DatabaseTrouble:
    """The log of one of the worker's loops while the database is away: one line when it
    starts failing, one when it works again (with how long and how many attempts), instead of a
    traceback every second of an outage. Errors that are not the database being away are
    logged with their traceback every time."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException, retry: str) -> None:
        if not is_database_down(exc):
            log.error("%s failed; %s", self.what, retry, exc_info=exc)
            return
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.error("%s failed: the database is unreachable (%s); %s until it is back",
                      self.what, _brief(exc), retry)

    def ok(self) -> None:
        if self.since is not None:
            log.warning("%s works again: the database was unreachable for %.0f s (%d failed "
                        "attempts)", self.what, time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:160]}"

PENDING_BATCH = 1000  # kept receipts applied per transaction by the housekeeping
# seconds after receipts were kept before a second look for their parts (see _second_look),
# and looks at most (then the housekeeping turn's, every 5 s)
SECOND_LOOK = 0.5
LOOKS = 4
NO_CARRIER_RETRY = 5.0  # seconds before a part with no available carrier is tried again
# Parts handed to carriers ahead of time are at most this many seconds of their measured
# throughput: a single message claimed now waits behind no more than that in a carrier's queue
# (the fairness promise: one account's campaign never holds another's message back ~1 s).
AHEAD_SECONDS = 0.4
MIN_INFLIGHT = 64
ACCOUNTS_REFRESH = 0.5  # seconds: a new account's campaign joins the rotation within this
BEHIND_FOR = 1.0  # seconds after a full claim that the worker counts as behind (`behind`)
RECORD_LINGER_BELOW = 64  # results waiting: fewer, and the recorder lingers before writing
MIN_UNRECORDED = 100  # parts: the gate's floor when the carriers' windows are small or unknown
# seconds of measured throughput the gate holds by default, when that is more than its floor:
# the AHEAD_SECONDS handed out, and the results waiting for (and in) the recorder's transaction
UNRECORDED_SECONDS = 0.75


class _Gate:
    """A semaphore whose size can change: larger at once, smaller as slots come back; waiters
    are served first come, first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot came as we were cancelled: give it on
            else:  # still queued, unless a release has dropped it as cancelled meanwhile
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.used -= 1
        self._serve()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._serve()

    def _serve(self) -> None:
        while self._waiters and self.used < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)


class _DataRefused(Exception):
    """The database refused a value of the batch (see poison.is_data_error)."""


@dataclass(slots=True)
class _Item:
    kind: str  # accepted | rejected | retry | untrackable | receipt
    value: Any
    done: asyncio.Future[None] | None = None


class DeliveryWorker:
    def __init__(self, db: Database, settings: Settings, router: Router,
                 max_inflight: int = 2000, on_recorded: Callable[[], None] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.router = router
        self.max_inflight = max_inflight
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.on_recorded = on_recorded or (lambda: None)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._unrecorded: set[int] = set()  # parts answered by a carrier, not yet recorded
        self._claim_trouble = DatabaseTrouble("claiming parts")
        self._records: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._kept: dict[str, int] = {}  # ids of receipts kept -> looks they had since
        self._kept_now = asyncio.Event()
        self.submitted = 0
        self._finished = 0  # submissions answered, for the throughput estimate
        self.target_inflight = min(max_inflight, 256)
        # the accounts with due parts: single sends, campaign parts (looked up every
        # ACCOUNTS_REFRESH s and after an idle poll; told by the wake-up signals in between)
        self._singles: set[int] = set()
        self._campaigns: set[int] = set()
        self._accounts_at = 0.0
        self._signalled: DueAccounts = {}  # told since the last claim began
        self._turn = 0  # rotates the accounts' order from claim to claim
        self._full_claim_at = -BEHIND_FOR  # monotonic time of the last claim that came back full
        self.listener: PartsListener | WakeListener | None = None
        # the gate's floor; with max_unrecorded set, its fixed size
        self.max_unrecorded = settings.max_unrecorded or max(
            MIN_UNRECORDED, 2 * _window_capacity(router))
        # slots of parts with a carrier or answered, not yet on record (see the module doc)
        self._gate = _Gate(self.max_unrecorded)
        self._held: set[int] = set()
        self.rates: shared_rate.SharedRates | None = None
        # bind slots: a router from the database binds only the slots this process leases,
        # and the claims take only the parts of the carriers held (delivery.slots)
        self.slots: SlotKeeper | None = None
        if router.managed:
            self.slots = router.slots = SlotKeeper(db, settings, router, self.owner)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        # the carriers' rates are the fleet's (PostgreSQL or Redis), for the carriers started
        # from now on, hot reloads included
        self.rates = rate_store.open_shared_rates(self.db, self.settings)
        shared_rate.install(self.rates)
        await self.router.start(self.on_receipt)
        self._tasks = [
            asyncio.create_task(self._recorder(), name="recorder"),
            asyncio.create_task(self._claimer(), name="claimer"),
            asyncio.create_task(self._lease_keeper(), name="lease-keeper"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self._pace(), name="pace"),
            asyncio.create_task(self._second_look(), name="second-look"),
        ]
        if self.db.is_postgres:
            self._tasks.append(asyncio.create_task(self._statistics(), name="statistics"))
        for task in self._tasks:
            task.add_done_callback(_report_death)
        if self.db.is_postgres:  # sends accepted by other processes wake this one at once
            self.listener = PartsListener(self.db.url, self.wake)
            self.listener.start()
        elif (address := wake_address(self.db.url)) is not None:  # SQLite: another process's
            self.listener = WakeListener(address, self.wake)
            self.listener.start()
        log.info("delivery worker %s started: carriers=%s", self.owner, self.router.describe())

    def wake(self, accounts: DueAccounts | None = None) -> None:
        """New parts are due (a send was accepted): claim now. `accounts`: whose, and whether
        campaign parts are among them (delivery/notify.py); None: unknown, look them up."""
        if accounts is None:
            self._accounts_at = 0.0
        else:
            for account, kinds in accounts.items():
                self._signalled[account] = self._signalled.get(account, 0) | kinds
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let submissions in flight finish (up to `grace` s) and be recorded;
        release what is still claimed. The recorder is never cancelled in the middle of a
        batch: a part the carrier accepted is always recorded ENROUTE."""
        self._stopping.set()
        self._wake.set()
        self._room.set()
        if self.listener is not None:
            await self.listener.stop()
        claimer = self._tasks[1] if len(self._tasks) > 1 else None
        if claimer:
            await asyncio.wait([claimer], timeout=grace)
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=grace)
        left = list(self._inflight)
        for task in self._inflight.values():
            task.cancel()
        await self._flush(grace)
        if self.slots is not None:
            await self.slots.halt()  # no slot taken or renewed while the binds close
        await self.router.stop()
        if self.slots is not None:
            await self.slots.release_all()  # unbound: the next holder may bind at once
        if self.rates is not None:
            if shared_rate.installed() is self.rates:
                shared_rate.install(None)
            await self.rates.close()
        await self._flush(grace)  # receipts recorded while the carriers stopped
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if left:
            async with self.db.begin() as conn:
                n = await queue.release_leases(conn, self.owner, left)
            log.info("released %d claimed parts back to the queue", n)
        log.info("delivery worker %s stopped (%d parts submitted)", self.owner, self.submitted)

    async def _flush(self, within: float) -> None:
        """Wait until the recorder has written everything queued so far."""
        try:
            await asyncio.wait_for(self._records.join(), within)
        except TimeoutError:
            log.error("%d delivery results not yet recorded after %.0f s (database slow?); "
                      "their parts keep their lease and are retried after it",
                      self._records.qsize(), within)

    # --- claiming and submitting ---------------------------------------------------------
    async def _claimer(self) -> None:
        while not self._stopping.is_set():
            room = self.target_inflight - len(self._inflight)
            if room < max(1, self.target_inflight // 4):
                self._room.clear()
                await self._room.wait()
                continue
            limit = min(room, self.settings.claim_batch)
            self._wake.clear()  # a wake from now on means parts newer than this claim
            try:
                parts = await self._claim(limit)
            except Exception as exc:
                self._claim_trouble.failed(exc, "retrying every 1 s")
                await asyncio.sleep(1)
                continue
            self._claim_trouble.ok()
            again = 0
            for part, announced in parts:
                if part.part_id in self._inflight or part.part_id in self._unrecorded:
                    # ours already: its lease ran out while the database was away and the
                    # claim took it back; it is being submitted, or its carrier's answer waits
                    # for the recorder. Sending it again would be a duplicate SMS.
                    again += 1
                    continue
                self._inflight[part.part_id] = asyncio.create_task(self._submit(part, announced))
            if again:
                log.warning("%d parts claimed again while this worker still held them (their "
                            "lease ran out while the database was away): not sent again", again)
            if len(parts) >= limit:
                self._full_claim_at = time.monotonic()
                continue  # a backlog: claim again at once
            # everything due is claimed: wait for news (a send accepted) or the next poll, then
            # let a few more sends arrive, so that a trickle of single sends is claimed in
            # batches rather than one claim per send
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.idle_poll_seconds)
                except TimeoutError:
                    self._accounts_at = 0.0  # the poll: look up what is due (retries too)
                    continue
            if self.settings.claim_linger_seconds and not self._stopping.is_set():
                await asyncio.sleep(self.settings.claim_linger_seconds)

    def behind(self) -> bool:
        """Parts are due that this worker has not claimed yet: a claim came back full within
        the last BEHIND_FOR seconds (the callbacks of its process yield to it meanwhile)."""
        return time.monotonic() - self._full_claim_at < BEHIND_FOR

    async def _claim(self, limit: int) -> list[tuple[OutboundPart, bool]]:
        """Claimed parts, each with whether its status changes are announced (a callback URL
        of its own or its campaign's): recording skips the callback work for the others."""
        now = utcnow()
        # bind slots: only the parts of the carriers this process holds a slot of
        routes = queue.EVERYTHING if self.slots is None else self.slots.route_filter()
        if routes.nothing:
            return []
        # what the signals told since the last claim; what they tell from now on waits for the
        # next one (an account drained by this claim may have a send committed meanwhile)
        signalled, self._signalled = self._signalled, {}
        told_singles = {a for a, kinds in signalled.items() if kinds & SINGLE}
        told_campaigns = {a for a, kinds in signalled.items() if kinds & CAMPAIGN}
        self._singles |= told_singles
        self._campaigns |= told_campaigns
        refresh = time.monotonic() - self._accounts_at >= ACCOUNTS_REFRESH
        # PostgreSQL: each claim is one statement, atomic on its own; autocommit spares the
        # BEGIN and COMMIT round trips. SQLite: one writer, BEGIN IMMEDIATE.
        async with self.db.connect() if self.db.is_postgres else self.db.begin() as conn:
            if refresh:
                singles, campaigns = await queue.accounts_with_due_parts(conn, now)
                self._singles = {*singles, *told_singles}
                self._campaigns = {*campaigns, *told_campaigns}
                self._accounts_at = time.monotonic()
            if not self._singles and not self._campaigns:
                return []
            # each claim starts at another account: none is always served first
            self._turn += 1
            result = await queue.claim(conn, self.owner, limit, now, self.settings.lease_seconds,
                                       _rotated(self._singles, self._turn),
                                       _rotated(self._campaigns, self._turn), routes)
        self._singles -= result.drained_singles
        self._campaigns -= result.drained_campaigns
        claimed = result.parts
        return [(OutboundPart(
            part_id=p.id, to=p.to, sender=p.sender, sender_type=p.sender_type,
            text=p.text, data_coding=p.data_coding, part_no=p.part_no,
            total_parts=p.total_parts, concat_ref=p.concat_ref, mccmnc=p.mccmnc,
        ), p.campaign_callback or bool(p.callback_url)) for p in claimed]

    async def _submit(self, part: OutboundPart, announced: bool = True) -> None:
        try:
            await self._gate.acquire()  # until its outcome is committed (_release)
            self._held.add(part.part_id)
            carrier_name, outcome = await metrics.timed_submit(self.router, part)
            if outcome.result is SubmitResult.ACCEPTED:
                assert carrier_name is not None
                self.submitted += 1
                why = poison.check_carrier_id(outcome.carrier_message_id)
                if why is not None:
                    log.error("part %d accepted by %s under a message id that cannot be "
                              "stored (%s): UNKNOWN %s, charged", part.part_id, carrier_name,
                              why, transitions.CARRIER_ID_INVALID)
                    await self._record("untrackable", Untrackable(
                        part.part_id, carrier_name, callback=announced))
                    return
                assert outcome.carrier_message_id is not None
                await self._record("accepted", Accepted(part.part_id, carrier_name,
                                                        outcome.carrier_message_id, announced))
                log.debug("part %d accepted by %s as %s", part.part_id, carrier_name,
                          outcome.carrier_message_id)
            elif outcome.result is SubmitResult.REJECTED:
                log.warning("part %d rejected by %s: %s %s", part.part_id, carrier_name,
                            outcome.error_code, outcome.detail)
                await self._record("rejected", Rejected(
                    part.part_id, carrier_name, poison.clean_error_code(outcome.error_code),
                    outcome.detail))
            else:
                delay = outcome.retry_after or NO_CARRIER_RETRY
                log.info("part %d will be retried in %.1f s: %s", part.part_id, delay,
                         outcome.detail or outcome.result)
                await self._record("retry", Retry(part.part_id, delay, outcome.detail,
                                                  maybe_sent=outcome.maybe_sent))
        except asyncio.CancelledError:
            self._release(part.part_id)
            raise
        except Exception:
            log.exception("submitting part %d failed unexpectedly; retried in %.0f s",
                          part.part_id, NO_CARRIER_RETRY)
            await self._record("retry", Retry(part.part_id, NO_CARRIER_RETRY, "internal error"))
        finally:
            self._inflight.pop(part.part_id, None)
            self._finished += 1
            self._room.set()

    async def _record(self, kind: str, value: Any) -> None:
        # the part keeps its lease (renewed by the lease keeper) until its outcome is committed
        self._unrecorded.add(value.part_id)
        await self._records.put(_Item(kind, value))

    def _release(self, part_id: int) -> None:
        """The part's outcome is on record (or it never reached a carrier): its gate slot is
        free."""
        if part_id in self._held:
            self._held.discard(part_id)
            self._gate.release()

    # --- receipts ------------------------------------------------------------------------
    async def on_receipt(self, receipt: Receipt) -> None:
        """Returns once the receipt is durably recorded (the carrier then acknowledges it).

        A receipt whose id cannot be stored can match no part (such ids are never stored): it
        is logged once and acknowledged, never retried."""
        metrics.receipt_received(receipt)
        why = poison.check_carrier_id(receipt.carrier_message_id)
        if why is not None:
            log.error("receipt from %s with an unusable message id (%s) acknowledged and "
                      "dropped: no part can match it status=%s", receipt.carrier, why,
                      receipt.status)
            return
        receipt = dataclasses.replace(
            receipt, error_code=poison.clean_error_code(receipt.error_code),
            alt_ids=tuple(a for a in receipt.alt_ids if poison.check_carrier_id(a) is None))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._records.put(_Item("receipt", receipt, done))
        await done

    # --- the recorder ----------------------------------------------------------------------
    async def _recorder(self) -> None:
        while True:
            first = await self._records.get()
            linger = self.settings.record_linger_seconds
            if linger and self._records.qsize() < RECORD_LINGER_BELOW:
                # a few results: let more come, one transaction records them all (a receipt's
                # acknowledgement and a gate slot wait this long more, no longer)
                await asyncio.sleep(linger)
            batch = [first]
            while len(batch) < 2000 and not self._records.empty():
                batch.append(self._records.get_nowait())
            try:
                await asyncio.shield(self._write(batch))  # a batch is never cut in half
            finally:
                for _ in batch:
                    self._records.task_done()

    async def _write(self, batch: list[_Item]) -> None:
        events = await self._write_isolating(batch)
        for item in batch:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
            elif item.kind != "receipt":
                self._unrecorded.discard(item.value.part_id)
                self._release(item.value.part_id)
        if events:
            self.on_recorded()  # the callback dispatcher has something to post

    async def _write_isolating(self, batch: list[_Item]) -> int:
        """Commit the batch; on a data error, each half alone, down to the bad item(s), which
        get their defined outcome (`_refused`). Returns the callback events written."""
        try:
            return await self._commit(batch)
        except _DataRefused as exc:
            if len(batch) == 1:
                return await self._refused(batch[0], exc.__cause__ or exc)
            mid = len(batch) // 2
            return (await self._write_isolating(batch[:mid])
                    + await self._write_isolating(batch[mid:]))

    async def _commit(self, batch: list[_Item]) -> int:
        """One transaction for the batch; outages are retried with backoff (nothing lost),
        a refused value raises _DataRefused at once (retrying cannot fix it)."""
        delay = 0.2
        while True:
            try:
                now = utcnow()
                async with self.db.begin() as conn:
                    conn.info.pop(transitions.EVENTS_WRITTEN, None)  # left by another caller
                    conn.info.pop(transitions.RECEIPTS_KEPT, None)
                    await transitions.record_accepted(
                        conn, [i.value for i in batch if i.kind == "accepted"], now)
                    await transitions.record_untrackable(
                        conn, [i.value for i in batch if i.kind == "untrackable"], now)
                    await transitions.record_rejected(
                        conn, [i.value for i in batch if i.kind == "rejected"], now)
                    await transitions.record_retries(
                        conn, [i.value for i in batch if i.kind == "retry"], now,
                        self.settings.max_unanswered_attempts)
                    await transitions.record_receipts(
                        conn, [i.value for i in batch if i.kind == "receipt"], now)
                    # kept with the pooled connection: taken now, whatever happens next
                    events = int(conn.info.pop(transitions.EVENTS_WRITTEN, 0))
                    kept = conn.info.pop(transitions.RECEIPTS_KEPT, None)
                if kept:  # committed: a second look for their parts soon
                    for cid in kept:
                        self._kept.setdefault(cid, 0)
                    self._kept_now.set()
                return events
            except Exception as exc:
                if poison.is_data_error(exc):
                    raise _DataRefused(str(exc)) from exc
                log.error("recording %d delivery results failed (%s); retrying in %.1f s",
                          len(batch), _first_line(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _refused(self, item: _Item, exc: BaseException) -> int:
        """The defined outcome of one item whose values the database refused."""
        value = item.value
        why = _first_line(exc)
        if item.kind == "receipt":
            log.error("receipt from %s carrier_message_id=%.64r refused by the database (%s): "
                      "acknowledged and dropped", value.carrier, value.carrier_message_id, why)
            return 0
        if item.kind == "accepted":
            log.error("part %d accepted by %s but its carrier id cannot be stored (%s): "
                      "UNKNOWN %s, charged", value.part_id, value.carrier, why,
                      transitions.CARRIER_ID_INVALID)
            fallback = _Item("untrackable", Untrackable(value.part_id, value.carrier,
                                                        callback=value.callback))
        elif item.kind == "rejected":
            log.error("part %d rejected by %s, error code refused by the database (%s): "
                      "recorded without it", value.part_id, value.carrier, why)
            fallback = _Item("rejected", Rejected(value.part_id, value.carrier, None))
        else:
            log.error("part %d: its %s could not be recorded (%s); it is retried after its "
                      "lease", value.part_id, item.kind, why)
            return 0
        try:
            return await self._commit([fallback])
        except _DataRefused as again:
            log.error("part %d: its fallback outcome was refused too (%s); it is retried after "
                      "its lease", value.part_id, _first_line(again))
            return 0

    async def _pace(self, period: float = 0.25) -> None:
        """Keep about AHEAD_SECONDS of measured throughput in flight, no more.

        Converges upwards on its own: whenever the carriers answer faster than AHEAD_SECONDS,
        throughput x AHEAD_SECONDS exceeds what is in flight, so the target grows."""
        rate = 0.0
        last = self._finished
        while True:
            await asyncio.sleep(period)
            done, last = self._finished - last, self._finished
            rate = 0.5 * rate + 0.5 * (done / period)
            self.target_inflight = max(MIN_INFLIGHT,
                                       min(self.max_inflight, int(rate * AHEAD_SECONDS)))
            if not self.settings.max_unrecorded:
                self._gate.resize(max(self.max_unrecorded, int(rate * UNRECORDED_SECONDS)))
            self._room.set()
            if self.rates is not None:
                metrics.shared_rates(self.rates)

    # --- leases and housekeeping -------------------------------------------------------------
    async def _lease_keeper(self) -> None:
        period = max(0.5, self.settings.lease_seconds / 3)
        trouble = DatabaseTrouble("renewing the leases of parts in flight")
        while True:
            await asyncio.sleep(period)
            # in flight with a carrier, or answered and waiting for the recorder
            ids = list(self._inflight.keys() | self._unrecorded)
            if not ids:
                continue
            try:
                async with self.db.begin() as conn:
                    until = utcnow() + timedelta(seconds=self.settings.lease_seconds)
                    await queue.renew_leases(conn, self.owner, ids, until)
            except Exception as exc:
                trouble.failed(exc, f"retrying every {period:.0f} s")
            else:
                trouble.ok()

    async def _housekeeping(self) -> None:
        trouble = DatabaseTrouble("housekeeping (expiry, campaign roll-up)")
        while True:
            try:
                await self.housekeeping_once()
            except Exception as exc:
                trouble.failed(exc, "retrying every 5 s")
            else:
                trouble.ok()
            await asyncio.sleep(5)

    async def _statistics(self) -> None:
        """Planner statistics of the tables growing faster than autovacuum analyses them
        (db/statistics.py): a new day's partition of parts, a fresh install."""
        trouble = DatabaseTrouble("planner statistics (ANALYZE of growing tables)")
        while True:
            await asyncio.sleep(statistics.PERIOD)
            try:
                async with self.db.begin() as conn:
                    await statistics.analyze_grown(conn)
            except Exception as exc:
                trouble.failed(exc, f"retrying every {statistics.PERIOD:.0f} s")
            else:
                trouble.ok()

    async def _second_look(self) -> None:
        """Receipts kept because their part was not on record yet get a second look, SECOND_LOOK
        seconds after, not at the next housekeeping turn (5 s). A fleet's receipt often comes
        on another worker's bind while the submitting worker's record is in flight: each side
        looks for the other inside its own transaction, two at once miss each other, and a
        look after both have committed closes it (bench/fleet.py: receipts trailed the submits
        of two workers by the housekeeping's wait)."""
        trouble = DatabaseTrouble("applying kept receipts")
        while True:
            await self._kept_now.wait()
            await asyncio.sleep(SECOND_LOOK)
            self._kept_now.clear()
            looked, self._kept = self._kept, {}
            try:
                applied = await self._apply_pending_receipts(utcnow(), sorted(looked))
            except Exception as exc:
                trouble.failed(exc, "the housekeeping turn applies them")
                continue
            trouble.ok()
            # a record slower than a look (a loaded worker's batch): looked at again, LOOKS
            # times in all
            for cid, looks in looked.items():
                if cid not in applied and looks + 1 < LOOKS:
                    self._kept.setdefault(cid, looks + 1)
            if self._kept:
                self._kept_now.set()

    async def _apply_pending_receipts(self, now: datetime,
                                      ids: Sequence[str] | None = None) -> set[str]:
        """Receipts kept because they came before their submit was recorded elsewhere (another
        worker's bind): applied once their part, of their own carrier, is ENROUTE. All of them,
        a thousand a transaction: one batch per turn (every 5 s) held a fleet's receipts at
        200/s (bench/fleet.py: 2,199 receipts/s with one worker, 1,197/s with two). `ids`:
        only the receipts with these carrier message ids (a second look), a thousand at a time.
        Returns the carrier message ids applied."""
        applied: set[str] = set()
        chunks = [None] if ids is None else [
            list(ids[i:i + PENDING_BATCH]) for i in range(0, len(ids), PENDING_BATCH)]
        for chunk in chunks:
            while True:
                query = select(PendingReceipt.id, PendingReceipt.carrier_message_id).join(
                    Part, (Part.carrier_message_id == PendingReceipt.carrier_message_id)
                    & Part.carrier_message_id.is_not(None)  # the partial index
                    & (Part.status == ENROUTE)
                    & (PendingReceipt.carrier.is_(None)
                       | (PendingReceipt.carrier == Part.carrier))
                ).limit(PENDING_BATCH)
                if chunk is not None:
                    query = query.where(PendingReceipt.carrier_message_id.in_(chunk))
                async with self.db.begin() as conn:
                    pending = (await conn.execute(query)).all()
                    if pending:
                        await transitions.apply_pending_receipts(
                            conn, [p[0] for p in pending], now)
                applied.update(p[1] for p in pending)
                if len(pending) < PENDING_BATCH:
                    break
        return applied

    async def housekeeping_once(self) -> None:
        now = utcnow()
        cutoff = now - timedelta(seconds=self.settings.queue_expiry_seconds)
        async with self.db.begin() as conn:
            # counted from when sending was due to start (scheduled_at, else acceptance), not
            # from due_at, which every retry pushes forward
            started_long_ago = select(Campaign.id).where(
                func.coalesce(Campaign.scheduled_at, Campaign.created_at) < cutoff)
            expired = await transitions.finish_waiting(
                conn, Part.campaign_id.in_(started_long_ago) & (
                    Part.lease_until.is_(None) | (Part.lease_until < now)),
                "EXPIRED", now, "expired in the queue",
            )
        await self._apply_pending_receipts(now)
        if expired:
            log.warning("%d parts expired in the queue after %.0f h and were refunded",
                        len(expired), self.settings.queue_expiry_seconds / 3600)
        await expiry.expire_old_rows(self.db, self.settings, now)
        await receipt_timeout.expire_unreceipted(self.db, self.settings, now)
        await self.router.housekeeping(self.db)
        await lifecycle.roll_up(self.db)  # campaign counts and completion, off the hot paths


def _rotated(accounts: set[int], turn: int) -> list[int]:
    ordered = sorted(accounts)
    if not ordered:
        return ordered
    start = turn % len(ordered)
    return ordered[start:] + ordered[:start]


def _window_capacity(router: Router) -> int:
    """Submits the carriers can have awaiting an answer at once (window x binds of each SMPP
    carrier; 0 for carriers without a window, such as the simulated one)."""
    total = 0
    for carrier in router.carriers.values():
        config = getattr(carrier, "config", None)
        window, binds = getattr(config, "window", 0), getattr(config, "binds", 0)
        if isinstance(window, int) and isinstance(binds, int):
            total += window * binds
    return total


def _first_line(exc: BaseException) -> str:
    """The error without the SQL and its parameters (phone numbers, text) that follow."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery task %s died: %r; the worker must be restarted",
                  task.get_name(), task.exception(), exc_info=task.exception())
