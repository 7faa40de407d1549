import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from tests.callbacks.receiver import CallbackReceiver
from tikosms.callbacks import signing
from tikosms.callbacks.sender import CallbackSender, DeliveryAttempt

BODY = json.dumps({"event": "message.status", "status": "DELIVRD"}).encode()


@pytest.fixture
async def sender() -> AsyncIterator[CallbackSender]:
    # The receiver lives on loopback, which only a sender allowing private hosts may call.
    async with CallbackSender(allow_private=True, timeout=2.0) as sender:
        yield sender


def signed_headers(secret: str, event_id: str = "evt_1") -> dict[str, str]:
    return signing.headers(secret, event_id, int(time.time()), BODY)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_2xx_is_ok(sender: CallbackSender, callback_receiver: CallbackReceiver) -> None:
    attempt = await sender.post(
        callback_receiver.url, BODY, signed_headers(signing.generate_secret())
    )
    assert attempt.ok
    assert attempt.status == 200
    assert attempt.error is None
    assert attempt.duration_ms > 0


@pytest.mark.parametrize("status", [201, 202, 204, 299])
async def test_any_2xx_is_ok(
    status: int, sender: CallbackSender, callback_receiver: CallbackReceiver
) -> None:
    callback_receiver.answer(status)
    attempt = await sender.post(callback_receiver.url, BODY, {})
    assert attempt == DeliveryAttempt(True, status, None, attempt.duration_ms)


@pytest.mark.parametrize("status", [400, 404, 410, 429, 500, 503])
async def test_other_statuses_are_not_ok(
    status: int, sender: CallbackSender, callback_receiver: CallbackReceiver
) -> None:
    callback_receiver.answer(status)
    attempt = await sender.post(callback_receiver.url, BODY, {})
    assert not attempt.ok
    assert attempt.status == status
    assert attempt.error == f"HTTP {status}"


async def test_500_then_200_on_the_next_attempt(
    sender: CallbackSender, callback_receiver: CallbackReceiver
) -> None:
    callback_receiver.fail_first(1)
    first = await sender.post(callback_receiver.url, BODY, {})
    second = await sender.post(callback_receiver.url, BODY, {})
    assert (first.ok, first.status) == (False, 500)
    assert (second.ok, second.status) == (True, 200)


async def test_redirect_is_not_followed_and_not_ok(
    sender: CallbackSender, callback_receiver: CallbackReceiver
) -> None:
    callback_receiver.answer(302, path="/old")
    attempt = await sender.post(callback_receiver.url_for("/old"), BODY, {})
    assert not attempt.ok
    assert attempt.status == 302
    assert attempt.error is not None and "redirect" in attempt.error
    assert [request.path for request in callback_receiver.requests] == ["/old"]


async def test_refused_connection_is_not_ok(sender: CallbackSender, closed_port: int) -> None:
    attempt = await sender.post(f"http://127.0.0.1:{closed_port}/cb", BODY, {})
    assert not attempt.ok
    assert attempt.status is None
    assert attempt.error == f"connection refused by 127.0.0.1:{closed_port}"


async def test_timeout_is_not_ok_and_says_so() -> None:
    async with (
        CallbackReceiver(delay=5.0) as slow_receiver,
        CallbackSender(allow_private=True, timeout=0.2) as sender,
    ):
        attempt = await sender.post(slow_receiver.url, BODY, {})
    assert not attempt.ok
    assert attempt.status is None
    assert attempt.error == "timeout after 0.2s"
    assert 150 <= attempt.duration_ms < 2000


def test_the_default_timeout_is_ten_seconds() -> None:
    assert CallbackSender().timeout == 10.0


async def test_unresolvable_host_is_not_ok(sender: CallbackSender) -> None:
    # `.invalid` is reserved (RFC 2606): it never resolves, with or without a network.
    attempt = await sender.post("http://hooks.invalid/cb", BODY, {})
    assert not attempt.ok
    assert attempt.status is None
    assert attempt.error is not None and "hooks.invalid" in attempt.error


async def test_the_receiver_sees_body_and_headers_that_verify(
    sender: CallbackSender, callback_receiver: CallbackReceiver
) -> None:
    secret = signing.generate_secret()
    await sender.post(callback_receiver.url, BODY, signed_headers(secret, "evt_42"))
    [received] = await callback_receiver.wait_for(1)
    assert received.method == "POST"
    assert received.body == BODY
    assert received.json == {"event": "message.status", "status": "DELIVRD"}
    assert received.event_id == "evt_42"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"].startswith("TikoSMS")
    assert signing.verify(secret, received.headers, received.body)
    assert not signing.verify(signing.generate_secret(), received.headers, received.body)


async def test_connections_are_kept_alive_between_callbacks(
    sender: CallbackSender, callback_receiver: CallbackReceiver
) -> None:
    for _ in range(3):
        assert (await sender.post(callback_receiver.url, BODY, {})).ok
    assert len({request.peer_port for request in callback_receiver.requests}) == 1


async def test_limit_per_host_bounds_parallel_connections() -> None:
    async with (
        CallbackReceiver(delay=0.1) as receiver,
        CallbackSender(allow_private=True, limit_per_host=2) as sender,
    ):
        attempts = await asyncio.gather(*(sender.post(receiver.url, BODY, {}) for _ in range(6)))
    assert all(attempt.ok for attempt in attempts)
    assert len({request.peer_port for request in receiver.requests}) == 2


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",  # loopback literal: aiohttp never asks the resolver for it
        "[::1]",  # IPv6 loopback literal
        "localhost",  # a name: refused by the connector's resolver
    ],
)
async def test_a_sender_without_allow_private_refuses_internal_hosts(
    host: str, callback_receiver: CallbackReceiver
) -> None:
    url = callback_receiver.url.replace("127.0.0.1", host)
    async with CallbackSender() as sender:
        attempt = await sender.post(url, BODY, {})
    assert not attempt.ok
    assert attempt.status is None
    assert attempt.error is not None and "loopback" in attempt.error
    assert callback_receiver.requests == []


async def test_a_closed_sender_cannot_post() -> None:
    sender = CallbackSender(allow_private=True)
    await sender.close()
    await sender.close()  # idempotent
    with pytest.raises(RuntimeError):
        await sender.post("http://127.0.0.1:9/cb", BODY, {})



@contextlib.asynccontextmanager
async def _answering(handle: Callable[[web.Request], Awaitable[web.Response]]
                     ) -> AsyncIterator[int]:
    """A receiver on 127.0.0.1 answering POST /cb with `handle`; its port."""
    app = web.Application()
    app.router.add_post("/cb", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_a_receivers_cookie_never_rides_on_later_callbacks(sender: CallbackSender) -> None:
    """A webhook is not a browser session: a Set-Cookie from one answer (one customer's
    receiver) is not sent back on the next POST."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "from-the-receiver")
        return response

    async with _answering(handle) as port:
        for _ in range(2):
            # a name, not an IP literal: aiohttp's jar keeps no cookie of an IP host anyway
            attempt = await sender.post(f"http://localhost:{port}/cb", BODY, {})
            assert attempt.ok
    assert seen == [None, None]


async def test_an_answer_with_a_broken_encoding_still_counts_by_its_status(
    sender: CallbackSender,
) -> None:
    """The answer's body is never used: one that claims gzip and is not gzip is a 200 all
    the same, not an error to retry."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"not gzip at all", headers={"Content-Encoding": "gzip"})

    async with _answering(handle) as port:
        attempt = await sender.post(f"http://127.0.0.1:{port}/cb", BODY, {})
    assert attempt.ok and attempt.status == 200
