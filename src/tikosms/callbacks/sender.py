"""POSTing one callback over HTTP and reporting how it went.

`CallbackSender` holds one `aiohttp.ClientSession` for the life of the worker: connections to
a customer's endpoint are pooled and kept alive between callbacks, and at most
`limit_per_host` requests go to one host at a time, so a burst of delivery reports does not
open a connection per report (nor flood a small receiver).

`post` never raises for what the network or the receiver does: every outcome is a
`DeliveryAttempt`, and the dispatcher decides from it (any 2xx is success; anything else is
retried under the retry policy). Redirects are not followed (the Standard Webhooks advice: the
customer should fix the URL), so a 3xx is a failure that keeps its status.

Unless `allow_private` is set (development and tests), the sender refuses to connect to
internal addresses, checking the very addresses that its connector resolves (see
`tikosms.callbacks.ssrf`): a DNS answer that changes between the dispatcher's own check and the
connection cannot lead the request inside.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from tikosms.callbacks.ssrf import CallbackUrlRefused, refusal_reason

DEFAULT_TIMEOUT = 10.0  # seconds for a whole attempt: connect, send, answer
DEFAULT_LIMIT = 100  # connections open at once, all hosts together
DEFAULT_LIMIT_PER_HOST = 10  # connections open at once to one host (scheme, host, port)
DEFAULT_USER_AGENT = "TikoSMS-Webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024  # read at most this much of an answer; its content is not used


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """The outcome of one POST: `ok` for any 2xx; `status` when an answer came back at all;
    `error` one readable line when not ok; `duration_ms` wall time of the attempt."""

    ok: bool
    status: int | None
    error: str | None
    duration_ms: float


class CallbackSender:
    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        limit: int = DEFAULT_LIMIT,
        limit_per_host: int = DEFAULT_LIMIT_PER_HOST,
        allow_private: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.allow_private = allow_private
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._user_agent = user_agent
        # Created on first use, inside the running event loop, as aiohttp requires.
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def __aenter__(self) -> CallbackSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryAttempt:
        """POST `body` with `headers` to `url` once; never raises for network errors."""
        started = time.perf_counter()
        try:
            if not self.allow_private:
                # aiohttp connects to an IP literal without asking the resolver: check it here.
                _refuse_internal_literal(url)
            session = self._get_session()
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                # The status decides; a body cut short (or too slow) changes nothing.
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                    await _read_some(response)
        except CallbackUrlRefused as exc:
            return _failed(started, None, exc.reason)
        except TimeoutError:
            return _failed(started, None, f"timeout after {self.timeout:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return _failed(started, None, _describe(exc))
        if 200 <= status < 300:
            return DeliveryAttempt(True, status, None, _elapsed_ms(started))
        if 300 <= status < 400:
            return _failed(started, status, f"HTTP {status}: redirect not followed")
        return _failed(started, status, f"HTTP {status}")

    async def close(self) -> None:
        """Close pooled connections. Idempotent; the sender cannot be used afterwards."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("CallbackSender is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                resolver=None if self.allow_private else _PublicOnlyResolver(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": self._user_agent},
                # Never route through a proxy taken from the environment: the proxy would
                # resolve the host itself, out of reach of the address check.
                trust_env=False,
                # No cookies: one receiver's Set-Cookie must not ride on later callbacks, nor
                # the jar grow with every customer's host.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session


class _PublicOnlyResolver(AbstractResolver):
    """The default resolver, refusing every name with an internal address among its answers."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = refusal_reason(result["host"].split("%", 1)[0])
            if reason is not None:
                raise CallbackUrlRefused(
                    f"callback refused: {host} resolves to an internal address: {reason}"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


def _refuse_internal_literal(url: str) -> None:
    reason = _literal_refusal(url)
    if reason is not None:
        raise CallbackUrlRefused(f"callback refused: {reason}")


@functools.lru_cache(maxsize=4096)  # a customer's URL is posted to again and again
def _literal_refusal(url: str) -> str | None:
    """Why the URL's host, an internal IP literal, is refused; None for a name or a public
    address (the resolver checks names)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None  # aiohttp reports the bad URL
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: the resolver checks it
    return refusal_reason(address)


async def _read_some(response: aiohttp.ClientResponse) -> None:
    """Read the answer's body up to MAX_RESPONSE_BYTES, so that a short answer leaves the
    connection reusable; a longer one is dropped with its connection when released."""
    remaining = MAX_RESPONSE_BYTES
    while remaining > 0 and not response.content.at_eof():  # a short answer: one read
        chunk = await response.content.read(remaining)
        if not chunk:
            return
        remaining -= len(chunk)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return f"connection refused by {exc.host}:{exc.port}"
        return f"cannot connect to {exc.host}:{exc.port}: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected without answering"
    # These two would repeat the whole URL, query string included (it may carry the
    # customer's own token): the error is recorded and logged, the URL is not.
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status}, {exc.message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _failed(started: float, status: int | None, error: str) -> DeliveryAttempt:
    return DeliveryAttempt(False, status, error, _elapsed_ms(started))


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
