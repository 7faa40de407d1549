"""Sends the callback outbox: signed POSTs, retried with backoff for at least 24 hours.

Order per part: an event is sent only when no earlier event of the same part is still pending,
so a customer never sees "DELIVRD" before "ENROUTE" (a late intermediate state never overwrites a
final one on their side either). Claims use a lease like the parts queue, so several processes can
dispatch from one PostgreSQL without sending an event twice at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from sqlalchemy import and_, bindparam, exists, insert, select, update
from sqlalchemy.orm import aliased

from tikosms.callbacks import signing
from tikosms.callbacks.retry import RetryPolicy
from tikosms.callbacks.sender import CallbackSender, DeliveryAttempt
from tikosms.callbacks.ssrf import CallbackHostUnresolved, CallbackUrlError, check_callback_host
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Account, CallbackAttempt, CallbackEvent
from tikosms.db.types import utcnow

log = logging.getLogger("tikosms.callbacks")

LEASE = timedelta(seconds=60)


class CallbackDispatcher:
    def __init__(self, db: Database, settings: Settings, policy: RetryPolicy | None = None,
                 batch: int = 500) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self._wake = asyncio.Event()
        self._secrets: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sender = CallbackSender(
            timeout=settings.callback_timeout_seconds, limit=settings.callback_concurrency,
            limit_per_host=settings.callback_concurrency,
            allow_private=settings.callback_allow_private,
        )
        self.delivered = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callbacks")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the round in progress (its posts are recorded), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task:
            done, _ = await asyncio.wait([self._task], timeout=grace)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._sender.close()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("callback dispatch round failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            if sent == 0 and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        now = utcnow()
        earlier = aliased(CallbackEvent)
        async with self.db.begin() as conn:
            stmt = (
                select(CallbackEvent.id)
                .where(
                    CallbackEvent.state == "pending",
                    CallbackEvent.next_attempt_at <= now,
                    (CallbackEvent.lease_until.is_(None)) | (CallbackEvent.lease_until < now),
                    ~exists().where(and_(
                        earlier.part_id == CallbackEvent.part_id,
                        earlier.id < CallbackEvent.id,
                        earlier.state == "pending",
                    )),
                )
                .order_by(CallbackEvent.next_attempt_at, CallbackEvent.id)
                .limit(self.batch)
            )
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True, of=CallbackEvent)
            ids = [i for (i,) in await conn.execute(stmt)]
            if not ids:
                return 0
            rows = (await conn.execute(
                update(CallbackEvent).where(CallbackEvent.id.in_(ids))
                .values(lease_until=now + LEASE)
                .returning(CallbackEvent.id, CallbackEvent.event_id, CallbackEvent.account_id,
                           CallbackEvent.url, CallbackEvent.payload, CallbackEvent.attempts,
                           CallbackEvent.created_at)
            )).all()
            missing = {r.account_id for r in rows} - self._secrets.keys()
            if missing:
                for a in await conn.execute(select(Account.id, Account.signing_secret)
                                            .where(Account.id.in_(missing))):
                    self._secrets[a.id] = a.signing_secret
        results = await asyncio.gather(*(self._send(r) for r in rows))
        await self._record(rows, results)
        return len(rows)

    async def _send(self, row: object) -> tuple[DeliveryAttempt, bool]:
        """Returns the attempt and whether to give up at once (a refused URL)."""
        url: str = row.url  # type: ignore[attr-defined]
        try:
            await check_callback_host(url, self.settings.callback_allow_private)
        except CallbackHostUnresolved as exc:
            return DeliveryAttempt(False, None, f"cannot resolve host: {exc.reason}", 0.0), False
        except CallbackUrlError as exc:
            return DeliveryAttempt(False, None, f"callback refused: {exc.reason}", 0.0), True
        body = row.payload.encode()  # type: ignore[attr-defined]
        headers = signing.headers(
            self._secrets[row.account_id], row.event_id, int(time.time()), body  # type: ignore[attr-defined]
        )
        return await self._sender.post(url, body, headers), False

    async def _record(self, rows: list, results: list[tuple[DeliveryAttempt, bool]]) -> None:  # type: ignore[type-arg]
        """One transaction for the round: attempts recorded, events finished or rescheduled."""
        now = utcnow()
        attempts, updates = [], []
        for row, (attempt, refused) in zip(rows, results, strict=True):
            attempts.append({
                "event_id": row.id, "attempted_at": now, "status_code": attempt.status,
                "error": attempt.error, "duration_ms": int(attempt.duration_ms),
            })
            made = row.attempts + 1
            state, finished, nxt = "pending", None, None
            if attempt.ok:
                state, finished = "delivered", now
                self.delivered += 1
            else:
                nxt = None if refused else self.policy.next_attempt_at(row.created_at, made, now)
                if nxt is None:
                    state, finished = "failed", now
                    log.warning("callback %s to %s given up after %d attempts: %s",
                                row.event_id, row.url, made, attempt.error)
                else:
                    log.info("callback %s to %s failed (%s); attempt %d at %s", row.event_id,
                             row.url, attempt.error, made + 1, nxt.strftime("%H:%M:%S"))
            updates.append({
                "eid": row.id, "made": made, "code": attempt.status, "err": attempt.error,
                "st": state, "fin": finished, "nxt": nxt or now,
            })
        async with self.db.begin() as conn:
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
