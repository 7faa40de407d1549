"""HTTP for operators: the API's middleware (request id, access line, request metrics), the
`/healthz`, `/readyz`, `/metrics` routes, and the small server `tikosms worker --health-port`
answers them on."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikosms.delivery.heartbeat import stale_after
from tikosms.observability import logs, metrics
from tikosms.observability.database import DatabaseFigures, bind_families
from tikosms.observability.health import Workers, readiness

log = logging.getLogger("tikosms.observability")

PROBES = frozenset({"/healthz", "/readyz", "/metrics", "/health"})  # access line at DEBUG
_UNMATCHED = "unmatched"  # route label of a path no route took (the path itself is unbounded)


class Observed:
    """ASGI wrapper: sets the request id (the client's X-Request-ID or a new one) for every
    log line the request causes, echoes it in the response, counts the request by route
    template and status with its duration, and logs one access line.

    `route` fixed: the single-send fast path (no routing to read the template from)."""

    def __init__(self, app: ASGIApp, route: str | None = None) -> None:
        self.app = app
        self.route = route
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header = value
                break
        rid = logs.new_request_id(header)
        token = logs.request_id.set(rid)
        rid_header = (b"x-request-id", rid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            self._done(scope, status, time.perf_counter() - started)
            logs.request_id.reset(token)

    def _done(self, scope: Scope, status: int, elapsed: float) -> None:
        route = self.route
        if route is None:
            matched = scope.get("route")
            route = getattr(matched, "path", None) or _UNMATCHED
        method = scope["method"]
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                metrics.HTTP_REQUESTS.labels(method, route, str(status)),
                metrics.HTTP_DURATION.labels(method, route))
        children[0].inc()
        children[1].observe(elapsed)
        level = logging.DEBUG if route in PROBES else logging.INFO
        if logs.access_log.isEnabledFor(level):
            logs.access_log.log(
                level, "%s %s %d %.1f ms", method, route, status, elapsed * 1000,
                extra={"method": method, "route": route, "status": status,
                       "duration_ms": round(elapsed * 1000, 2)})


def install_routes(app: Any) -> None:
    """`/healthz`, `/readyz` and `/metrics` on the API (a delivery worker the app runs,
    `app.state.worker` under `tikosms serve`, is part of its readiness and metrics)."""
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        state = request.app.state
        settings = getattr(state, "settings", None)
        workers = Workers.from_settings(settings) if settings is not None else None
        result = await readiness(getattr(state, "db", None), getattr(state, "worker", None),
                                 workers=workers)
        return _json(result.body(), 200 if result.ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text(request: Request) -> Response:
        state = request.app.state
        if getattr(state, "db_figures", None) is None:
            state.db_figures = DatabaseFigures(state.db, state.settings.metrics_database_seconds,
                                               stale_after(state.settings))
        body = await scrape(state.db_figures, getattr(state, "worker", None))
        return Response(body, media_type=CONTENT_TYPE)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def scrape(figures: DatabaseFigures | None, worker: Any = None) -> bytes:
    extra: list[Any] = []
    if figures is not None:
        try:
            extra.append(await figures.snapshot())
        except Exception as exc:  # the process's own series are still worth a scrape
            log.warning("metrics: database figures unavailable: %s", type(exc).__name__)
    if worker is not None:
        from tikosms.observability.database import Snapshot

        extra.append(Snapshot(bind_families(worker.router)))
    return metrics.render(extra)


def _json(body: dict[str, Any], status: int) -> Any:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class HealthServer:
    """`/healthz`, `/readyz` and `/metrics` of a `tikosms worker` on a port of its own: a few
    lines of HTTP/1.1 on asyncio (one request per connection), in the worker's event loop."""

    def __init__(self, host: str, port: int, db: Any, worker: Any = None,
                 dispatcher: Any = None, metrics_database_seconds: float = 5.0,
                 stale_after: float = 15.0) -> None:
        self.host, self.port = host, port
        self.db, self.worker, self.dispatcher = db, worker, dispatcher
        self.figures = DatabaseFigures(db, metrics_database_seconds, stale_after)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("health and metrics on http://%s:%d (/healthz /readyz /metrics)",
                 self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, ctype, body = await self._answer(method, path)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            result = await readiness(self.db, self.worker, self.dispatcher)
            return ("200 OK" if result.ready else "503 Service Unavailable",
                    "application/json", orjson.dumps(result.body()))
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE, await scrape(self.figures, self.worker)
        return "404 Not Found", "text/plain", b"not found\n"
