"""Access lines and request ids: one line per request naming the route template, never the
query string, phone numbers or tokens; the id the client sent (or a new one) on every line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Customer
from tikosms.observability import logs


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    """The root logger as `TIKOSMS_LOG_FORMAT=json` sets it up, its lines parsed."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    logs.setup_logging("json", "INFO")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.getvalue().splitlines() if line]

    yield lines
    root.handlers[:] = saved
    root.setLevel(level)


async def test_access_line_names_the_route_not_the_query(
        client: httpx.AsyncClient, customer: Customer,
        json_lines: Callable[[], list[dict[str, object]]]) -> None:
    await client.get("/v1/get_messages?to=380501234567", headers=customer.headers)
    [line] = [x for x in json_lines() if x["logger"] == "tikosms.access"]
    assert line["route"] == "/v1/get_messages" and line["method"] == "GET"
    text = json.dumps(line)
    assert "380501234567" not in text and customer.token not in text


async def test_a_client_request_id_is_echoed_and_logged(
        client: httpx.AsyncClient, customer: Customer,
        json_lines: Callable[[], list[dict[str, object]]]) -> None:
    r = await client.get("/v1/balance", headers={**customer.headers, "X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    [line] = [x for x in json_lines() if x["logger"] == "tikosms.access"]
    assert line["request_id"] == "abc-123" and line["status"] == 200


async def test_the_single_send_path_gets_a_request_id_and_an_access_line(
        client: httpx.AsyncClient, customer: Customer,
        json_lines: Callable[[], list[dict[str, object]]]) -> None:
    r = await client.post("/v1/message", headers=customer.headers, json={
        "from": "TikoSMS", "to": "+380501234567", "message": "Your code is 4321"})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    [line] = [x for x in json_lines() if x["logger"] == "tikosms.access"]
    assert line["request_id"] == rid and line["route"] == "/v1/message"
    assert "380501234567" not in json.dumps(line) and "4321" not in json.dumps(line)


async def test_a_line_logged_while_serving_carries_the_request_id(
        client: httpx.AsyncClient,
        json_lines: Callable[[], list[dict[str, object]]]) -> None:
    app = client._transport.app  # type: ignore[attr-defined]

    @app.get("/test-logs")
    async def logs_something() -> dict[str, bool]:
        logging.getLogger("tikosms.test").info("inside the request")
        return {"ok": True}

    await client.get("/test-logs", headers={"X-Request-ID": "r-1"})
    [inside] = [x for x in json_lines() if x["logger"] == "tikosms.test"]
    assert inside["request_id"] == "r-1"


@pytest.mark.parametrize("header", [
    b"x" * 200,  # too long
    b"a b",  # a space
    b"\xff\xfe",  # not ASCII
])
def test_an_odd_request_id_is_replaced(header: bytes) -> None:
    assert logs.new_request_id(header) != header.decode("latin-1")
