"""Hostile clients against the API: control characters beside another account's sends, more
streams than an account may hold, a campaign whose parts would explode, and logs that must not
carry what a client sent."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tests.conftest import Customer, add_rates, make_customer
from tikosms.db.engine import Database


async def test_control_characters_are_422_and_another_accounts_sends_all_succeed(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_rates(db)
    bad, good = await make_customer(db, name="Bad"), await make_customer(db, name="Good")
    hostile = [{"client_ref": "a\x00b"}, {"message": "hi\x00"}, {"from": "Sh\x07op"},
               {"callback_url": "https://example.com/\x00"}, {"client_ref": "x\x1b[31m"}]

    async def send(who: Customer, extra: dict[str, str], n: int) -> httpx.Response:
        body = {"from": "Shop", "to": f"38050{n:07d}", "message": "code 1234", **extra}
        return await client.post("/v1/message", headers=who.headers, json=body)

    answers = await asyncio.gather(
        *(send(bad, hostile[i % len(hostile)], i) for i in range(40)),
        *(send(good, {}, 1000 + i) for i in range(40)))
    for r in answers[:40]:
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "control_character" and "control character" in r.json()["error"]
    assert [r.status_code for r in answers[40:]] == [200] * 40


async def test_line_breaks_are_allowed_in_the_message(client: httpx.AsyncClient, db: Database,
                                                     customer: Customer) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "line one\r\nline two"})
    assert r.status_code == 200, r.text


async def test_a_recipients_control_character_is_422_for_the_campaign(
        client: httpx.AsyncClient, customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "hi",
        "recipients": ["380501234567", {"to": "380501234568", "client_ref": "\x00"}]})
    assert r.status_code == 422 and r.json()["code"] == "control_character"
    assert "recipients.1.client_ref" in r.json()["errors"]


async def test_an_exploding_campaign_is_refused_before_rows_are_built(
        client: httpx.AsyncClient, customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "😀" * 1600,
        "recipients": [f"38050{i:07d}" for i in range(100_000)]})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "too_many_parts" and "at most" in r.json()["error"]


async def test_a_campaign_beyond_balance_is_402_before_rows_are_built(
        client: httpx.AsyncClient, customer: Customer) -> None:
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "x" * 1000,  # 7 parts x 20,000 x 0.045 >> 100
        "recipients": [f"38050{i:07d}" for i in range(20_000)]})
    assert r.status_code == 402


async def test_streams_beyond_the_per_account_limit_are_429(
        client: httpx.AsyncClient, customer: Customer) -> None:
    slots = client._transport.app.state.stream_slots  # type: ignore[attr-defined]
    for _ in range(slots.per_account):
        slots.acquire(customer.account_id)  # streams held open by slow readers
    r = await client.get("/v1/get_messages", headers=customer.headers)
    assert r.status_code == 429 and r.headers["retry-after"].isdigit()
    assert r.json()["code"] == "too_many_streams"
    slots.release(customer.account_id)
    r = await client.get("/v1/get_messages", headers=customer.headers)
    assert r.status_code == 200 and slots.held(customer.account_id) == slots.per_account - 1


async def test_hostile_input_leaves_no_number_text_or_token_in_the_logs(
        client: httpx.AsyncClient, customer: Customer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the default level
    for extra in ({"client_ref": "ref\x00"}, {"message": "SECRETTEXT\x00"}, {}):
        await client.post("/v1/message", headers=customer.headers, json={
            "from": "Shop", "to": "380509876543", "message": "SECRETTEXT", **extra})
    await client.get("/v1/get_message", headers=customer.headers,
                     params={"campaign_id": "not-a-uuid"})
    logged = caplog.text
    for secret in ("380509876543", "SECRETTEXT", customer.token):
        assert secret not in logged
