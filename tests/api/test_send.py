"""Sending through the API: shapes, parts, billing to the cent, errors that change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Customer, add_rates, make_customer
from tikosms.app import create_app
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.errors import (
    MSG_INVALID_CALLBACK,
    MSG_INVALID_NUMBER,
    MSG_NO_RATE_FOR_ACCOUNT,
)


async def balance(client: httpx.AsyncClient, who: Customer) -> Decimal:
    r = await client.get("/v1/balance", headers=who.headers)
    assert r.status_code == 200
    return Decimal(r.text.split('"balance":')[1].split(",")[0])


async def test_single_send_answers_ids_parts_and_cost(client: httpx.AsyncClient,
                                                      customer: Customer) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "MySender", "to": "+380501234567", "message": "Your OTP is 1234"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["parts"] == 1 and body["encoding"] == "GSM-7" and body["cost"] == "0.045"
    got = await client.get("/v1/get_message", headers=customer.headers,
                           params={"message_id": body["message_id"]})
    assert got.status_code == 200
    [row] = got.json()["data"]
    assert row["to"] == "380501234567"
    assert row["mccmnc"] == "25501"
    assert row["status"] == "QUEUED"
    assert row["from"] == "MySender" and row["sender_type"] == "Alpha"
    assert row["cost"] == "0.045" and row["data_coding"] == 0
    assert row["campaign_id"] == body["campaign_id"]
    assert row["sent_at"] is None and row["delivered_at"] is None
    assert await balance(client, customer) == Decimal("99.955")


@pytest.mark.parametrize(
    ("text", "parts", "coding"),
    [
        ("a" * 160, 1, 0),  # exactly one full GSM-7 part
        ("a" * 150 + "€" * 6, 2, 0),  # 156 chars but 162 septets (€ takes two): two parts
        ("Привіт" * 20, 2, 8),  # 120 UCS-2 units: two parts of 67
        ("😀" * 35, 1, 8),  # 70 units: one part
        ("😀" * 80, 3, 8),  # 80 chars, 160 UTF-16 units: three UCS-2 parts
    ],
)
async def test_single_send_bills_each_part(client: httpx.AsyncClient, customer: Customer,
                                           text: str, parts: int, coding: int) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380671234567", "message": text})
    assert r.status_code == 200, r.text
    assert r.json()["parts"] == parts
    rows = (await client.get("/v1/get_message", headers=customer.headers,
                             params={"message_id": r.json()["message_id"]})).json()["data"]
    assert [x["part"] for x in rows] == list(range(1, parts + 1))
    assert {x["total_parts"] for x in rows} == {parts}
    assert {x["data_coding"] for x in rows} == {coding}
    assert "".join(x["message"] for x in rows) == text
    assert await balance(client, customer) == Decimal(100) - Decimal("0.05") * parts


async def test_invalid_number_is_422_with_the_spec_sentence(client: httpx.AsyncClient,
                                                            customer: Customer) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "12345", "message": "hi"})
    assert r.status_code == 422
    assert r.json()["success"] is False
    assert r.json()["error"] == MSG_INVALID_NUMBER
    assert r.json()["code"] == "invalid_number"
    assert await balance(client, customer) == Decimal(100)


async def test_destination_without_rate_is_403(client: httpx.AsyncClient,
                                               customer: Customer) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "+14155552671", "message": "hi"})
    assert r.status_code == 403
    assert r.json() == {"success": False, "error": MSG_NO_RATE_FOR_ACCOUNT, "code": "no_rate"}


async def test_bad_callback_url_is_422(client: httpx.AsyncClient, customer: Customer) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi", "callback_url": "ftp://x/y"})
    assert r.status_code == 422
    assert r.json()["error"] == MSG_INVALID_CALLBACK


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "380501234567", "message": "hi"}, "from"),  # sender missing
        ({"from": "Shop", "message": "hi"}, "to"),  # recipient missing
        ({"from": "Shop", "to": "380501234567"}, "message"),  # text missing
        ({"from": "Shop", "to": "380501234567", "message": ""}, "message"),  # empty text
        ({"from": "Shop", "to": "380501234567", "message": "x" * 161}, "message"),  # > 160
        ({"from": "TooLongSender", "to": "380501234567", "message": "hi"}, "from"),  # > 11
        ({"from": "1234567890123456", "to": "380501234567", "message": "hi"}, "from"),  # > 15
    ],
)
async def test_validation_errors_are_422_and_name_the_field(
    client: httpx.AsyncClient, customer: Customer, body: dict[str, str], field: str
) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json=body)
    assert r.status_code == 422
    assert r.json()["success"] is False
    assert field in r.json()["errors"]
    assert await balance(client, customer) == Decimal(100)


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'"text"'])
async def test_body_that_is_not_an_object_is_422(client: httpx.AsyncClient,
                                                 customer: Customer, raw: bytes) -> None:
    r = await client.post("/v1/message", headers={**customer.headers,
                                                  "Content-Type": "application/json"},
                          content=raw)
    assert r.status_code == 422
    assert r.json()["success"] is False


async def test_insufficient_balance_is_402_and_nothing_is_stored(db: Database,
                                                                 client: httpx.AsyncClient) -> None:
    await add_rates(db)
    poor = await make_customer(db, balance="0.04", credit_limit="0")
    r = await client.post("/v1/message", headers=poor.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    assert r.status_code == 402
    assert r.json() == {"success": False, "error": "Insufficient balance",
                        "code": "insufficient_balance"}
    listed = (await client.get("/v1/get_messages", headers=poor.headers)).json()
    assert listed["campaigns"] == []


async def test_credit_limit_lets_the_balance_go_below_zero(db: Database,
                                                           client: httpx.AsyncClient) -> None:
    await add_rates(db)
    who = await make_customer(db, balance="0", credit_limit="1")
    r = await client.post("/v1/message", headers=who.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    assert r.status_code == 200
    body = (await client.get("/v1/balance", headers=who.headers)).json()
    assert body["balance"] == -0.045 and body["in_credit_limit"] == 1


async def test_account_price_list_comes_before_the_default(db: Database,
                                                           client: httpx.AsyncClient) -> None:
    from tikosms.db.types import utcnow
    from tikosms.rates.service import RateRow

    await add_rates(db)
    vip = await make_customer(db)
    await add_rates(db, [RateRow(None, "255", "", "Ukraine", Decimal("0.01"),
                                 utcnow().replace(year=2020), None)], account_id=vip.account_id)
    r = await client.post("/v1/message", headers=vip.headers, json={
        "from": "Shop", "to": "380501234567", "message": "hi"})
    assert r.json()["cost"] == "0.010"


async def test_a_new_price_list_applies_to_the_next_single_send(
    db: Database, client: httpx.AsyncClient, database_url: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Single sends price from a cache of the rate rows: an import in this process clears it at
    once; one made by another process counts once the cache is older than REFRESH_SECONDS."""
    import subprocess
    import sys

    from tikosms.db.types import utcnow
    from tikosms.rates import service as rates
    from tikosms.rates.service import RateRow

    await add_rates(db)
    who = await make_customer(db)

    async def cost() -> str:
        r = await client.post("/v1/message", headers=who.headers, json={
            "from": "Shop", "to": "380501234567", "message": "hi"})
        assert r.status_code == 200, r.text
        return str(r.json()["cost"])

    assert await cost() == "0.045"
    await add_rates(db, [RateRow(None, "255", "001", "Ukraine", Decimal("0.02"),
                                 utcnow().replace(year=2021), None)], account_id=who.account_id)
    assert await cost() == "0.020"  # imported in this process: no wait

    prices = tmp_path / "prices.csv"
    prices.write_text("mcc,mnc,country,rate,start_date,end_date\n255,01,Ukraine,0.03,2022-01-01,\n")
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("tikosms")), "--database-url", database_url,
         "rates", "import", str(prices), "--account", str(who.account_id)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setattr(rates, "REFRESH_SECONDS", 0.0)  # as if 5 s had passed
    assert await cost() == "0.030"  # the latest start wins


