"""How an accepted send wakes the delivery workers of other processes (delivery/notify.py): after
the send's commit, a notification names the accounts with new due parts and whether campaign
parts are among them, so that the workers claim by account without looking them up; and how the
workers find parts when no signal comes (the poll)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import Customer, add_rates, make_customer
from tikosms.db.engine import Database
from tikosms.db.models import Part
from tikosms.db.types import utcnow
from tikosms.delivery import notify, queue
from tikosms.delivery.notify import DueAccounts, PartsListener
from tikosms.delivery.worker import _rotated

OTP = {"from": "MySender", "to": "+380501234567", "message": "Your OTP is 1234"}


async def _next(seen: list[DueAccounts | None], count: int) -> DueAccounts | None:
    """The next notification after the first `count` (bounded wait: a lost one fails)."""
    for _ in range(500):
        if len(seen) > count:
            return seen[count]
        await asyncio.sleep(0.02)
    raise AssertionError("no notification came")


async def test_a_notification_names_the_account_and_whether_it_sent_a_campaign(
        client: httpx.AsyncClient, customer: Customer, db: Database) -> None:
    if not db.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    seen: list[DueAccounts | None] = []
    listener = PartsListener(db.url, seen.append)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        # on connecting: "something may have been accepted meanwhile: look"
        assert await _next(seen, 0) is None
        count = len(seen)
        r = await client.post("/v1/message", headers=customer.headers, json=OTP)
        assert r.status_code == 200, r.text
        assert await _next(seen, count) == {customer.account_id: notify.SINGLE}
        count = len(seen)
        r = await client.post("/v1/messages", headers=customer.headers, json={
            "from": "MyBrand", "message": "Big sale today!",
            "recipients": ["380501234567", "380671234567"]})
        assert r.status_code == 200, r.text
        assert await _next(seen, count) == {customer.account_id: notify.CAMPAIGN}
    finally:
        await listener.stop()


async def test_on_sqlite_a_send_wakes_the_worker_of_another_process_by_datagram(
        client: httpx.AsyncClient, customer: Customer, db: Database) -> None:
    """`tikosms serve` runs delivery in a process of its own: the API's commit reaches it as a
    datagram on the database's abstract socket, with the same payload as a NOTIFY."""
    if db.is_postgres:
        pytest.skip("SQLite's wake-ups (PostgreSQL has LISTEN/NOTIFY)")
    address = notify.wake_address(db.url)
    if address is None:
        pytest.skip("abstract Unix sockets are Linux's")
    seen: list[DueAccounts | None] = []
    listener = notify.WakeListener(address, seen.append)
    listener.start()
    second = notify.WakeListener(address, seen.append)  # a second worker of this database
    second.start()
    try:
        assert listener.listening and not second.listening  # it polls instead
        r = await client.post("/v1/message", headers=customer.headers, json=OTP)
        assert r.status_code == 200, r.text
        assert await _next(seen, 0) == {customer.account_id: notify.SINGLE}
        r = await client.post("/v1/messages", headers=customer.headers, json={
            "from": "MyBrand", "message": "Big sale today!",
            "recipients": ["380501234567", "380671234567"]})
        assert r.status_code == 200, r.text
        assert await _next(seen, 1) == {customer.account_id: notify.CAMPAIGN}
        import socket  # any local process can send one: a datagram not ours means "look"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"s" + b"1" * 5000, address)
        assert await _next(seen, 2) is None
    finally:
        await second.stop()
        await listener.stop()
    assert notify.wake_address(db.url.replace(".db", "-other.db")) != address


