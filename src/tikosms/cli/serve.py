"""tikosms serve | api | worker: run the gateway."""

from __future__ import annotations

import asyncio
import gc
import signal
from decimal import Decimal
from typing import Any

import click

from tikosms.cli.base import cli, database_url, ensure_schema, fail
from tikosms.config import Settings, get_settings


def _settings(**overrides: object) -> Settings:
    base = get_settings()
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _serve_uvicorn(app: object, host: str, port: int) -> None:
    import uvicorn

    from tikosms.messaging import resolver

    resolver.warm_up()  # number resolution for large campaigns runs on every core

    config = uvicorn.Config(app, host=host, port=port, log_level="warning",  # type: ignore[arg-type]
                            loop="auto", http="auto", timeout_graceful_shutdown=5,
                            access_log=False, log_config=None,
                            # h11's bound on request line + headers; httptools is bounded in
                            # the app (TikoApp: 431)
                            h11_max_incomplete_event_size=get_settings().max_header_bytes)
    server: Any = _quiet_exit_server(config)
    try:
        server.run()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=2)
    finally:
        resolver.shutdown()


def _quiet_exit_server(config: object) -> object:
    """uvicorn's server, except that a SIGTERM/SIGINT it shut down on cleanly is not raised
    again afterwards (uvicorn >= 0.29 does), so a clean stop exits with status 0."""
    import contextlib
    from collections.abc import Iterator

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return Server(config)  # type: ignore[arg-type]


def _prepare(demo: bool, host: str | None = None, port: int | None = None) -> Settings:
    from tikosms.runtime import setup_logging

    settings = _settings(database_url=database_url(), host=host, port=port)
    setup_logging(settings)
    try:
        ensure_schema(settings.database_url)
    except Exception as exc:
        fail(f"cannot prepare the database {settings.database_url}: {exc}", code=2)
    if demo:
        asyncio.run(_seed_demo(settings))
    return settings


@cli.command("serve")
@click.option("--host", default=None, help="address to listen on [env: TIKOSMS_HOST]")
@click.option("--port", type=int, default=None, help="port [env: TIKOSMS_PORT]")
@click.option("--demo", is_flag=True,
              help="seed a demo account, token, price list (once) and print curl commands")
@click.option("--smpp-port", type=int, default=None,
              help="port of the SMPP server for customers [env: TIKOSMS_SMPP_PORT, 2775]")
@click.option("--no-smpp", is_flag=True, default=False,
              help="no SMPP server [env: TIKOSMS_SMPP_ENABLED=false]")
@click.option("--one-process", is_flag=True, default=False,
              help="run delivery inside the API's process, not in a process of its own "
                   "[env: TIKOSMS_SERVE_DELIVERY_PROCESS=false]")
def serve(host: str | None, port: int | None, demo: bool, smpp_port: int | None,
          no_smpp: bool, one_process: bool) -> None:
    """The API and the SMPP server, with delivery (carriers, receipts, callbacks) in a process
    of its own that this one starts, restarts and stops (the embedded default)."""
    from tikosms.app import create_app
    from tikosms.runtime import app_background, can_share, child_background

    settings = _prepare(demo, host, port)
    if smpp_port is not None:
        settings = settings.model_copy(update={"smpp_port": smpp_port})
    host, port = settings.host, settings.port
    if settings.serve_delivery_process and not one_process and can_share(settings.database_url):
        _metrics_dir(settings)  # the delivery process counts into it too: one /metrics
        background = child_background(settings)
    else:
        background = app_background(settings)
    smpp = ""
    if settings.smpp_enabled and not no_smpp:
        from tikosms.smpp_server.runtime import with_smpp_server

        background = with_smpp_server(background, settings)
        smpp = f"; SMPP on {settings.smpp_host or host}:{settings.smpp_port}"
    app = create_app(settings, background=background)
    click.echo(f"TikoSMS Gateway listening on http://{host}:{port} "
               f"(database {_redact(settings.database_url)}; API docs at /docs{smpp})", err=True)
    _serve_uvicorn(app, host, port)


