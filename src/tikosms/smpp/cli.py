"""`tikosms smsc-sim`: run the SMSC simulator from the command line.

The main CLI registers it with `cli.add_command(smsc_sim)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from tikosms.smpp.simulator import SimulatorConfig, SimulatorCounters, SmscSimulator


@click.command("smsc-sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2775, show_default=True, help="TCP port (0: any free port).")
@click.option("--system-id", default=None, help="Accept only this system_id (default: any).")
@click.option("--password", default=None, help="Accept only this password (default: any).")
@click.option("--latency-ms", default=0.0, show_default=True, help="Delay of each submit_sm_resp.")
@click.option(
    "--receipt-delay-ms", default=0.0, show_default=True, help="Delay from accept to receipt."
)
@click.option(
    "--undeliv-ratio", default=0.0, show_default=True, help="Share of receipts saying UNDELIV."
)
@click.option(
    "--reject-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm answered ESME_RINVDSTADR.",
)
@click.option(
    "--throttle-tps",
    default=None,
    type=float,
    help="Answer ESME_RTHROTTLED above this many submit_sm per second.",
)
@click.option(
    "--drop-after",
    default=None,
    type=int,
    help="Drop each connection on its N-th submit_sm (fault injection).",
)
@click.option("--seed", default=None, type=int, help="Seed of the reject/undeliv draws.")
@click.option(
    "--stats-interval",
    default=10.0,
    show_default=True,
    help="Seconds between two lines of counters (0: none).",
)
@click.option(
    "--duration", default=0.0, show_default=True, help="Stop after this many seconds (0: never)."
)
def smsc_sim(
    host: str,
    port: int,
    system_id: str | None,
    password: str | None,
    latency_ms: float,
    receipt_delay_ms: float,
    undeliv_ratio: float,
    reject_ratio: float,
    throttle_tps: float | None,
    drop_after: int | None,
    seed: int | None,
    stats_interval: float,
    duration: float,
) -> None:
    """Run an SMPP 3.4 SMSC simulator (binds, submit_sm, receipts, fault injection)."""
    config = SimulatorConfig(
        host=host,
        port=port,
        system_id=system_id,
        password=password,
        latency_ms=latency_ms,
        receipt_delay_ms=receipt_delay_ms,
        undeliv_ratio=undeliv_ratio,
        reject_ratio=reject_ratio,
        throttle_tps=throttle_tps,
        drop_after=drop_after,
        seed=seed,
        record_submits=False,  # a long run would keep every submit_sm in memory
    )
    try:
        import uvloop  # as the gateway runs: the simulator should not be the slower side
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        asyncio.run(_serve(config, stats_interval, duration))
    else:
        uvloop.run(_serve(config, stats_interval, duration))


async def _serve(config: SimulatorConfig, stats_interval: float, duration: float) -> None:
    simulator = SmscSimulator(config)
    await simulator.start()
    click.echo(
        f"SMSC simulator listening on {config.host}:{simulator.port} "
        f"(system_id={config.system_id or 'any'} latency_ms={config.latency_ms:g} "
        f"receipt_delay_ms={config.receipt_delay_ms:g} undeliv_ratio={config.undeliv_ratio:g} "
        f"reject_ratio={config.reject_ratio:g} throttle_tps={config.throttle_tps or 'off'} "
        f"drop_after={config.drop_after or 'off'})"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    if duration > 0:
        loop.call_later(duration, stop.set)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), stats_interval if stats_interval > 0 else None)
            if stats_interval > 0 or stop.is_set():
                click.echo(format_counters(simulator.counters))
    finally:
        await simulator.stop()


def format_counters(counters: SimulatorCounters) -> str:
    return (
        f"binds={counters.binds} bind_failures={counters.bind_failures} "
        f"submits={counters.submits} accepted={counters.accepted} "
        f"rejected={counters.rejected} throttled={counters.throttled} "
        f"receipts_acked={counters.receipts_acked}/{counters.receipts_sent} "
        f"dropped_connections={counters.dropped_connections} "
        f"in_flight={counters.in_flight} max_in_flight={counters.max_in_flight}"
    )
