"""create_app(): the API's routers, error handlers and lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikosms.accounts.endpoints import router as balance_router
from tikosms.accounts.service import TokenCache
from tikosms.api.openapi import openapi_document
from tikosms.api.ratelimit import AccountRateLimiter
from tikosms.api.responses import JSONResponse
from tikosms.config import Settings, get_settings
from tikosms.db.engine import Database, is_database_down
from tikosms.delivery.notify import PartsSignal
from tikosms.errors import PayloadTooLarge, ServiceUnavailable, TikoError
from tikosms.inbound.endpoints import router as inbound_router
from tikosms.messaging.endpoints import router as messaging_router
from tikosms.messaging.endpoints import send_single
from tikosms.messaging.streams import StreamSlots
from tikosms.messaging.writer import SendWriter
from tikosms.observability import http as observability_http
from tikosms.observability import metrics as observability_metrics
from tikosms.rates.endpoints import router as rates_router

log = logging.getLogger("tikosms.api")

Lifespan = Callable[[FastAPI], Any]


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    *,
    background: Callable[[FastAPI], Any] | None = None,
) -> FastAPI:
    """The API. `background(app)` is an async context manager run for the app's lifetime
    (`tikosms serve` passes the delivery workers through it)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_db = db is None
        app.state.db = db or Database(
            settings.database_url, settings.database_pool_size,
            command_timeout=settings.database_command_timeout_seconds)
        _install_writers(app)
        # what startup made lives as long as the process: out of the collector's full passes
        gc.freeze()
        try:
            if background is not None:
                async with background(app):
                    yield
            else:
                yield
        finally:
            observability_metrics.mark_process_dead()
            for writer in app.state.send_writers.values():
                await writer.close()  # sends taken (lingering ones too), before the pool goes
            await app.state.parts_signal.close()  # a wake-up in flight, before the pool goes
            if own_db:
                await app.state.db.dispose()

    app = TikoApp(
        title="TikoSMS API", lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url=None, default_response_class=JSONResponse,
    )
    app.state.settings = settings
    if db is not None:
        app.state.db = db
    app.state.rate_limiter = (
        AccountRateLimiter(settings.rate_limit_per_second)
        if settings.rate_limit_per_second > 0 else None
    )
    app.state.token_cache = TokenCache()
    app.state.stream_slots = StreamSlots(settings.max_streams_per_account)
    if db is not None:
        _install_writers(app)

    for router in (messaging_router, balance_router, rates_router, inbound_router):
        app.include_router(router)
    _install_error_handlers(app)
    _install_docs(app)
    from tikosms.console import install as install_console

    install_console(app)  # /admin and its static files (the vendored Swagger UI too)
    observability_http.install_routes(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(observability_http.Observed)  # outermost: sees 413s too
    app.single_send = observability_http.Observed(
        BodyLimit(_single_send, max_bytes=settings.max_body_bytes), route="/v1/message")
    app.max_header_bytes = settings.max_header_bytes
    return app


def app_from_environment() -> FastAPI:
    """The API with settings from TIKOSMS_* (for `tikosms api --processes N`)."""
    from tikosms.messaging import resolver
    from tikosms.runtime import setup_logging

    settings = get_settings()
    setup_logging(settings)
    resolver.warm_up()
    return create_app(settings)


def _install_writers(app: FastAPI) -> None:
    """Single sends are group-committed; a campaign is a transaction of its own."""
    # after each commit: wakes this process's delivery worker (`tikosms serve`, which sets
    # its `local`) and, on PostgreSQL, every other process's (delivery/notify.py)
    signal = app.state.parts_signal = PartsSignal(app.state.db)
    app.state.send_writers = {
        "message": SendWriter(app.state.db, signal=signal,
                              linger=app.state.settings.send_linger_seconds),
        "messages": SendWriter(app.state.db, max_batch=1, signal=signal),
    }


def _install_docs(app: FastAPI) -> None:
    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return JSONResponse(openapi_document())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # served from the console's vendored swagger-ui-dist: /docs needs no network
        vendor = "/admin/static/vendor/swagger-ui"
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="TikoSMS API",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url=f"{vendor}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge from the online validator
        )

    @app.get("/health", include_in_schema=False)
    async def health(request: Request) -> Response:
        async with request.app.state.db.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return JSONResponse({"success": True, "status": "ok"})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TikoError)
    async def tiko_error(_request: Request, exc: TikoError) -> Response:
        return tiko_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "Invalid request."
        return JSONResponse({"success": False, "error": message, "code": "validation_failed"},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        messages = {404: "Not found.", 405: "Method not allowed."}
        return JSONResponse(
            {"success": False, "error": messages.get(exc.status_code, str(exc.detail)),
             "code": "not_found" if exc.status_code == 404 else "http_error"},
            status_code=exc.status_code, headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_error_response(request, exc)

    # Database errors answered by the exception middleware, not by the server-error one
    # (`Exception` above), which re-raises after answering: uvicorn then logs a traceback and
    # closes the connection, so a client's next request on it (keep-alive) failed with a reset
    # while the database was down, instead of getting its 503.
    for database_error in (DBAPIError, PoolTimeout, OSError):
        app.add_exception_handler(database_error, unexpected)  # type: ignore[arg-type]


def tiko_error_response(exc: TikoError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    """503 when the database is out of reach (the client should retry), else a logged 500."""
    if isinstance(exc, DataError):
        # a value the database refused that validation let through: this request's alone
        log.warning("database refused a value while serving %s %s: %s", request.method,
                    request.url.path, _short(exc))
        return JSONResponse(
            {"success": False, "error": "A value of this request cannot be stored. Nothing "
             "was changed.", "code": "value_refused"}, status_code=422)
    if _is_storage_full(exc):
        # SQLITE_FULL: the transaction was rolled back whole; nothing of this request is stored
        log.error("database storage full while serving %s %s: %s", request.method,
                  request.url.path, _short(exc))
        err = ServiceUnavailable(
            "The gateway's storage is full: nothing was stored. Please retry later.",
            code="storage_full", headers={"Retry-After": "30"})
        return JSONResponse(err.body(), status_code=507, headers=err.headers)
    if is_database_down(exc):
        what = ("no database connection free within the pool timeout"
                if isinstance(exc, PoolTimeout) else "database unreachable")
        log.error("%s while serving %s %s: %s", what, request.method, request.url.path,
                  _short(exc))
        err = ServiceUnavailable(
            "The service is temporarily unavailable (database). Nothing was changed by this "
            "request; please retry.", headers={"Retry-After": "5"})
        return JSONResponse(err.body(), status_code=503, headers=err.headers)
    # the traceback carries the SQL but not its parameters (engines hide them unless
    # TIKOSMS_LOG_SENSITIVE is on)
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return JSONResponse(
        {"success": False, "error": "Internal server error. It has been logged.",
         "code": "internal_error"},
        status_code=500,
    )


class TikoApp(FastAPI):
    """FastAPI, with `POST /v1/message` answered ahead of its middleware, routing and dependency
    solving, which took a third of the CPU of a one-time code (profile in docs/benchmarks.md).
    The same handler as the FastAPI route (`messaging.endpoints.send_single`), the same body
    limit and error envelope; every other request, and other methods on this path, go on to
    FastAPI."""

    single_send: ASGIApp | None = None  # set by create_app

    max_header_bytes = 16 * 1024  # set by create_app from the settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _header_bytes(scope) > self.max_header_bytes:
            err = TikoError(
                f"The request headers are too large (limit {self.max_header_bytes:,} bytes).",
                code="headers_too_large")
            await JSONResponse(err.body(), status_code=431)(scope, receive, send)
            return
        if self.single_send is not None and scope["type"] == "http" \
                and scope["path"] == "/v1/message" and scope["method"] == "POST":
            scope["app"] = self
            await self.single_send(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _single_send(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    try:
        response = await send_single(request, scope["app"].state.db)
    except TikoError as exc:
        response = tiko_error_response(exc)
    except Exception as exc:  # answered in the envelope, and logged
        response = unexpected_error_response(request, exc)
    await response(scope, receive, send)


def _is_storage_full(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "full" in str(exc.orig).lower()


def _short(exc: BaseException) -> str:
    """The error's class and first line: no SQL, no parameters, no DETAIL lines (which can quote
    a row's values)."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:200]}"


def _header_bytes(scope: Scope) -> int:
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in scope.get("headers", ()):
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(self._sentence())
            return message

        await self.app(scope, limited, send)

    def _sentence(self) -> str:
        return f"The request body is too large (limit {self.max_bytes // (1024 * 1024)} MB)."

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = PayloadTooLarge(self._sentence())
        await JSONResponse(err.body(), status_code=413)(scope, receive, send)