async def test_concurrent_sends_never_overdraw(db: Database, client: httpx.AsyncClient) -> None:
    await add_rates(db)
    who = await make_customer(db, balance="1.00")  # room for 22 sends at 0.045

    async def send(i: int) -> httpx.Response:
        return await client.post("/v1/message", headers=who.headers, json={
            "from": "Shop", "to": f"38050{1000000 + i}", "message": "hi"})

    answers = await asyncio.gather(*(send(i) for i in range(40)))
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 22
    assert codes.count(402) == 18
    assert await balance(client, who) == Decimal("1.00") - Decimal("0.045") * 22

    # the ledger: the opening top-up, then one reserve per accepted send, each with its
    # campaign and the balance it left; its sum is the balance
    from sqlalchemy import select

    from tikosms.db.models import LedgerEntry

    async with db.connect() as conn:
        ledger = (await conn.execute(select(LedgerEntry).where(
            LedgerEntry.account_id == who.account_id).order_by(LedgerEntry.id))).all()
    assert [e.reason for e in ledger] == ["topup"] + ["reserve"] * 22
    assert {e.campaign_id for e in ledger[1:]} == {
        r.json()["campaign_id"] for r in answers if r.status_code == 200}
    running = Decimal("1.00")
    for entry in ledger[1:]:
        assert entry.amount == Decimal("-0.045")
        running += entry.amount
        assert entry.balance_after == running
    assert sum(e.amount for e in ledger) == await balance(client, who)
    # the refused sends left nothing behind (in a batch, rows are written before the reserve)
    from tikosms.db.models import Campaign, Part

    async with db.connect() as conn:
        campaigns = (await conn.execute(select(Campaign.id).where(
            Campaign.account_id == who.account_id))).scalars().all()
        parts = (await conn.execute(select(Part.campaign_id).where(
            Part.account_id == who.account_id))).scalars().all()
    assert sorted(campaigns) == sorted(parts) == sorted(e.campaign_id for e in ledger[1:])


