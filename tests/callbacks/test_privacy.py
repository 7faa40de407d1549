"""What the callback logs may say (issue 9 item 6): host, path and status, never the URL's
query string, the signing secret, or the payload's number and text."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import make_customer
from tikosms.callbacks.dispatcher import CallbackDispatcher, describe_url, host_of
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import Account
from tikosms.db.types import utcnow

NUMBER = "380509876543"
TOKEN = "tok-s3cr3t-in-query"


@pytest.mark.parametrize(("url", "shown"), [
    # the query string and the fragment go
    (f"https://hooks.example.com/sms/dlr?token={TOKEN}", "https://hooks.example.com/sms/dlr"),
    ("https://hooks.example.com:8443/a#frag", "https://hooks.example.com:8443/a"),
    # user info goes too (refused at send time, but never logged)
    ("https://user:pw@hooks.example.com/x", "https://hooks.example.com/x"),
    # a URL that cannot be parsed is not repeated
    ("http://hooks.example.com:99999/x?t=1", "(invalid URL)"),
])
def test_a_logged_url_keeps_only_scheme_host_port_and_path(url: str, shown: str) -> None:
    assert describe_url(url) == shown


@pytest.mark.parametrize(("url", "host"), [
    # one host: the same scheme, name and port, whatever the path and query
    ("https://a.example.com/x?q=1", "https://a.example.com:"),
    ("https://a.example.com/y", "https://a.example.com:"),
    # another port or scheme is another destination (its own connection pool and cap)
    ("https://a.example.com:8443/x", "https://a.example.com:8443"),
    ("http://a.example.com/x", "http://a.example.com:"),
])
def test_posts_are_capped_per_scheme_host_and_port(url: str, host: str) -> None:
    assert host_of(url) == host


async def test_a_failed_callback_is_logged_without_query_secret_or_payload(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    customer = await make_customer(db)
    async with db.connect() as conn:
        secret = (await conn.execute(select(Account.signing_secret).where(
            Account.id == customer.account_id))).scalar_one()
    caplog.set_level(logging.INFO)
    async with CallbackReceiver() as receiver:
        receiver.fail_first(1, status=503)
        async with db.begin() as conn:
            await enqueue_status_events(conn, [{
                "id": 1, "account_id": customer.account_id, "campaign_id": "c",
                "message_id": "m", "to": NUMBER, "status": "DELIVRD", "part_no": 1,
                "total_parts": 1, "mccmnc": "25501", "cost": Decimal("0.05"),
                "callback_url": f"{receiver.url}?token={TOKEN}", "client_ref": "ref-private",
            }], utcnow())
        dispatcher = CallbackDispatcher(db, settings, RetryPolicy.for_tests(give_up_after=30))
        try:
            await dispatcher.start()
            await receiver.wait_for(2, timeout=10)
        finally:
            await dispatcher.stop()
    failure = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failure and f"{receiver.url} failed (HTTP 503)" in failure[0]
    for secret_thing in (TOKEN, secret, NUMBER, "ref-private"):
        assert secret_thing not in caplog.text