@cli.command("api")
@click.option("--host", default=None, help="address to listen on [env: TIKOSMS_HOST]")
@click.option("--port", type=int, default=None, help="port [env: TIKOSMS_PORT]")
@click.option("--processes", type=int, default=None,
              help="API processes sharing the port (PostgreSQL) [env: TIKOSMS_API_PROCESSES]")
def api(host: str | None, port: int | None, processes: int | None) -> None:
    """The API alone (delivery runs in `tikosms worker` processes)."""
    from tikosms.app import create_app

    settings = _prepare(False, host, port)
    _metrics_dir(settings)
    host, port = settings.host, settings.port
    processes = processes or settings.api_processes
    click.echo(f"TikoSMS API listening on http://{host}:{port} ({processes} process(es); "
               "no delivery here)", err=True)
    if processes > 1:
        _serve_processes(settings, processes)
    else:
        _serve_uvicorn(create_app(settings), host, port)


def _serve_processes(settings: Settings, processes: int) -> None:
    """Several API processes on one port (uvicorn's supervisor); each builds its app from the
    environment, so the settings this command resolved are passed on through it."""
    import os

    import uvicorn

    os.environ["TIKOSMS_DATABASE_URL"] = settings.database_url
    uvicorn.run("tikosms.app:app_from_environment", factory=True, host=settings.host,
                port=settings.port, workers=processes, log_level="warning", access_log=False,
                log_config=None, timeout_graceful_shutdown=5,
                h11_max_incomplete_event_size=settings.max_header_bytes)


@cli.command("worker")
@click.option("--only", type=click.Choice(["delivery", "callbacks"]), default=None,
              help="run one side: parts to carriers, or callbacks to customers (default both)")
@click.option("--health-port", type=int, default=None,
              help="answer /healthz, /readyz and /metrics on this port "
                   "[env: TIKOSMS_WORKER_HEALTH_PORT]")
@click.option("--child-of", type=int, default=None, hidden=True,
              help="`tikosms serve`'s delivery process: stop when that process is gone")
def worker(only: str | None, health_port: int | None, child_of: int | None) -> None:
    """Delivery: claims parts, talks to carriers, sends callbacks. Run several on PostgreSQL;
    SIGTERM releases the claims and exits within a few seconds. With cores to spare, run the
    two sides in processes of their own: `worker --only delivery` and `worker --only callbacks`.
    """
    from tikosms.db.engine import Database
    from tikosms.delivery.heartbeat import stale_after
    from tikosms.runtime import callbacks_only, delivery, parts_only

    settings = _prepare(False)
    if child_of is None:
        _metrics_dir(settings)
    # else: the metrics go into `serve`'s directory (inherited), for its /metrics
    from tikosms.observability.http import HealthServer
    from tikosms.observability.metrics import mark_process_dead

    health_port = settings.worker_health_port if health_port is None else health_port
    side = {None: delivery, "delivery": parts_only, "callbacks": callbacks_only}[only]
    what = {None: "", "delivery": ", delivery only", "callbacks": ", callbacks only"}[only]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = None
        if child_of is not None:
            from tikosms import early_stop

            if early_stop.asked:  # SIGTERM while starting: start, then stop cleanly
                stop.set()
            watch = asyncio.create_task(_stop_when_gone(child_of, stop))
        db = Database(settings.database_url, settings.database_pool_size,
                      command_timeout=settings.database_worker_command_timeout_seconds)
        try:
            async with side(db, settings) as runner:
                health = None
                if health_port:
                    is_worker = hasattr(runner, "router")
                    health = HealthServer(settings.host, health_port, db,
                                          worker=runner if is_worker else None,
                                          dispatcher=None if is_worker else runner,
                                          metrics_database_seconds=settings.metrics_database_seconds,
                                          stale_after=stale_after(settings))
                    try:
                        await health.start()
                    except OSError as exc:
                        fail(f"cannot listen on {settings.host}:{health_port}: {exc}", code=2)
                gc.freeze()  # startup's objects live as long as the process: not scanned again
                if child_of is None:
                    click.echo(f"TikoSMS worker running{what} (SIGTERM to stop)", err=True)
                await stop.wait()
                click.echo("stopping: finishing what is in flight...", err=True)
                if health is not None:
                    await health.stop()
        finally:
            if watch is not None:
                watch.cancel()
            mark_process_dead()
            await db.dispose()

    _run_loop(main())