async def test_a_refused_send_signals_nothing(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_rates(db)
    if not db.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    poor = await make_customer(db, balance="0.00", credit_limit="0.00")
    seen: list[DueAccounts | None] = []
    listener = PartsListener(db.url, seen.append)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        await _next(seen, 0)
        r = await client.post("/v1/message", headers=poor.headers, json=OTP)
        assert r.status_code == 402, r.text
        await asyncio.sleep(0.3)
        assert len(seen) == 1  # only the one on connecting
    finally:
        await listener.stop()


def test_payloads_round_trip_and_an_unreadable_one_means_look() -> None:
    both = notify.SINGLE | notify.CAMPAIGN
    accounts = {12: notify.SINGLE, 57: notify.CAMPAIGN, 3: both}
    assert notify.encode(accounts) == "s3 c3 s12 c57"
    assert notify.decode(notify.encode(accounts)) == accounts
    assert notify.decode("") is None
    assert notify.decode("*") is None
    assert notify.decode("campaign") is None  # an older gateway's payload: look them up
    many = {n: notify.CAMPAIGN for n in range(100_000, 102_000)}
    assert notify.encode(many) == notify.UNKNOWN  # too long for a NOTIFY


async def test_the_due_accounts_are_found_by_kind_without_leased_or_later_parts(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_rates(db)
    singles = await make_customer(db)
    bulk = await make_customer(db)
    later = await make_customer(db)
    leased = await make_customer(db)
    for who in (singles, leased):
        r = await client.post("/v1/message", headers=who.headers, json=OTP)
        assert r.status_code == 200, r.text
    r = await client.post("/v1/messages", headers=bulk.headers, json={
        "from": "MyBrand", "message": "Sale", "recipients": ["380501234567", "380671234567"]})
    assert r.status_code == 200, r.text
    r = await client.post("/v1/messages", headers=later.headers, json={
        "from": "MyBrand", "message": "Sale", "recipients": ["380501234567"],
        "scheduled_at": (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")})
    assert r.status_code == 200, r.text
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(update(Part).where(Part.account_id == leased.account_id)
                           .values(lease_until=now + timedelta(seconds=30), lease_owner="w"))
        assert await queue.accounts_with_due_parts(conn, now) == (
            [singles.account_id], [bulk.account_id])


async def test_a_claim_touches_only_the_accounts_it_is_given_and_shares_the_room(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_rates(db)
    busy = await make_customer(db)
    quiet = await make_customer(db)
    other = await make_customer(db)
    for _ in range(6):
        r = await client.post("/v1/message", headers=busy.headers, json=OTP)
        assert r.status_code == 200, r.text
    for who in (quiet, other):
        r = await client.post("/v1/message", headers=who.headers, json=OTP)
        assert r.status_code == 200, r.text
    async with db.begin() as conn:
        result = await queue.claim(conn, "w", 4, utcnow(), 30,
                                   [busy.account_id, quiet.account_id], [])
    owners = [p.account_id for p in result.parts]
    # the quiet account's one part, and the room it left goes to the busy one
    assert sorted(owners) == sorted([quiet.account_id] + [busy.account_id] * 3)
    assert result.drained_singles == {quiet.account_id}
    assert other.account_id not in owners  # not named: not touched


async def test_more_accounts_than_room_get_one_part_each_and_the_rest_wait_their_turn(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_rates(db)
    customers = [await make_customer(db) for _ in range(4)]
    for who in customers:
        for _ in range(3):
            r = await client.post("/v1/message", headers=who.headers, json=OTP)
            assert r.status_code == 200, r.text
    ids = [c.account_id for c in customers]
    async with db.begin() as conn:
        result = await queue.claim(conn, "w", 2, utcnow(), 30, ids, [])
    assert sorted(p.account_id for p in result.parts) == sorted(ids[:2])  # the first two
    assert not result.drained_singles  # each had more: none is dropped from the rotation
    # the worker rotates the order from claim to claim: every account is served in turn
    served: set[int] = set()
    for turn in range(1, 4):
        async with db.begin() as conn:
            got = await queue.claim(conn, "w", 2, utcnow(), 30, _rotated(set(ids), turn), [])
        served |= {p.account_id for p in got.parts}
    assert served == set(ids)


async def test_parts_due_later_do_not_hide_an_account_with_a_part_due_now(
        client: httpx.AsyncClient, db: Database) -> None:
    await add_rates(db)
    who = await make_customer(db)
    for _ in range(30):
        r = await client.post("/v1/message", headers=who.headers, json=OTP)
        assert r.status_code == 200, r.text
    async with db.begin() as conn:  # retries in backoff, all but the newest part
        newest = max((await conn.execute(select(Part.id))).scalars())
        await conn.execute(update(Part).where(Part.id != newest)
                           .values(due_at=utcnow() + timedelta(minutes=5)))
        assert await queue.accounts_with_due_parts(conn, utcnow()) == ([who.account_id], [])
        await conn.execute(update(Part).where(Part.id == newest)
                           .values(due_at=utcnow() + timedelta(minutes=5)))
        assert await queue.accounts_with_due_parts(conn, utcnow()) == ([], [])


async def test_a_send_is_answered_even_when_waking_the_workers_fails(
        client: httpx.AsyncClient, customer: Customer, db: Database) -> None:
    signal = client._transport.app.state.parts_signal  # type: ignore[attr-defined]

    def broken(_accounts: DueAccounts | None) -> None:
        raise RuntimeError("worker gone")

    signal.local = broken
    r = await client.post("/v1/message", headers=customer.headers, json=OTP)
    assert r.status_code == 200, r.text  # committed, so answered: a retry would send twice
    async with db.connect() as conn:
        assert len((await conn.execute(select(Part.id))).all()) == 1
