"""GET /v1/inbound and /v1/opt-outs over the API, and the send path's refusal of a recipient
who opted out (single send: 422 `opted_out`; campaign: left out and listed)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Customer, make_customer
from tests.inbound.helpers import HANDSET, OTHER_HANDSET, SHORT_CODE, assign, mo_pdus
from tikosms.db.engine import Database
from tikosms.inbound.optouts import MSG_OPTED_OUT
from tikosms.inbound.service import InboundReceiver


async def receive(db: Database, text: str, **kwargs: object) -> None:
    receiver = InboundReceiver(db, 3600)
    for pdu in mo_pdus(text, **kwargs):  # type: ignore[arg-type]
        await receiver.handle(pdu)


async def send(client: httpx.AsyncClient, who: Customer, to: str = HANDSET,
               sender: str = SHORT_CODE) -> httpx.Response:
    return await client.post("/v1/message", headers=who.headers, json={
        "from": sender, "sender_type": "Shortcode", "to": to, "message": "Your code is 1234"})


async def test_inbound_lists_the_accounts_messages_newest_first(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    for text in ("first", "second", "third"):
        await receive(db, text)
    r = await client.get("/v1/inbound", headers=customer.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["text"] for m in body["data"]] == ["third", "second", "first"]
    first = body["data"][-1]
    assert set(first) == {"inbound_id", "from", "to", "text", "encoding", "parts", "keyword",
                          "opt_out", "received_at"}
    assert (first["from"], first["to"], first["encoding"], first["parts"]) == (
        HANDSET, SHORT_CODE, "gsm7", 1)
    assert body["next_cursor"] is None


async def test_inbound_pages_with_a_cursor(client: httpx.AsyncClient, db: Database,
                                           customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    for n in range(5):
        await receive(db, f"message {n}")
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/inbound", headers=customer.headers,
                                 params=params)).json()
        seen += [m["text"] for m in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"message {n}" for n in range(4, -1, -1)]


async def test_inbound_filters(client: httpx.AsyncClient, db: Database,
                               customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    await assign(db, customer.account_id, "5566")
    await receive(db, "to the short code")
    await receive(db, "to the other", to="5566")
    r = await client.get("/v1/inbound", headers=customer.headers, params={"to": "5566"})
    assert [m["text"] for m in r.json()["data"]] == ["to the other"]
    r = await client.get("/v1/inbound", headers=customer.headers,
                         params={"since": "2100-01-01 00:00:00"})
    assert r.json()["data"] == []
    r = await client.get("/v1/inbound", headers=customer.headers,
                         params={"until": "2000-01-01T00:00:00Z"})
    assert r.json()["data"] == []
    r = await client.get("/v1/inbound", headers=customer.headers, params={"since": "yesterday"})
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"


async def test_another_account_never_sees_the_inbound(client: httpx.AsyncClient, db: Database,
                                                      customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    await assign(db, customer.account_id, SHORT_CODE)
    await receive(db, "for the owner only")
    await receive(db, "nobody's", to="1000")  # unrouted: nobody sees it
    mine = (await client.get("/v1/inbound", headers=customer.headers)).json()["data"]
    theirs = (await client.get("/v1/inbound", headers=other.headers)).json()["data"]
    assert [m["text"] for m in mine] == ["for the owner only"]
    assert theirs == []
    r = await client.get("/v1/inbound")
    assert (r.status_code, r.json()) == (401, {"error": "User not authenticated"})


async def test_a_single_send_to_an_opted_out_recipient_is_a_422(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    assert (await send(client, customer)).status_code == 200
    await receive(db, "STOP")
    r = await send(client, customer)
    assert r.status_code == 422
    assert r.json() == {"success": False, "error": MSG_OPTED_OUT, "code": "opted_out",
                        "errors": {"to": [MSG_OPTED_OUT]}}
    # another sender of the account is not what they wrote STOP to
    assert (await send(client, customer, sender="5566")).status_code == 200
    await receive(db, "start")
    assert (await send(client, customer)).status_code == 200


async def test_another_accounts_opt_out_does_not_refuse_this_account(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    await assign(db, other.account_id, SHORT_CODE)
    await receive(db, "STOP")
    assert (await send(client, customer)).status_code == 200
    assert (await send(client, other)).status_code == 422


async def test_a_campaign_leaves_opted_out_recipients_out_and_lists_them(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    await assign(db, customer.account_id, SHORT_CODE)
    await receive(db, "stopall", sender=OTHER_HANDSET)
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": SHORT_CODE, "sender_type": "Shortcode", "message": "Sale today",
        "recipients": [HANDSET, OTHER_HANDSET, "12"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["recipients"] == 1
    assert body["invalid_removed"] == 2
    assert {"index": 1, "to": OTHER_HANDSET, "error": MSG_OPTED_OUT} in body["invalid"]
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": SHORT_CODE, "sender_type": "Shortcode", "message": "Sale today",
        "recipients": [OTHER_HANDSET]})
    assert r.status_code == 422  # nobody left


async def test_opt_outs_api_add_list_remove(client: httpx.AsyncClient, db: Database,
                                            customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    r = await client.post("/v1/opt-outs", headers=customer.headers, json={"to": f"+{HANDSET}"})
    assert r.status_code == 201, r.text
    assert r.json()["opt_out"]["to"] == HANDSET
    r = await client.post("/v1/opt-outs", headers=customer.headers, json={"to": HANDSET})
    assert (r.status_code, r.json()["created"]) == (200, False)
    await client.post("/v1/opt-outs", headers=customer.headers,
                      json={"to": OTHER_HANDSET, "from": SHORT_CODE})
    listed = (await client.get("/v1/opt-outs", headers=customer.headers)).json()["data"]
    assert [(o["to"], o["from"], o["source"]) for o in listed] == [
        (HANDSET, None, "api"), (OTHER_HANDSET, SHORT_CODE, "api")]
    assert (await client.get("/v1/opt-outs", headers=other.headers)).json()["data"] == []
    assert (await send(client, customer)).json()["code"] == "opted_out"
    assert (await client.delete(f"/v1/opt-outs/{HANDSET}",
                                headers=other.headers)).status_code == 404
    r = await client.delete(f"/v1/opt-outs/{HANDSET}", headers=customer.headers)
    assert (r.status_code, r.json()["removed"]) == (200, 1)
    assert (await send(client, customer)).status_code == 200


async def test_opt_outs_pages(client: httpx.AsyncClient, customer: Customer) -> None:
    numbers = [f"38050000000{n}" for n in range(5)]
    for number in numbers:
        await client.post("/v1/opt-outs", headers=customer.headers, json={"to": number})
    seen: list[str] = []
    cursor = None
    while True:
        body = (await client.get("/v1/opt-outs", headers=customer.headers, params={
            "limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        seen += [o["to"] for o in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers


@pytest.mark.parametrize("body", [{}, {"to": 123}, {"to": "abc"}, {"to": HANDSET, "from": "x"}])
async def test_opt_out_refused_bodies(client: httpx.AsyncClient, customer: Customer,
                                      body: dict[str, object]) -> None:
    r = await client.post("/v1/opt-outs", headers=customer.headers, json=body)
    assert r.status_code == 422 and r.json()["success"] is False


async def test_the_openapi_document_lists_the_additions(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"get"} <= set(paths["/v1/inbound"])
    assert {"get", "post"} <= set(paths["/v1/opt-outs"])
    assert "delete" in paths["/v1/opt-outs/{number}"]
