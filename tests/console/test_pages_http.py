"""The console's pages over plain HTTP (both databases): search, a part's whole history with
its callbacks, cancel, carrier edits, the traffic series."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from sqlalchemy import insert, select, update

from tests.conftest import Customer
from tests.console.conftest import csrf_of, login, make_operator
from tikosms.accounts import repository as accounts_repo
from tikosms.console import reads, rollup
from tikosms.db.engine import Database
from tikosms.db.models import CallbackAttempt, CallbackEvent, Campaign, CarrierRow, Part
from tikosms.db.types import utcnow
from tikosms.delivery import heartbeats_repo, slots_repo
from tikosms.delivery.heartbeats_repo import Beat


async def _logged_in(client: httpx.AsyncClient, db: Database) -> str:
    await make_operator(db)
    await login(client)
    return csrf_of((await client.get("/admin/carriers")).text)


async def _send(client: httpx.AsyncClient, customer: Customer, **extra: object) -> dict:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "message": "code 1234", "to": "380501234567", **extra})
    assert r.status_code == 200, r.text
    return r.json()


async def test_search_by_client_ref_finds_the_part(client: httpx.AsyncClient, db: Database,
                                                   customer: Customer) -> None:
    await _logged_in(client, db)
    await _send(client, customer, client_ref="ref-1")
    await _send(client, customer, client_ref="ref-2")
    page = await client.get("/admin/messages", params={"q": "ref-2"})
    assert "ref-2" in page.text and "ref-1" not in page.text


async def test_search_by_number_with_plus_finds_the_part(client: httpx.AsyncClient,
                                                         db: Database,
                                                         customer: Customer) -> None:
    await _logged_in(client, db)
    await _send(client, customer, client_ref="by-number")
    page = await client.get("/admin/messages", params={"q": "+380 50 123 4567"})
    assert "by-number" in page.text


async def test_part_page_shows_callbacks_and_their_answers(client: httpx.AsyncClient,
                                                           db: Database,
                                                           customer: Customer) -> None:
    await _logged_in(client, db)
    await _send(client, customer)
    now = utcnow()
    async with db.begin() as conn:
        part_id = (await conn.execute(select(Part.id))).scalar_one()
        event_id = (await conn.execute(insert(CallbackEvent).values(
            event_id="e-1", part_id=part_id, account_id=customer.account_id,
            url="https://hooks.example/dlr?key=hidden", payload=json.dumps({"status": "DELIVRD"}),
            state="pending", attempts=1, next_attempt_at=now, created_at=now,
        ).returning(CallbackEvent.id))).scalar_one()
        await conn.execute(insert(CallbackAttempt).values(
            event_id=event_id, attempted_at=now, status_code=502, error="bad gateway",
            duration_ms=12))
    page = await client.get(f"/admin/parts/{part_id}")
    assert "502" in page.text and "bad gateway" in page.text
    assert "hooks.example/dlr" in page.text and "key=hidden" not in page.text


async def test_cancel_from_the_campaigns_page_refunds(client: httpx.AsyncClient, db: Database,
                                                      customer: Customer) -> None:
    csrf = await _logged_in(client, db)
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "later", "recipients": ["380501234567", "380501234568"],
        "scheduled_at": (utcnow() + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")})
    assert r.status_code == 200, r.text
    campaign_id = r.json()["campaign_id"]
    answer = await client.post(f"/admin/campaigns/{campaign_id}/cancel", data={"csrf": csrf})
    assert answer.status_code == 303 and "2+part" in answer.headers["location"]
    page = await client.get("/admin/campaigns")
    assert "canceled" in page.text


async def test_carrier_edit_changes_tps_and_keeps_the_rest(client: httpx.AsyncClient,
                                                           db: Database) -> None:
    csrf = await _logged_in(client, db)
    await client.post("/admin/carriers", data={
        "csrf": csrf, "name": "acme", "host": "127.0.0.1", "port": "2775",
        "system_id": "tiko", "password": "pw", "window": "10"})
    answer = await client.post("/admin/carriers/acme/edit", data={"csrf": csrf, "tps": "75"})
    assert "updated" in answer.headers["location"]
    async with db.connect() as conn:
        row = (await conn.execute(select(CarrierRow))).one()
    assert json.loads(row.settings) == {"tps": 75.0, "window": 10}
    assert (row.host, row.port) == ("127.0.0.1", 2775)


async def test_bad_carrier_input_is_shown_and_stores_nothing(client: httpx.AsyncClient,
                                                             db: Database) -> None:
    csrf = await _logged_in(client, db)
    answer = await client.post("/admin/carriers", data={
        "csrf": csrf, "name": "acme", "host": "127.0.0.1", "port": "99999", "system_id": "t"})
    assert answer.status_code == 303 and "err=" in answer.headers["location"]
    async with db.connect() as conn:
        assert (await conn.execute(select(CarrierRow))).first() is None


async def test_traffic_series_comes_from_the_roll_up(client: httpx.AsyncClient, db: Database,
                                                     customer: Customer) -> None:
    await _logged_in(client, db)
    await _send(client, customer)
    await rollup.run_once(db, utcnow() + timedelta(seconds=5))
    series = (await client.get("/admin/api/traffic", params={"range": "hour"})).json()
    assert sum(series["accepted"]) == 1
    assert len(series["t"]) == len(series["delivered"]) >= 60


async def test_suspended_account_cannot_send(client: httpx.AsyncClient, db: Database,
                                             customer: Customer) -> None:
    await _logged_in(client, db)
    page = await client.get(f"/admin/accounts/{customer.account_id}")
    await client.post(f"/admin/accounts/{customer.account_id}/status",
                      data={"csrf": csrf_of(page.text), "status": "suspended"})
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "Shop", "message": "hi", "to": "380501234567"})
    assert r.status_code in (401, 403), r.text


async def test_rotated_signing_secret_replaces_the_old(client: httpx.AsyncClient, db: Database,
                                                      customer: Customer) -> None:
    await _logged_in(client, db)
    async with db.connect() as conn:
        before = (await accounts_repo.get_account(conn, customer.account_id)).signing_secret
    page = await client.get(f"/admin/accounts/{customer.account_id}")
    answer = await client.post(f"/admin/accounts/{customer.account_id}/secret",
                               data={"csrf": csrf_of(page.text)})
    async with db.connect() as conn:
        after = (await accounts_repo.get_account(conn, customer.account_id)).signing_secret
    assert after != before and after.startswith("whsec_")
    assert after in answer.text  # shown on the page, not put in a URL
    assert "location" not in answer.headers


async def test_campaign_status_and_counts_come_from_the_lifecycle_roll_up(
        client: httpx.AsyncClient, db: Database, customer: Customer) -> None:
    """A page never counts a counted campaign's parts again (a 1M-part campaign takes seconds):
    it shows what the roll-up stored, and counts live only a campaign not yet reached."""
    r = await client.post("/v1/messages", headers=customer.headers, json={
        "from": "Shop", "message": "sale", "recipients": ["380501234567", "380501234568"]})
    assert r.status_code == 200, r.text
    campaign_id = r.json()["campaign_id"]
    async with db.connect() as conn:
        before = await reads.campaign(conn, campaign_id)
    assert before is not None
    assert (before["status"], before["counts"]) == ("active", {"QUEUED": 2})  # counted live
    async with db.begin() as conn:  # as the roll-up stores a finished campaign
        await conn.execute(update(Campaign).where(Campaign.id == campaign_id).values(
            counts=json.dumps({"DELIVRD": 2}), status="completed"))
    async with db.connect() as conn:
        after = await reads.campaign(conn, campaign_id)
    assert after is not None
    assert (after["status"], after["counts"], after["progress"]) == (
        "completed", {"DELIVRD": 2}, 100)


async def test_the_carriers_page_shows_who_holds_each_bind_slot(client: httpx.AsyncClient,
                                                                db: Database) -> None:
    csrf = await _logged_in(client, db)
    await client.post("/admin/carriers", data={
        "csrf": csrf, "name": "acme", "host": "127.0.0.1", "port": "2775",
        "system_id": "tiko", "password": "pw", "binds": "2"})
    now = utcnow()
    async with db.begin() as conn:  # a worker holds slot 1 (a take, as delivery.slots does)
        await heartbeats_repo.upsert(conn, Beat("gw1:4242:abc123", "gw1", 4242, ("delivery",),
                                                now, now, {}))
        assert await slots_repo.take(conn, "gw1:4242:abc123", "acme", 1, now,
                                     now + timedelta(seconds=15)) == 1
    page = (await client.get("/admin/carriers")).text
    held = page.split('data-slot="acme#1"')[1].split("</tr>")[0]
    free = page.split('data-slot="acme#2"')[1].split("</tr>")[0]
    assert "held" in held and "gw1:4242:abc123" in held and "gw1 pid 4242" in held
    assert "free" in free and "gw1" not in free
