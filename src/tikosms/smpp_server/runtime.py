"""Running the SMPP server from the settings (`tikosms serve`, `tikosms smpp-server`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.smpp_server.server import ServerConfig, SmppServer

log = logging.getLogger("tikosms.smpp_server")


def config_from(settings: Settings) -> ServerConfig:
    return ServerConfig(
        host=settings.smpp_host or settings.host,
        port=settings.smpp_port,
        enquire_link_seconds=settings.smpp_enquire_link_seconds,
        response_timeout=settings.smpp_response_timeout_seconds,
        outbox_poll_seconds=settings.smpp_outbox_poll_seconds,
    )


@asynccontextmanager
async def smpp_server(db: Database, settings: Settings) -> AsyncIterator[SmppServer]:
    """Listen (OSError when the port is taken), yield the server, stop it on exit."""
    server = SmppServer(db, config_from(settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def with_smpp_server(background: Callable[[Any], Any], settings: Settings) -> Any:
    """For create_app(background=...) in `tikosms serve`: the delivery background, then the
    SMPP server on the app's database, waking the app's workers on each accepted submit_sm.
    A port already taken is reported and the HTTP side goes on without SMPP."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with background(app):
            server = SmppServer(app.state.db, config_from(settings), app.state.parts_signal)
            try:
                await server.start()
            except OSError as exc:
                log.error("SMPP server not started: cannot listen on %s:%s (%s); set "
                          "TIKOSMS_SMPP_PORT or --smpp-port, or --no-smpp",
                          server.config.host, server.config.port, exc.strerror or exc)
                yield
                return
            app.state.smpp_server = server
            try:
                yield
            finally:
                await server.stop()

    return run
