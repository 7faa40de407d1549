"""Caps and expiry on the delivery side: unanswered submits end UNKNOWN after the cap, claim
counters never overflow, the gate bounds what is with carriers but not on record, and unmatched
receipts and idempotency keys expire."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import String, cast, func, insert, literal, select, update

from tests.api.test_send import balance
from tests.conftest import Customer
from tests.delivery.test_worker_processes import wait_for
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import ATTEMPTS_CAP, IdempotencyKey, Part, PendingReceipt
from tikosms.db.types import utcnow
from tikosms.delivery import queue
from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitOutcome, SubmitResult
from tikosms.delivery.routing import Router, RouteRule
from tikosms.delivery.worker import DeliveryWorker


class Silent:
    """A carrier that never gives a usable answer (as after a response timeout)."""

    name = "silent"
    available = True

    def __init__(self) -> None:
        self.submits = 0

    async def start(self, on_receipt: object) -> None: ...
    async def stop(self) -> None: ...

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        self.submits += 1
        return SubmitOutcome(SubmitResult.RETRY, retry_after=0.01, maybe_sent=True,
                             detail="no submit_sm_resp")


def _router(carrier: object) -> Router:
    return Router({carrier.name: carrier}, [RouteRule("*", carrier.name, 0)])  # type: ignore[attr-defined, dict-item]


async def _part(db: Database) -> dict[str, object]:
    async with db.connect() as conn:
        row = (await conn.execute(select(Part.status, Part.error_code, Part.unanswered,
                                         Part.sent_at))).one()
    return dict(row._mapping)


async def _wait_final(db: Database, within: float = 10.0) -> dict[str, object]:
    async def final() -> bool:
        return (await _part(db))["status"] not in ("QUEUED", "ENROUTE")

    await wait_for(final, within, "the part did not reach a final status")
    return await _part(db)


async def _until(condition: object, within: float = 10.0) -> None:
    async def check() -> bool:
        return bool(condition())  # type: ignore[operator]

    await wait_for(check, within, "the carrier did not get there")


async def test_a_part_no_carrier_answers_ends_unknown_after_the_cap_and_stays_charged(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    carrier = Silent()
    worker = DeliveryWorker(db, settings.model_copy(update={"max_unanswered_attempts": 3}),
                            _router(carrier))
    await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    await worker.start()
    try:
        part = await _wait_final(db)
    finally:
        await worker.stop()
    assert (part["status"], part["error_code"], part["unanswered"]) == (
        "UNKNOWN", "no_carrier_answer", 3)
    assert carrier.submits == 3  # each possibly a real SMS: no more
    assert await balance(client, customer) == Decimal("99.955")  # charged, not refunded


async def test_a_retry_the_carrier_surely_did_not_send_is_not_counted(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    class Throttling(Silent):
        async def submit(self, part: OutboundPart) -> SubmitOutcome:
            self.submits += 1
            return SubmitOutcome(SubmitResult.RETRY, retry_after=0.01, detail="throttled")

    carrier = Throttling()
    worker = DeliveryWorker(db, settings, _router(carrier))
    await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    await worker.start()
    try:
        await _until(lambda: carrier.submits >= 5)
    finally:
        await worker.stop()
    part = await _part(db)
    assert (part["status"], part["unanswered"]) == ("QUEUED", 0)


async def test_the_claim_counter_stops_at_its_cap_instead_of_overflowing(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    async with db.begin() as conn:
        await conn.execute(update(Part).values(attempts=ATTEMPTS_CAP))
    async with db.begin() as conn:
        claimed = await queue.claim_due_parts(conn, "w", 10, utcnow(), 30)
    assert [p.attempts for p in claimed] == [ATTEMPTS_CAP]


async def test_more_claims_than_a_smallint_holds_are_counted(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    async with db.begin() as conn:
        await conn.execute(update(Part).values(attempts=32767))
    async with db.begin() as conn:
        claimed = await queue.claim_due_parts(conn, "w", 10, utcnow(), 30)
    assert [p.attempts for p in claimed] == [32768]


async def test_no_more_parts_than_the_gate_are_with_carriers_unrecorded(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    class Holding(Silent):
        def __init__(self) -> None:
            super().__init__()
            self.inside = 0
            self.most = 0
            self.go = asyncio.Event()

        async def submit(self, part: OutboundPart) -> SubmitOutcome:
            self.inside += 1
            self.most = max(self.most, self.inside)
            await self.go.wait()
            self.inside -= 1
            return SubmitOutcome.accepted(f"m{part.part_id}")

    carrier = Holding()
    worker = DeliveryWorker(db, settings.model_copy(update={"max_unrecorded": 5}),
                            _router(carrier))
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "hi", "recipients": [f"38050{1000000 + i}" for i in range(40)]})
    assert r.status_code == 200
    await worker.start()
    try:
        await _until(lambda: carrier.inside >= 5)
        await asyncio.sleep(0.2)  # the claimer has claimed them all: none more goes out
        assert carrier.inside == 5
        carrier.go.set()

        async def all_sent() -> bool:
            async with db.connect() as conn:
                return not (await conn.execute(select(Part.id).where(
                    Part.status == "QUEUED"))).all()

        await wait_for(all_sent, 10, "parts left in the queue")
    finally:
        await worker.stop()
    assert carrier.most == 5


async def test_unmatched_receipts_and_old_idempotency_keys_expire(
    customer: Customer, db: Database, settings: Settings
) -> None:
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(insert(PendingReceipt), [
            {"carrier_message_id": cid, "status": "DELIVRD", "received_at": at, "carrier": "c"}
            for cid, at in (("old", now - timedelta(hours=73)), ("new", now - timedelta(hours=1)))
        ])
        await conn.execute(insert(IdempotencyKey), [
            {"account_id": customer.account_id, "key": key, "endpoint": "message",
             "request_hash": "h", "status_code": 200, "response_body": "{}", "created_at": at}
            for key, at in (("old", now - timedelta(hours=25)), ("new", now - timedelta(hours=1)))
        ])
    await DeliveryWorker(db, settings, Router({}, [])).housekeeping_once()
    async with db.connect() as conn:
        receipts = {r[0] for r in await conn.execute(select(PendingReceipt.carrier_message_id))}
        keys = {r[0] for r in await conn.execute(select(IdempotencyKey.key))}
    assert receipts == {"new"} and keys == {"new"}


async def test_every_kept_receipt_is_applied_in_one_housekeeping_turn(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    # receipts that came on another worker's bind before the submit was recorded: a fleet
    # keeps thousands of them a second; one turn (every 5 s) applied 1,000 at most
    recipients = [f"38050{i:07d}" for i in range(1, 1_201)]
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "hi", "recipients": recipients})
    assert r.status_code == 200, r.text
    now = utcnow()
    async with db.begin() as conn:
        ids = [row[0] for row in await conn.execute(select(Part.id).order_by(Part.id))]
        assert len(ids) == 1_200
        await conn.execute(update(Part).values(
            status="ENROUTE", carrier="c", sent_at=now,
            carrier_message_id=literal("m") + cast(Part.id, String)))
        await conn.execute(insert(PendingReceipt), [
            {"carrier_message_id": f"m{pid}", "status": "DELIVRD", "received_at": now,
             "done_at": now, "carrier": "c"} for pid in ids])
    await DeliveryWorker(db, settings, Router({}, [])).housekeeping_once()
    async with db.connect() as conn:
        statuses = [row[0] for row in await conn.execute(select(Part.status))]
        kept = (await conn.execute(select(func.count()).select_from(PendingReceipt))).scalar()
    assert statuses.count("DELIVRD") == 1_200 and kept == 0


@pytest.mark.parametrize("record_after", [0.0, 0.8])  # before the second look, after it
async def test_a_receipt_kept_while_another_worker_records_its_submit_is_applied_soon(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings,
    record_after: float,
) -> None:
    # A fleet: the receipt comes on this worker's bind while the submitting worker's record
    # is in flight; each looked for the other inside its own transaction and both missed. A
    # second look soon after applies it (looked at again when that record is slower than a
    # look), not the housekeeping turn (off here) 5 s later.
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    assert r.status_code == 200, r.text
    worker = DeliveryWorker(db, settings, Router({}, []))

    async def no_housekeeping() -> None:
        return None

    worker.housekeeping_once = no_housekeeping  # type: ignore[method-assign]
    await worker.start()
    try:
        await worker.on_receipt(Receipt("m-1", "DELIVRD", carrier="c"))
        async with db.connect() as conn:
            kept = (await conn.execute(select(func.count()).select_from(PendingReceipt))).scalar()
        assert kept == 1
        await asyncio.sleep(record_after)
        async with db.begin() as conn:  # the other worker's record, its look having missed
            await conn.execute(update(Part).values(
                status="ENROUTE", carrier="c", sent_at=utcnow(), carrier_message_id="m-1"))

        async def applied() -> bool:
            async with db.connect() as conn:
                return (await conn.execute(select(Part.status))).scalar() == "DELIVRD"

        await wait_for(applied, 3.0, "the kept receipt applied")
    finally:
        await worker.stop()
    async with db.connect() as conn:
        kept = (await conn.execute(select(func.count()).select_from(PendingReceipt))).scalar()
    assert kept == 0
