"""A real HTTP endpoint for callback tests: what a customer's webhook receiver would be.

    async with CallbackReceiver() as receiver:
        receiver.fail_first(2)                  # answer 500 to the first two requests
        ...                                     # make the gateway POST to receiver.url
        received = await receiver.wait_for(3)   # returns as soon as the third one is in
        assert received[2].json["status"] == "DELIVRD"

It listens on 127.0.0.1 on a free port, accepts POSTs on any path, records every request and
answers 200 unless told otherwise. Waiting is event based: `wait_for` wakes on each request.
Callers that send to it must allow private hosts (it lives on loopback).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ReceivedCallback:
    """One request as the receiver saw it, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # exactly as received: signatures are checked on these bytes
    json: Any  # the parsed body, or None when it is not JSON
    received_at: datetime  # UTC
    peer_port: int  # the client's source port: the same port means a reused connection
    answered: int  # the status code the receiver sent back

    @property
    def event_id(self) -> str | None:
        return self.headers.get("webhook-id")


class CallbackReceiver:
    def __init__(self, *, status: int = 200, delay: float = 0.0) -> None:
        self.status = status  # the answer when no failure is pending
        self.delay = delay  # seconds to wait before answering (for timeout tests)
        self.requests: list[ReceivedCallback] = []
        self._failures: deque[int] = deque()  # statuses still to answer, any path
        self._path_failures: dict[str, deque[int]] = {}
        self._path_status: dict[str, int] = {}
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def __aenter__(self) -> CallbackReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """A callback URL on this receiver (path `/callbacks`)."""
        return self.url_for("/callbacks")

    def url_for(self, path: str) -> str:
        if self._port is None:
            raise RuntimeError("the receiver is not started")
        return f"http://{HOST}:{self._port}{path}"

    def fail_first(self, count: int, *, status: int = 500, path: str | None = None) -> None:
        """Answer `status` to the next `count` requests (to `path` only, when given)."""
        queue = self._failures if path is None else self._path_failures.setdefault(path, deque())
        queue.extend([status] * count)

    def answer(self, status: int, *, path: str | None = None) -> None:
        """Answer `status` from now on (to `path` only, when given)."""
        if path is None:
            self.status = status
        else:
            self._path_status[path] = status

    def on_path(self, path: str) -> list[ReceivedCallback]:
        return [request for request in self.requests if request.path == path]

    # A timeout argument (ASYNC109) keeps the call sites short: `await receiver.wait_for(3)`.
    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedCallback]:  # noqa: ASYNC109
        """Wait until at least `count` requests have arrived; return all received so far."""
        try:
            async with asyncio.timeout(timeout):
                async with self._arrived:
                    await self._arrived.wait_for(lambda: len(self.requests) >= count)
        except TimeoutError:
            raise TimeoutError(
                f"expected {count} callback(s) within {timeout}s, got {len(self.requests)}"
            ) from None
        return list(self.requests)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Bind the socket here so the free port the system picks is known before serving.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._closing.set()  # releases handlers still delaying their answer
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self._next_status(request.path)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = ReceivedCallback(
            method=request.method,
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            json=_parse_json(body),
            received_at=datetime.now(UTC),
            peer_port=peer[1] if peer else 0,
            answered=status,
        )
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        if self.delay > 0:
            # Not a sleep to wait for something: the delay is the behaviour under test.
            # Stopping the receiver ends it at once.
            try:
                async with asyncio.timeout(self.delay):
                    await self._closing.wait()
            except TimeoutError:
                pass
        headers = {"Location": self.url_for("/moved")} if 300 <= status < 400 else None
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=headers)

    def _next_status(self, path: str) -> int:
        path_failures = self._path_failures.get(path)
        if path_failures:
            return path_failures.popleft()
        if self._failures:
            return self._failures.popleft()
        return self._path_status.get(path, self.status)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
