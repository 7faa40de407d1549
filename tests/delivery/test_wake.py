"""How an accepted send wakes the workers of other processes (PostgreSQL LISTEN/NOTIFY): a
campaign's notification says so, so that the next claim looks up the accounts with due campaign
parts at once; a single send's does not (the claim then needs no such look-up)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Customer
from tikosms.db.engine import Database
from tikosms.delivery.notify import PartsListener


async def _next(flags: list[bool], seen: int) -> bool:
    """The next notification after the first `seen` (bounded wait: a lost one fails the test)."""
    for _ in range(500):
        if len(flags) > seen:
            return flags[seen]
        await asyncio.sleep(0.02)
    raise AssertionError("no notification came")


async def test_a_campaign_notifies_as_such_and_a_single_send_does_not(
        client: httpx.AsyncClient, customer: Customer, db: Database) -> None:
    if not db.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    flags: list[bool] = []
    listener = PartsListener(db.url, flags.append)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        await _next(flags, 0)  # on connecting: "something may have been accepted meanwhile"
        seen = len(flags)
        r = await client.post("/v1/message", headers=customer.headers, json={
            "from": "MySender", "to": "+380501234567", "message": "Your OTP is 1234"})
        assert r.status_code == 200, r.text
        assert await _next(flags, seen) is False
        seen = len(flags)
        r = await client.post("/v1/messages", headers=customer.headers, json={
            "from": "MyBrand", "message": "Big sale today!",
            "recipients": ["380501234567", "380671234567"]})
        assert r.status_code == 200, r.text
        assert await _next(flags, seen) is True
    finally:
        await listener.stop()
