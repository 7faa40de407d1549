"""Reading: balance, rates, campaign and message lists, isolation, authentication."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.conftest import Customer, make_customer
from tikosms.db.engine import Database
from tikosms.errors import MSG_CAMPAIGN_NOT_FOUND, MSG_MESSAGES_NOT_FOUND, MSG_NO_RATE_FOUND


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic abc", "Bearer "])
@pytest.mark.parametrize("path", ["/v1/balance", "/v1/get_messages", "/v1/sms-rates?mccmnc=255"])
async def test_unauthenticated_is_401_exactly_as_the_spec(client: httpx.AsyncClient,
                                                          auth: str | None, path: str) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = await client.get(path, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "User not authenticated"}


async def test_revoked_token_is_401(client: httpx.AsyncClient, db: Database) -> None:
    from tikosms.accounts import service

    async with db.begin() as conn:
        _account_id, token, token_id = await service.create_account(conn, name="x")
        await service.revoke_token(conn, token_id)
    r = await client.get("/v1/balance", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_balance_has_the_four_fields_in_the_spec_formats(client: httpx.AsyncClient,
                                                               customer: Customer) -> None:
    r = await client.get("/v1/balance", headers=customer.headers)
    assert r.status_code == 200
    assert set(r.json()) == {"balance_updated", "currency_code", "balance", "in_credit_limit"}
    assert re.fullmatch(r'.*"balance":100\.0000,.*', r.text)
    assert re.fullmatch(r"\d{4}\.\d\d\.\d\d \d\d:\d\d:\d\d", r.json()["balance_updated"])
    assert r.json()["currency_code"] == "EUR"
    assert r.json()["in_credit_limit"] == 0


@pytest.mark.parametrize(
    ("query", "mccmnc", "rate"),
    [
        ("mccmnc=255001", "255001", "0.045000"),  # 6 digits: exact network
        ("mccmnc=25501", "255001", "0.045000"),  # 5 digits: MNC normalised to 001
        ("mccmnc=255", "255", "0.060000"),  # 3 digits: the country-wide row
        ("mccmnc=255003&country=ukraine", "255003", "0.050000"),  # country matches, any case
    ],
)
async def test_sms_rates_finds_the_effective_rate(client: httpx.AsyncClient, customer: Customer,
                                                  query: str, mccmnc: str, rate: str) -> None:
    r = await client.get(f"/v1/sms-rates?{query}", headers=customer.headers)
    assert r.status_code == 200, r.text
    body = r.json()["rate"]
    assert body["mccmnc"] == mccmnc and body["rate"] == rate
    assert body["rate_end_date"] == "2100-01-01 00:00:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["rate_start_date"])


async def test_sms_rates_country_mismatch_or_unknown_is_404(client: httpx.AsyncClient,
                                                           customer: Customer) -> None:
    for query in ("mccmnc=255001&country=Poland", "mccmnc=999"):
        r = await client.get(f"/v1/sms-rates?{query}", headers=customer.headers)
        assert r.status_code == 404
        assert r.json()["error"] == MSG_NO_RATE_FOUND


@pytest.mark.parametrize("query", ["", "mccmnc=", "mccmnc=25", "mccmnc=abc", "mccmnc=2550011"])
async def test_sms_rates_missing_or_malformed_mccmnc_is_422(client: httpx.AsyncClient,
                                                           customer: Customer, query: str) -> None:
    r = await client.get(f"/v1/sms-rates?{query}", headers=customer.headers)
    assert r.status_code == 422
    assert r.json()["success"] is False


async def test_get_messages_lists_newest_first_and_filters(client: httpx.AsyncClient,
                                                           customer: Customer) -> None:
    ids = []
    for i in range(3):
        r = await client.post("/v1/message", headers=customer.headers, json={
            "from": "Shop", "to": f"38050123456{i}", "message": f"n{i}"})
        ids.append(r.json()["campaign_id"])
    listed = (await client.get("/v1/get_messages", headers=customer.headers)).json()
    assert listed["success"] is True
    assert [c["campaign_id"] for c in listed["campaigns"]] == ids[::-1]
    c = listed["campaigns"][0]
    assert c["sender"] == "Shop" and c["message"] == "n2" and c["recipients"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", c["created_at"])
    one = await client.get("/v1/get_messages", headers=customer.headers,
                           params={"campaign_id": ids[1]})
    assert [c["campaign_id"] for c in one.json()["campaigns"]] == [ids[1]]
    # the same filter given as a JSON body on the GET
    body = await client.request("GET", "/v1/get_messages", headers=customer.headers,
                                json={"campaign_id": ids[0]})
    assert [c["campaign_id"] for c in body.json()["campaigns"]] == [ids[0]]
    paged = (await client.get("/v1/get_messages", headers=customer.headers,
                              params={"page": 2, "per_page": 2})).json()
    assert paged["meta"] == {"page": 2, "per_page": 2, "total": 3}
    assert [c["campaign_id"] for c in paged["campaigns"]] == [ids[0]]


async def test_another_accounts_data_is_answered_as_missing(client: httpx.AsyncClient,
                                                            customer: Customer,
                                                            db: Database) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "to": "380501234567", "message": "secret"})
    mine = r.json()
    other = await make_customer(db, name="Other")
    a = await client.get("/v1/get_messages", headers=other.headers,
                         params={"campaign_id": mine["campaign_id"]})
    assert a.status_code == 404 and a.json()["error"] == MSG_CAMPAIGN_NOT_FOUND
    b = await client.get("/v1/get_message", headers=other.headers,
                         params={"message_id": mine["message_id"]})
    assert b.status_code == 404 and b.json()["error"] == MSG_MESSAGES_NOT_FOUND
    c = await client.get("/v1/get_message", headers=other.headers,
                         params={"campaign_id": mine["campaign_id"]})
    assert c.status_code == 404
    d = await client.post(f"/v1/campaigns/{mine['campaign_id']}/cancel", headers=other.headers)
    assert d.status_code == 404
    assert (await client.get("/v1/get_messages", headers=other.headers)).json()["campaigns"] == []


@pytest.mark.parametrize("value", ["not-a-uuid", str(uuid.uuid4())])
async def test_unknown_ids_are_404(client: httpx.AsyncClient, customer: Customer,
                                   value: str) -> None:
    r = await client.get("/v1/get_messages", headers=customer.headers,
                         params={"campaign_id": value})
    assert r.status_code == 404 and r.json()["error"] == MSG_CAMPAIGN_NOT_FOUND
    r = await client.get("/v1/get_message", headers=customer.headers,
                         params={"message_id": value})
    assert r.status_code == 404 and r.json()["error"] == MSG_MESSAGES_NOT_FOUND


async def test_get_message_without_ids_is_422(client: httpx.AsyncClient,
                                              customer: Customer) -> None:
    r = await client.get("/v1/get_message", headers=customer.headers)
    assert r.status_code == 422 and r.json()["success"] is False


async def test_unknown_path_keeps_the_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["success"] is False


async def test_openapi_document_serves_the_published_paths(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    for path in ("/v1/balance", "/v1/messages", "/v1/message", "/v1/get_messages",
                 "/v1/get_message", "/v1/sms-rates", "/v1/campaigns/{campaign_id}/cancel"):
        assert path in doc["paths"]
    example = doc["paths"]["/v1/get_message"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["example"]
    assert example["data"][0]["cost"] == "0.050"
    assert (await client.get("/docs")).status_code == 200
