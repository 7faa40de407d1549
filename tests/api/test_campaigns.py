"""Campaigns: dedupe, invalid recipients, scheduling, idempotency, cancel, streaming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.api.test_send import balance
from tests.conftest import Customer
from tikosms.db.engine import Database
from tikosms.errors import MSG_INVALID_NUMBER


async def test_campaign_dedupes_and_reports_invalid(client: httpx.AsyncClient,
                                                    customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "MyBrand", "message": "Big sale today!",
        "recipients": [
            {"to": "380501234567", "client_ref": "order-1"},
            "+380 50 123 4567",  # the same number written differently: a duplicate
            {"to": "380671234567"},
            {"to": "12"},  # invalid
            "+14155552671",  # valid, but no rate for the US
        ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["recipients"] == 2
    assert body["duplicates_removed"] == 1
    assert body["invalid_removed"] == 2
    assert [i["index"] for i in body["invalid"]] == [3, 4]
    assert body["invalid"][0]["error"] == MSG_INVALID_NUMBER
    assert body["cost"] == "0.095"
    assert await balance(client, customer) == Decimal("99.905")
    rows = (await client.get("/v1/get_message", headers=customer.headers,
                             params={"campaign_id": body["campaign_id"]})).json()["data"]
    assert sorted(r["to"] for r in rows) == ["380501234567", "380671234567"]
    assert {r["client_ref"] for r in rows} == {"order-1", None}


async def test_campaign_with_nobody_valid_is_422(client: httpx.AsyncClient,
                                                 customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "MyBrand", "message": "x", "recipients": ["1", "2"]})
    assert r.status_code == 422 and r.json()["error"] == MSG_INVALID_NUMBER
    assert await balance(client, customer) == Decimal(100)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 101}, "concurrency"),
        ({"concurrency": "ten"}, "concurrency"),
        ({"scheduled_at": "2001-01-01 00:00:00"}, "scheduled_at"),  # in the past
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"recipients": []}, "recipients"),
        ({"recipients": "380501234567"}, "recipients"),
        ({"message": "x" * 1601}, "message"),
    ],
)
async def test_campaign_validation(client: httpx.AsyncClient, customer: Customer,
                                   extra: dict[str, object], field: str) -> None:
    body = {"from": "Brand", "message": "hi", "recipients": ["380501234567"], **extra}
    r = await client.post("/v1/messages", headers=customer.headers, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["errors"]


async def test_more_than_100000_recipients_is_422(client: httpx.AsyncClient,
                                                  customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Brand", "message": "hi", "recipients": ["380501234567"] * 100_001})
    assert r.status_code == 422


async def test_scheduled_campaign_waits_and_cancel_refunds(client: httpx.AsyncClient,
                                                           customer: Customer) -> None:
    at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Brand", "message": "later", "scheduled_at": at,
        "recipients": ["380501234567", "380671234567"]})
    assert r.status_code == 200
    cid = r.json()["campaign_id"]
    rows = (await client.get("/v1/get_message", headers=customer.headers,
                             params={"campaign_id": cid})).json()["data"]
    assert {x["status"] for x in rows} == {"SCHEDULED"}
    assert await balance(client, customer) == Decimal("99.905")
    c = await client.post(f"/v1/campaigns/{cid}/cancel", headers=customer.headers)
    assert c.status_code == 200
    assert c.json()["cancelled"] == 2 and c.json()["refunded"] == "0.095"
    assert await balance(client, customer) == Decimal(100)
    rows = (await client.get("/v1/get_message", headers=customer.headers,
                             params={"campaign_id": cid})).json()["data"]
    assert {x["status"] for x in rows} == {"CANCELED"}
    again = await client.post(f"/v1/campaigns/{cid}/cancel", headers=customer.headers)
    assert again.json()["cancelled"] == 0
    assert await balance(client, customer) == Decimal(100)


async def test_idempotency_key_replays_and_sends_once(client: httpx.AsyncClient,
                                                      customer: Customer) -> None:
    body = {"from": "Shop", "to": "380501234567", "message": "once"}
    h = {**customer.headers, "Idempotency-Key": "k-1"}
    first = await client.post("/v1/message", headers=h, json=body)
    second = await client.post("/v1/message", headers=h, json=body)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert await balance(client, customer) == Decimal("99.955")
    other = await client.post("/v1/message", headers=h, json={**body, "message": "twice"})
    assert other.status_code == 422
    assert len((await client.get("/v1/get_messages", headers=customer.headers)).json()[
        "campaigns"]) == 1


async def test_large_campaign_is_streamed_back_whole(client: httpx.AsyncClient,
                                                     customer: Customer) -> None:
    numbers = [f"38050{1000000 + i}" for i in range(1500)]
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Brand", "message": "hi", "recipients": numbers})
    assert r.status_code == 200 and r.json()["recipients"] == 1500
    rows = (await client.get("/v1/get_message", headers=customer.headers,
                             params={"campaign_id": r.json()["campaign_id"]})).json()["data"]
    assert sorted(x["to"] for x in rows) == sorted(numbers)


async def test_concurrent_retries_with_one_idempotency_key_send_once(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    import asyncio

    body = {"from": "Shop", "to": "380501234567", "message": "once only"}
    h = {**customer.headers, "Idempotency-Key": "burst-1"}
    answers = await asyncio.gather(*(client.post("/v1/message", headers=h, json=body)
                                     for _ in range(8)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["message_id"] for a in answers}) == 1
    assert await balance(client, customer) == Decimal("99.955")


async def test_a_402_in_a_group_commit_fails_only_that_send(
    client: httpx.AsyncClient, customer: Customer, db: Database
) -> None:
    import asyncio

    from tests.conftest import make_customer

    poor = await make_customer(db, balance="0.01", name="Poor")
    rich_send = client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    poor_send = client.post("/v1/message", headers=poor.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    rich, poor_answer = await asyncio.gather(rich_send, poor_send)
    assert rich.status_code == 200 and poor_answer.status_code == 402
    assert await balance(client, poor) == Decimal("0.01")
    assert await balance(client, customer) == Decimal("99.955")


async def test_many_concurrent_campaigns_do_not_exhaust_the_connection_pool(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    import asyncio

    answers = await asyncio.gather(*(
        client.post("/v1/messages", headers=customer.headers, json={
            "from": "Brand", "message": f"wave {i}", "recipients": ["380501234567"]})
        for i in range(24)
    ))
    assert [a.status_code for a in answers] == [200] * 24
