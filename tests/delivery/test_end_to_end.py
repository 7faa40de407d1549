"""Delivery end to end through the simulated carrier: statuses, times, refunds, callbacks."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx

from tests.api.test_send import balance
from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import Customer
from tikosms.callbacks.signing import verify
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.runtime import delivery


async def wait_for_status(client: httpx.AsyncClient, who: Customer, params: dict[str, str],
                          wanted: set[str], timeout: float = 15.0  # noqa: ASYNC109
                          ) -> list[dict[str, object]]:
    """Poll the API as a customer would, until every part is in one of `wanted`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        rows = (await client.get("/v1/get_message", headers=who.headers, params=params)).json()[
            "data"]
        if rows and all(r["status"] in wanted for r in rows):
            return rows
        if loop.time() > end:
            raise AssertionError(f"statuses after {timeout}s: {[r['status'] for r in rows]}")
        await asyncio.sleep(0.05)


async def test_message_is_delivered_with_times_and_signed_callbacks(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    async with CallbackReceiver() as receiver, delivery(db, settings):
        receiver.fail_first(1)  # the first callback attempt gets a 500 and must be retried
        r = await client.post("/v1/message", headers=customer.headers, json={
            "from": "Shop", "to": "380501234567", "message": "code 1234",
            "callback_url": receiver.url, "client_ref": "inv-7"})
        assert r.status_code == 200
        rows = await wait_for_status(client, customer, {"message_id": r.json()["message_id"]},
                                     {"DELIVRD"})
        assert rows[0]["sent_at"] is not None and rows[0]["delivered_at"] is not None
        await receiver.wait_for(3, timeout=10)  # ENROUTE (failed once, retried), DELIVRD
        secret = await _secret(db, customer.account_id)
    answered = [c for c in receiver.requests if c.answered == 200]
    assert [c.json["status"] for c in answered] == ["ENROUTE", "DELIVRD"]
    assert receiver.requests[0].event_id == receiver.requests[1].event_id  # retry: same event
    last = answered[-1].json
    assert last["final"] is True and last["client_ref"] == "inv-7"
    assert last["message_id"] == r.json()["message_id"] and last["cost"] == "0.045"
    # the part's campaign and times, as the status read gives them
    assert last["from"] == "Shop" and last["to"] == "380501234567"
    assert (last["sent_at"], last["delivered_at"]) == (rows[0]["sent_at"], rows[0]["delivered_at"])
    for c in answered:
        assert verify(secret, c.headers, c.body)
    assert await balance(client, customer) == Decimal("99.955")  # a delivered part is charged


async def test_rejected_parts_are_refunded(client: httpx.AsyncClient, customer: Customer,
                                           db: Database, settings: Settings) -> None:
    from tikosms.delivery.carrier import OutboundPart, SubmitOutcome, SubmitResult
    from tikosms.delivery.routing import Router, RouteRule

    class Refusing:
        name = "refusing"
        available = True

        async def start(self, on_receipt: object) -> None: ...
        async def stop(self) -> None: ...

        async def submit(self, part: OutboundPart) -> SubmitOutcome:
            return SubmitOutcome(SubmitResult.REJECTED, error_code="0x0000000b")

    from tikosms.delivery.worker import DeliveryWorker

    worker = DeliveryWorker(db, settings, Router({"refusing": Refusing()},  # type: ignore[dict-item]
                                                 [RouteRule("*", "refusing", 0)]))
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "x" * 200, "recipients": ["380501234567", "380671234567"]})
    assert r.json()["cost"] == "0.190"
    await worker.start()
    try:
        rows = await wait_for_status(client, customer, {"campaign_id": r.json()["campaign_id"]},
                                     {"REJECTD"})
    finally:
        await worker.stop()
    assert {x["error_code"] for x in rows} == {"0x0000000b"}
    assert await balance(client, customer) == Decimal(100)


async def test_single_message_overtakes_a_large_campaign(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    from tests.conftest import make_customer

    other = await make_customer(db, name="Other")
    rich = await make_customer(db, balance="1000", name="Rich")
    big = await client.post("/v1/messages", headers=rich.headers, json={
        "from": "Brand", "message": "sale", "recipients": [f"38050{1000000 + i}"
                                                           for i in range(10_000)]})
    assert big.status_code == 200
    async with delivery(db, settings):
        # the campaign is under way (10,000 parts: at ~10,000 parts/s through the simulated
        # carrier, still going when the single message has gone)
        await asyncio.sleep(0.05)
        r = await client.post("/v1/message", headers=other.headers, json={
            "from": "Bank", "to": "380671234567", "message": "code 9"})
        rows = await wait_for_status(client, other, {"message_id": r.json()["message_id"]},
                                     {"ENROUTE", "DELIVRD"}, timeout=10)
        campaign = (await client.get("/v1/get_message", headers=rich.headers,
                                     params={"campaign_id": big.json()["campaign_id"]})).json()
    waiting = sum(1 for x in campaign["data"] if x["status"] == "QUEUED")
    assert rows[0]["status"] in ("ENROUTE", "DELIVRD")
    assert waiting > 0, "the campaign finished before the single message: the test proves nothing"


async def _secret(db: Database, account_id: int) -> str:
    from tikosms.accounts import repository

    async with db.connect() as conn:
        row = await repository.get_account(conn, account_id)
    assert row is not None
    return str(row.signing_secret)


async def test_scheduled_campaign_waits_until_its_time(
    client: httpx.AsyncClient, customer: Customer, db: Database, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    at = datetime.now(UTC) + timedelta(seconds=2)
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Brand", "message": "later", "scheduled_at": at.isoformat(),
        "recipients": ["380501234567"]})
    assert r.status_code == 200
    params = {"campaign_id": r.json()["campaign_id"]}
    async with delivery(db, settings):
        await asyncio.sleep(0.5)
        early = (await client.get("/v1/get_message", headers=customer.headers,
                                  params=params)).json()["data"]
        rows = await wait_for_status(client, customer, params, {"DELIVRD"}, timeout=15)
    assert early[0]["status"] == "SCHEDULED"
    sent = datetime.strptime(str(rows[0]["sent_at"]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert sent >= at.replace(microsecond=0)
