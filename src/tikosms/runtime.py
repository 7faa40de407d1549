"""Running the gateway: the delivery side (worker + callback dispatcher) as one unit, in the
API's process or in a process of its own that `tikosms serve` supervises; logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import make_url

from tikosms.callbacks.dispatcher import CallbackDispatcher
from tikosms.callbacks.retry import RetryPolicy
from tikosms.config import Settings
from tikosms.console import rollup
from tikosms.db.engine import Database, sqlite_file
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
    dispatcher.yield_to = worker.behind  # the SMS first: callbacks wait while parts do
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


log = logging.getLogger("tikosms.serve")

# seconds the delivery process has to stop before it is killed: more than its own worst case
# (claimer, submissions in flight, the recorder's flush, the callbacks: 5 s each)
CHILD_STOP_GRACE = 25.0
RESTART_PAUSE_MAX = 30.0  # seconds between two starts of a delivery process that keeps dying
STEADY_RUN = 60.0  # seconds of running after which a death starts the pauses afresh
INTERPRETER_START = 0.3  # seconds: a delivery process just started is not signalled sooner


def can_share(database_url: str) -> bool:
    """Whether another process reaches the same database (not a SQLite memory database)."""
    return make_url(database_url).get_backend_name() != "sqlite" \
        or sqlite_file(database_url) is not None


class DeliveryProcess:
    """`tikosms worker` as a child of `tikosms serve`, so that a send's latency does not depend
    on what delivery is doing (one Python process is one core): started with the API, started
    again when it dies (1 s, then up to RESTART_PAUSE_MAX between tries), stopped with it
    (SIGTERM: it finishes what is in flight; killed after CHILD_STOP_GRACE). It runs in a
    session of its own, so a Ctrl-C reaches the API, which stops it in turn; and it stops by
    itself when the API's process is gone (`worker --child-of`)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.process: asyncio.subprocess.Process | None = None
        self._spawned_at = 0.0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name="delivery-process")

    async def _spawn(self) -> None:
        env = {**os.environ, "TIKOSMS_DATABASE_URL": self.database_url}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tikosms", "worker", "--child-of", str(os.getpid()),
            env=env, start_new_session=True)
        self._spawned_at = time.monotonic()
        log.info("delivery process started: pid %d", self.process.pid)

    async def _watch(self) -> None:
        pause = 1.0
        while True:
            assert self.process is not None
            started = time.monotonic()
            code = await self.process.wait()
            if self._stopping.is_set():
                return
            if code == 0:
                # it was asked to stop (a SIGTERM of its own: systemd stopping the unit's
                # processes, an operator): not a crash, and during a shutdown no restart
                log.warning("the delivery process (pid %d) stopped on a signal of its own: "
                            "nothing is sent until serve is started again", self.process.pid)
                return
            if time.monotonic() - started > STEADY_RUN:
                pause = 1.0
            log.error("the delivery process (pid %d) exited with code %s: nothing is sent "
                      "until it runs again; starting it again in %.0f s (its log above says "
                      "why)", self.process.pid, code, pause)
            while True:  # tried again, never given up
                if await self._stopped_within(pause):
                    return
                pause = min(pause * 2, RESTART_PAUSE_MAX)
                try:
                    await self._spawn()
                    break
                except Exception as exc:
                    log.error("cannot start the delivery process (%s); trying again in %.0f s",
                              exc, pause)
            if self._stopping.is_set():  # stop() came during the start
                await self._signal_stop()
                return

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def stop(self) -> None:
        self._stopping.set()
        await self._signal_stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _signal_stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            # the interpreter's first milliseconds, before `python -m tikosms` notes a SIGTERM
            await asyncio.sleep(max(0.0, self._spawned_at + INTERPRETER_START - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), CHILD_STOP_GRACE)
            except TimeoutError:
                log.error("the delivery process (pid %d) did not stop within %.0f s: killed; "
                          "what it held comes back when its leases run out", process.pid,
                          CHILD_STOP_GRACE)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


def child_background(settings: Settings) -> Any:
    """For create_app(background=...): delivery in a process of its own (`tikosms serve`)."""

    @asynccontextmanager
    async def background(app: Any) -> AsyncIterator[None]:
        child = DeliveryProcess(settings.database_url)
        await child.start()
        try:
            yield
        finally:
            await child.stop()

    return background


def setup_logging(settings: Settings) -> None:
    """Text or JSON lines on standard error, each with its request id (observability.logs)."""
    logs.setup_logging(settings.log_format, settings.log_level, access=settings.access_log)
