"""Arbitrary input never gets a 500 or an answer outside the envelope, and changes nothing."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_send import balance
from tests.conftest import Customer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=10,
)
field_values = json_values | st.sampled_from(
    ["380501234567", "+380 50 123 45 67", "", "MyBrand", "😀", "2999-01-01 00:00:00",
     "http://127.0.0.1/x", "x" * 300]
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "from": field_values, "to": field_values, "message": field_values,
        "recipients": st.lists(field_values, max_size=5) | field_values,
        "callback_url": field_values, "client_ref": field_values,
        "scheduled_at": field_values, "concurrency": field_values,
        "campaign_id": field_values, "message_id": field_values,
        "page": field_values, "per_page": field_values,
    },
) | json_values

ENDPOINTS = [
    ("POST", "/v1/message"), ("POST", "/v1/messages"), ("GET", "/v1/get_messages"),
    ("GET", "/v1/get_message"), ("GET", "/v1/sms-rates"), ("GET", "/v1/balance"),
]


def assert_envelope(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code == 401:
        assert body == {"error": "User not authenticated"}
    elif r.status_code >= 400:
        assert body["success"] is False and isinstance(body["error"], str) and body["error"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies,
       query=st.dictionaries(st.sampled_from(["mccmnc", "country", "campaign_id", "message_id",
                                              "page", "per_page"]),
                             st.text(max_size=12), max_size=3))
async def test_fuzzed_requests_stay_in_the_envelope(
    client: httpx.AsyncClient, customer: Customer, endpoint: tuple[str, str],
    body: object, query: dict[str, str],
) -> None:
    method, path = endpoint
    before = await balance(client, customer)
    r = await client.request(method, path, headers=customer.headers, json=body, params=query)
    assert_envelope(r)
    if r.status_code != 200:
        assert await balance(client, customer) == before  # a refused request changes nothing


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
async def test_raw_bytes_never_break_the_send_endpoints(
    client: httpx.AsyncClient, customer: Customer, raw: bytes
) -> None:
    for path in ("/v1/message", "/v1/messages"):
        r = await client.post(path, headers={**customer.headers,
                                             "Content-Type": "application/json"}, content=raw)
        assert_envelope(r)