async def test_the_single_send_path_answers_other_methods_and_bad_bodies_in_the_envelope(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    """POST /v1/message is served ahead of FastAPI's routing; everything else about the path
    still behaves as the rest of the API."""
    r = await client.get("/v1/message", headers=customer.headers)
    assert r.status_code == 405
    assert r.json() == {"success": False, "error": "Method not allowed.", "code": "http_error"}
    r = await client.post("/v1/message", headers=customer.headers, content=b"{not json")
    assert r.status_code == 422
    assert r.json()["success"] is False and r.json()["error"] == (
        "The request body is not valid JSON.")
    r = await client.post("/v1/message/", headers=customer.headers, json={})
    # not the send path: FastAPI's own answer, a redirect to the path without the slash
    assert r.status_code == 307 and r.headers["location"].endswith("/v1/message")
    spec = (await client.get("/openapi.json")).json()
    assert "post" in spec["paths"]["/v1/message"]


async def test_cached_rates_follow_the_window_in_force(db: Database) -> None:
    """The rate cache keeps the rows, and the row in force changes when a window starts or
    ends, as when the price list is read afresh."""
    from datetime import timedelta

    from tikosms.db.types import utcnow
    from tikosms.rates.service import RateRow, cached_rate_book

    now = utcnow()
    await add_rates(db, [
        RateRow(None, "255", "001", "Ukraine", Decimal("0.04"), now - timedelta(days=1), None),
        RateRow(None, "255", "001", "Ukraine", Decimal("0.05"), now + timedelta(hours=1),
                now + timedelta(hours=2)),
    ])
    async with db.connect() as conn:
        async def price(at: timedelta) -> Decimal | None:
            rate = (await cached_rate_book(conn, 1, "255", now + at)).find("255", "01")
            return None if rate is None else rate.rate

        assert await price(timedelta(0)) == Decimal("0.04")
        assert await price(timedelta(minutes=61)) == Decimal("0.05")  # the later start wins
        assert await price(timedelta(minutes=121)) == Decimal("0.04")  # its window has ended
        assert await price(timedelta(minutes=61)) == Decimal("0.05")  # a clock set back


async def test_a_revoked_token_racing_for_a_key_another_token_took_gets_401(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Two tokens of one account send with the same Idempotency-Key in one batch; the second
    was revoked after it was cached. It must get 401, never the first one's stored answer."""
    from tikosms.accounts import service as accounts

    await add_rates(db)
    who = await make_customer(db)
    body = {"from": "Shop", "to": "380501234567", "message": "hi"}
    for attempt in range(10):
        async with db.begin() as conn:
            token, token_id = await accounts.create_token(conn, who.account_id)
        revoked = {"Authorization": f"Bearer {token}"}
        assert (await client.post("/v1/message", headers=revoked, json=body)).status_code == 200
        async with db.begin() as conn:
            await accounts.revoke_token(conn, token_id)  # still in the API's token cache
        key = {"Idempotency-Key": f"order-{attempt}"}
        first, second = await asyncio.gather(
            client.post("/v1/message", headers={**who.headers, **key}, json=body),
            client.post("/v1/message", headers={**revoked, **key},
                        json={**body, "message": "other" if attempt % 2 else "hi"}))
        assert first.status_code == 200, first.text
        assert second.status_code == 401, (second.status_code, second.text)



@dataclass
class Lingering:
    writer: Any  # the API's single-send SendWriter
    client: httpx.AsyncClient
    who: Customer

    async def send(self, i: int) -> httpx.Response:
        return await self.client.post("/v1/message", headers=self.who.headers, json={
            "from": "Shop", "to": f"38050{2000000 + i}", "message": "code 1234"})


@asynccontextmanager
async def lingering_api(db: Database, settings: Settings) -> AsyncIterator[Lingering]:
    """An API whose send writer lingers 50 ms, with a customer of 10.00."""
    await add_rates(db)
    who = await make_customer(db, balance="10.00")
    app = create_app(settings.model_copy(update={"send_linger_seconds": 0.05}), db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://tikosms.test") as client:
        try:
            yield Lingering(app.state.send_writers["message"], client, who)
        finally:
            await app.state.parts_signal.close()  # a wake-up in flight, before the db goes


async def test_a_stream_of_single_sends_is_written_in_fewer_transactions_and_a_lone_one_at_once(
        db: Database, settings: Settings) -> None:
    """The send writer's linger: a send that comes alone is written at once; sends that come
    closer together than the linger wait for each other (fewer transactions, fewer round
    trips), and each is still charged and answered on its own."""
    async with lingering_api(db, settings) as api:
        writer, send = api.writer, api.send
        assert (await send(0)).status_code == 200
        assert (writer.batches, writer.lingered) == (1, 0)  # alone: no wait
        tasks = []
        for i in range(1, 41):  # one every 5 ms: a stream
            tasks.append(asyncio.create_task(send(i)))
            await asyncio.sleep(0.005)
        answers = await asyncio.gather(*tasks)
        assert [r.status_code for r in answers] == [200] * 40
        assert writer.lingered > 0
        assert writer.batches < 1 + 40 - 10  # the later sends of the stream went together
        assert await balance(api.client, api.who) == Decimal("10.00") - Decimal("0.045") * 41


async def test_a_client_sending_one_request_at_a_time_is_not_kept_waiting_by_the_linger(
        db: Database, settings: Settings) -> None:
    """A client that waits for each answer before its next send comes as often as a stream,
    but no other send can join its wait: after a few lingers that gathered nothing, its sends
    are written at once (one probe now and then)."""
    async with lingering_api(db, settings) as api:
        writer = api.writer
        for i in range(60):
            r = await api.send(i)
            assert r.status_code == 200, r.text
        assert writer.batches == 60  # nothing to group: one at a time
        assert 0 < writer.lingered <= 12  # a few fruitless lingers, then a probe per 16