async def _stop_when_gone(parent: int, stop: asyncio.Event) -> None:
    """`serve`'s delivery process: stop once `parent` is no longer this process's parent (it
    exited or was killed; the process is then adopted by another)."""
    import os

    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            if os.getppid() != parent:
                click.echo("the serve process is gone: stopping", err=True)
                stop.set()


def _metrics_dir(settings: Settings) -> None:
    """The directory this command's processes count their metrics into (emptied now; a
    temporary one is removed at exit). Set before any metric exists: children inherit it."""
    import atexit

    from tikosms.observability import metrics

    path = metrics.prepare_multiprocess_dir(settings.metrics_dir or None)
    if not settings.metrics_dir:
        atexit.register(metrics.remove_multiprocess_dir, path)


def _run_loop(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


DEMO_RATES = [
    # mcc, mnc, country, rate: Ukraine's three networks and a country-wide fallback
    ("255", "001", "Ukraine", Decimal("0.045")),
    ("255", "003", "Ukraine", Decimal("0.050")),
    ("255", "006", "Ukraine", Decimal("0.048")),
    ("255", "", "Ukraine", Decimal("0.060")),
    ("262", "", "Germany", Decimal("0.075")),
    ("234", "", "United Kingdom", Decimal("0.040")),
    ("310", "", "United States of America", Decimal("0.0085")),
]
DEMO_NAME = "Demo"


async def _seed_demo(settings: Settings) -> None:
    from sqlalchemy import select

    from tikosms.accounts import service as accounts
    from tikosms.db.engine import Database
    from tikosms.db.models import Account
    from tikosms.db.types import utcnow
    from tikosms.rates.service import RateRow, import_rates

    db = Database(settings.database_url)
    try:
        async with db.begin() as conn:
            existing = (await conn.execute(
                select(Account.id).where(Account.name == DEMO_NAME))).first()
            if existing is not None:
                token, _ = await accounts.create_token(conn, existing.id)
                account_id = existing.id
                click.echo(f"demo account {account_id} exists; a new token for it:", err=True)
            else:
                account_id, token, _ = await accounts.create_account(
                    conn, name=DEMO_NAME, balance=Decimal(100), credit_limit=Decimal(0))
                now = utcnow()
                await import_rates(conn, [RateRow(None, mcc, mnc, country, rate, now, None)
                                          for mcc, mnc, country, rate in DEMO_RATES], None)
                click.echo(f"seeded demo account {account_id} (balance 100.00 EUR) and a "
                           "price list; the built-in simulated carrier delivers everything",
                           err=True)
    finally:
        await db.dispose()
    base = f"http://{settings.host}:{settings.port}"
    click.echo(f"""
  API token: {token}

  Send a message:
    curl -s {base}/v1/message -H 'Authorization: Bearer {token}' \\
      -H 'Content-Type: application/json' \\
      -d '{{"from": "TikoSMS", "to": "+380501234567", "message": "Hello from TikoSMS"}}'

  Read its status (use the message_id from the answer):
    curl -s '{base}/v1/get_message?message_id=MESSAGE_ID' -H 'Authorization: Bearer {token}'

  Balance:
    curl -s {base}/v1/balance -H 'Authorization: Bearer {token}'
""")
