"""The delivery worker: claim due parts, submit them to carriers, record what happened.

One worker per process. Its tasks:
- the claimer takes due parts from the queue (`queue.claim_due_parts`) while fewer than
  `max_inflight` are out, and starts one submission per part (carriers bound their own windows);
- the recorder writes submit outcomes and receipts in batches, one transaction per batch; a
  receipt's handler returns (and the carrier acknowledges it) only after its batch committed;
- the lease keeper renews the leases of parts still in flight, so slow carriers keep their claims;
- housekeeping expires parts that waited too long and applies receipts that came early.

Stopping (SIGTERM): no new claims; submissions in flight get a few seconds to finish; what is still
claimed then is released to the queue at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import ENROUTE, Campaign, Part, PendingReceipt
from tikosms.db.types import utcnow
from tikosms.delivery import queue, transitions
from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitResult
from tikosms.delivery.notify import PartsListener
from tikosms.delivery.routing import Router
from tikosms.delivery.transitions import Accepted, Rejected, Retry
from tikosms.messaging import lifecycle
from tikosms.observability import metrics

log = logging.getLogger("tikosms.delivery")

NO_CARRIER_RETRY = 5.0  # seconds before a part with no available carrier is tried again
# Parts handed to carriers ahead of time are at most this many seconds of their measured
# throughput: a single message claimed now waits behind no more than that in a carrier's queue
# (the fairness promise: one account's campaign never holds another's message back ~1 s).
AHEAD_SECONDS = 0.4
MIN_INFLIGHT = 64
SENDERS_CACHED = 50_000  # campaigns whose sender the worker keeps in memory
ACCOUNTS_REFRESH = 0.5  # seconds: a new account's campaign joins the rotation within this


@dataclass(slots=True)
class _Item:
    kind: str  # accepted | rejected | retry | receipt
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
        self._records: asyncio.Queue[_Item] = asyncio.Queue()
        self._senders: dict[str, queue.Sender] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.submitted = 0
        self._finished = 0  # submissions answered, for the throughput estimate
        self.target_inflight = min(max_inflight, 256)
        self._accounts: list[int] = []
        self._accounts_at = 0.0
        self.listener: PartsListener | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.router.start(self.on_receipt)
        self._tasks = [
            asyncio.create_task(self._recorder(), name="recorder"),
            asyncio.create_task(self._claimer(), name="claimer"),
            asyncio.create_task(self._lease_keeper(), name="lease-keeper"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self._pace(), name="pace"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_death)
        if self.db.is_postgres:  # sends accepted by other processes wake this one at once
            self.listener = PartsListener(self.db.url, self.wake)
            self.listener.start()
        log.info("delivery worker %s started: carriers=%s", self.owner, self.router.describe())

    def wake(self) -> None:
        """New parts are due (a send was accepted in this process): claim now."""
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
        await self.router.stop()
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
            try:
                parts = await self._claim(min(room, self.settings.claim_batch))
            except Exception:
                log.exception("claiming parts failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            if not parts:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.idle_poll_seconds)
                except TimeoutError:
                    pass
                continue
            for part, announced in parts:
                self._inflight[part.part_id] = asyncio.create_task(self._submit(part, announced))

    async def _claim(self, limit: int) -> list[tuple[OutboundPart, bool]]:
        """Claimed parts, each with whether its status changes are announced (a callback URL
        of its own or its campaign's): recording skips the callback work for the others."""
        now = utcnow()
        async with self.db.begin() as conn:
            # the accounts with due campaign parts, looked up at most every ACCOUNTS_REFRESH s
            # while claims come back full (a claim that comes back short looks again next time)
            fresh = time.monotonic() - self._accounts_at < ACCOUNTS_REFRESH
            if not fresh:
                self._accounts = await queue.accounts_with_due_parts(conn, now)
                self._accounts_at = time.monotonic()
            claimed = await queue.claim_due_parts(
                conn, self.owner, limit, now, self.settings.lease_seconds, self._accounts
            )
            if len(claimed) < limit:
                self._accounts_at = 0.0
            if len(self._senders) > SENDERS_CACHED:
                self._senders.clear()  # bounded: one entry per campaign, and campaigns never end
            missing = {p.campaign_id for p in claimed} - self._senders.keys()
            if missing:
                self._senders.update(await queue.senders(conn, missing))
        out = []
        for p in claimed:
            sender = self._senders[p.campaign_id]
            out.append((OutboundPart(
                part_id=p.id, to=p.to, sender=sender.sender, sender_type=sender.sender_type,
                text=p.text, data_coding=p.data_coding, part_no=p.part_no,
                total_parts=p.total_parts, concat_ref=p.concat_ref, mccmnc=p.mccmnc,
            ), sender.has_callback or bool(p.callback_url)))
        return out

    async def _submit(self, part: OutboundPart, announced: bool = True) -> None:
        try:
            carrier_name, outcome = await metrics.timed_submit(self.router, part)
            if outcome.result is SubmitResult.ACCEPTED:
                assert carrier_name is not None and outcome.carrier_message_id is not None
                self.submitted += 1
                await self._record("accepted", Accepted(part.part_id, carrier_name,
                                                        outcome.carrier_message_id, announced))
                log.debug("part %d accepted by %s as %s", part.part_id, carrier_name,
                          outcome.carrier_message_id)
            elif outcome.result is SubmitResult.REJECTED:
                log.warning("part %d rejected by %s: %s %s", part.part_id, carrier_name,
                            outcome.error_code, outcome.detail)
                await self._record("rejected", Rejected(part.part_id, carrier_name,
                                                        outcome.error_code, outcome.detail))
            else:
                delay = outcome.retry_after or NO_CARRIER_RETRY
                log.info("part %d will be retried in %.1f s: %s", part.part_id, delay,
                         outcome.detail or outcome.result)
                await self._record("retry", Retry(part.part_id, delay, outcome.detail))
        except asyncio.CancelledError:
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

    # --- receipts ------------------------------------------------------------------------
    async def on_receipt(self, receipt: Receipt) -> None:
        """Returns once the receipt is durably recorded (the carrier then acknowledges it)."""
        metrics.receipt_received(receipt)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._records.put(_Item("receipt", receipt, done))
        await done

    # --- the recorder ----------------------------------------------------------------------
    async def _recorder(self) -> None:
        while True:
            first = await self._records.get()
            batch = [first]
            while len(batch) < 2000 and not self._records.empty():
                batch.append(self._records.get_nowait())
            try:
                await asyncio.shield(self._write(batch))  # a batch is never cut in half
            finally:
                for _ in batch:
                    self._records.task_done()

    async def _write(self, batch: list[_Item]) -> None:
        delay = 0.2
        while True:
            try:
                now = utcnow()
                async with self.db.begin() as conn:
                    conn.info.pop(transitions.EVENTS_WRITTEN, None)  # left by another caller
                    await transitions.record_accepted(
                        conn, [i.value for i in batch if i.kind == "accepted"], now)
                    await transitions.record_rejected(
                        conn, [i.value for i in batch if i.kind == "rejected"], now)
                    await transitions.record_retries(
                        conn, [i.value for i in batch if i.kind == "retry"], now)
                    await transitions.record_receipts(
                        conn, [i.value for i in batch if i.kind == "receipt"], now)
                    # kept with the pooled connection: taken now, whatever happens next
                    events = conn.info.pop(transitions.EVENTS_WRITTEN, 0)
                break
            except Exception as exc:
                log.error("recording %d delivery results failed (%s); retrying in %.1f s",
                          len(batch), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        for item in batch:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
            elif item.kind != "receipt":
                self._unrecorded.discard(item.value.part_id)
        if events:
            self.on_recorded()  # the callback dispatcher has something to post

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
            self._room.set()

    # --- leases and housekeeping -------------------------------------------------------------
    async def _lease_keeper(self) -> None:
        period = max(0.5, self.settings.lease_seconds / 3)
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
            except Exception:
                log.exception("renewing %d leases failed", len(ids))

    async def _housekeeping(self) -> None:
        while True:
            try:
                await self.housekeeping_once()
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(5)

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
            # receipts kept because they came before their submit was recorded elsewhere
            # (another worker): applied once their part, of their own carrier, is ENROUTE
            pending = (await conn.execute(
                select(PendingReceipt.id).join(
                    Part, (Part.carrier_message_id == PendingReceipt.carrier_message_id)
                    & Part.carrier_message_id.is_not(None)  # the partial index
                    & (Part.status == ENROUTE)
                    & (PendingReceipt.carrier.is_(None) | (PendingReceipt.carrier == Part.carrier))
                ).limit(1000)
            )).all()
            if pending:
                await transitions.apply_pending_receipts(conn, [p[0] for p in pending], now)
        if expired:
            log.warning("%d parts expired in the queue after %.0f h and were refunded",
                        len(expired), self.settings.queue_expiry_seconds / 3600)
        await self.router.housekeeping(self.db)
        await lifecycle.roll_up(self.db)  # campaign counts and completion, off the hot paths


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery task %s died: %r; the worker must be restarted",
                  task.get_name(), task.exception(), exc_info=task.exception())
