"""Running the gateway: the delivery side (worker + callback dispatcher) as one unit, logging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from tikosms.callbacks.dispatcher import CallbackDispatcher
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.console import rollup
from tikosms.db.engine import Database
from tikosms.delivery.heartbeat import beating
from tikosms.delivery.routing import Router
from tikosms.delivery.worker import DeliveryWorker
from tikosms.inbound.service import InboundReceiver
from tikosms.observability import logs


@asynccontextmanager
async def delivery(db: Database, settings: Settings) -> AsyncIterator[DeliveryWorker]:
    """Start the delivery worker and the callback dispatcher; stop both cleanly on exit."""
    router = await Router.from_database(db, settings)
    dispatcher = CallbackDispatcher(
        db, settings, RetryPolicy(initial=settings.callback_retry_initial_seconds)
    )
    worker = DeliveryWorker(db, settings, router, on_recorded=dispatcher.wake)
    inbound = _inbound(db, settings, router, dispatcher.wake)
    await dispatcher.start()
    await worker.start()
    try:
        async with (beating(db, settings, ("delivery", "callbacks"), worker),
                    rollup.periodic(db, settings.console_rollup_seconds)):  # the console's
            yield worker
    finally:
        await worker.stop()
        await inbound.stop()
        await dispatcher.stop()


@asynccontextmanager
async def callbacks_only(db: Database, settings: Settings) -> AsyncIterator[CallbackDispatcher]:
    """The callback dispatcher alone (`tikosms worker --only callbacks`): on a machine with
    cores to spare, posting callbacks runs beside delivery instead of sharing its process. It
    is not woken by a worker in another process: it looks for due callbacks every
    `callback_poll_seconds` when it has nothing to do."""
    dispatcher = CallbackDispatcher(
        db, settings, RetryPolicy(initial=settings.callback_retry_initial_seconds),
        idle_poll=settings.callback_poll_seconds,
    )
    await dispatcher.start()
    try:
        async with beating(db, settings, ("callbacks",)):
            yield dispatcher
    finally:
        await dispatcher.stop()


@asynccontextmanager
async def parts_only(db: Database, settings: Settings) -> AsyncIterator[DeliveryWorker]:
    """The delivery worker alone (`tikosms worker --only delivery`): the callbacks its status
    changes queue are posted by a `--only callbacks` process."""
    router = await Router.from_database(db, settings)
    worker = DeliveryWorker(db, settings, router)
    inbound = _inbound(db, settings, router)
    await worker.start()
    try:
        async with (beating(db, settings, ("delivery",), worker),
                    rollup.periodic(db, settings.console_rollup_seconds)):
            yield worker
    finally:
        await worker.stop()
        await inbound.stop()


def _inbound(db: Database, settings: Settings, router: Router,
             wake: Callable[[], None] = lambda: None) -> InboundReceiver:
    """Carriers' MO go to the inbound service (stored, then the callback dispatcher woken)."""
    receiver = InboundReceiver(db, settings.inbound_fragment_expiry_seconds, wake)
    router.on_inbound = receiver.handle
    receiver.start()
    return receiver


def app_background(settings: Settings) -> Any:
    """For create_app(background=...): run delivery inside the API process (`tikosms serve`)."""

    @asynccontextmanager
    async def background(app: Any) -> AsyncIterator[None]:
        async with delivery(app.state.db, settings) as worker:
            app.state.parts_signal.local = worker.wake
            app.state.worker = worker
            yield

    return background


def setup_logging(settings: Settings) -> None:
    """Text or JSON lines on standard error, each with its request id (observability.logs)."""
    logs.setup_logging(settings.log_format, settings.log_level, access=settings.access_log)
