"""`tikosms smsc-sim`: run the SMSC simulator from the command line.

The main CLI registers it with `cli.add_command(smsc_sim)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from tikosms.smpp.simulator import (
    RATE_WINDOWS,
    SimulatorConfig,
    SimulatorCounters,
    SmscSimulator,
)


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
    "--max-tps",
    "--throttle-tps",
    "throttle_tps",
    default=None,
    type=float,
    help="Answer ESME_RTHROTTLED above this many submit_sm per second per system_id "
    "(across its binds).",
)
@click.option(
    "--rate-window",
    type=click.Choice(RATE_WINDOWS),
    default="fixed",
    show_default=True,
    help="How --max-tps is counted: fixed (a count reset a second after its first submit_sm), "
    "sliding (at most N accepted in any second), bucket (a token bucket of N a second).",
)
@click.option(
    "--rate-burst",
    default=None,
    type=float,
    help="--rate-window bucket: the tokens the bucket holds (default: a tenth of a second's).",
)
@click.option(
    "--throttle-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm answered ESME_RTHROTTLED whatever the rate (congestion).",
)
@click.option(
    "--no-id-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm answered ROK without a message_id (the part is taken).",
)
@click.option(
    "--nack-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm answered generic_nack ESME_RSYSERR.",
)
@click.option(
    "--nack-ok-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm answered generic_nack with command_status 0.",
)
@click.option(
    "--silent-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm never answered (the part is taken).",
)
@click.option(
    "--stray-ratio",
    default=0.0,
    show_default=True,
    help="Share of submit_sm preceded by a submit_sm_resp to a sequence number never sent.",
)
@click.option(
    "--long-id",
    default=0,
    show_default=True,
    help="Message ids this many characters long (0: normal ids).",
)
@click.option(
    "--long-receipt-fields",
    default=0,
    show_default=True,
    help="Receipt err:/stat: fields this many characters long (0: normal).",
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
@click.option(
    "--control-port", default=None, type=int,
    help="Serve the control endpoint (POST /mo: send an MO; tikosms smsc-mo) on this port "
    "of --host (0: any free port).",
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
    rate_window: str,
    rate_burst: float | None,
    throttle_ratio: float,
    no_id_ratio: float,
    nack_ratio: float,
    nack_ok_ratio: float,
    silent_ratio: float,
    stray_ratio: float,
    long_id: int,
    long_receipt_fields: int,
    drop_after: int | None,
    seed: int | None,
    stats_interval: float,
    duration: float,
    control_port: int | None,
) -> None:
    """Run an SMPP 3.4 SMSC simulator (binds, submit_sm, receipts, fault injection).

    Receipts not acknowledged (an error status, or the bind dropped before the
    deliver_sm_resp) are delivered again on another receiver bind of the same system_id.
    """
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
        rate_window=rate_window,
        rate_burst=rate_burst,
        throttle_ratio=throttle_ratio,
        no_id_ratio=no_id_ratio,
        nack_ratio=nack_ratio,
        nack_ok_ratio=nack_ok_ratio,
        silent_ratio=silent_ratio,
        stray_ratio=stray_ratio,
        long_id=long_id,
        long_receipt_fields=long_receipt_fields,
        drop_after=drop_after,
        seed=seed,
        record_submits=False,  # a long run would keep every submit_sm in memory
    )
    try:
        import uvloop  # as the gateway runs: the simulator should not be the slower side
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        asyncio.run(_serve(config, stats_interval, duration, control_port))
    else:
        uvloop.run(_serve(config, stats_interval, duration, control_port))


async def _serve(config: SimulatorConfig, stats_interval: float, duration: float,
                 control_port: int | None = None) -> None:
    simulator = SmscSimulator(config)
    await simulator.start()
    control = None
    if control_port is not None:
        from tikosms.smpp.sim_control import bound_port, start_control

        control = await start_control(simulator, config.host, control_port)
        click.echo(f"SMSC simulator control on http://{config.host}:{bound_port(control)} "
                   "(POST /mo, GET /counters)")
    click.echo(
        f"SMSC simulator listening on {config.host}:{simulator.port} "
        f"(system_id={config.system_id or 'any'} latency_ms={config.latency_ms:g} "
        f"receipt_delay_ms={config.receipt_delay_ms:g} undeliv_ratio={config.undeliv_ratio:g} "
        f"reject_ratio={config.reject_ratio:g} max_tps={config.throttle_tps or 'off'} "
        f"rate_window={config.rate_window} "
        f"throttle_ratio={config.throttle_ratio:g} "
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
        if control is not None:
            await control.cleanup()
        await simulator.stop()


def format_counters(counters: SimulatorCounters) -> str:
    return (
        f"binds={counters.binds} bind_failures={counters.bind_failures} "
        f"submits={counters.submits} accepted={counters.accepted} "
        f"rejected={counters.rejected} throttled={counters.throttled} faults={counters.faults} "
        f"receipts_acked={counters.receipts_acked}/{counters.receipts_sent} "
        f"dropped_connections={counters.dropped_connections} "
        f"in_flight={counters.in_flight} max_in_flight={counters.max_in_flight} "
        f"bound={counters.bound} max_bound={counters.max_bound} "
        f"max_submits_per_second={counters.max_submits_per_second} "
        f"max_accepted_per_second={counters.max_accepted_per_second}"
    )


@click.command("smsc-mo")
@click.option("--control", "control_url", required=True, metavar="URL",
              help="The simulator's control endpoint, e.g. http://127.0.0.1:8025")
@click.option("--from", "source", required=True, help="The handset's number (source_addr).")
@click.option("--to", "destination", required=True,
              help="The number or short code written to (destination_addr).")
@click.option("--text", required=True, help="The message.")
@click.option("--data-coding", type=click.Choice(["0", "1", "3", "8"]), default=None,
              help="0 GSM-7, 1 ASCII, 3 Latin-1, 8 UCS-2 (default: GSM-7 if it fits).")
@click.option("--concat", type=click.Choice(["udh8", "udh16", "sar"]), default="udh8",
              show_default=True, help="How a long MO is cut.")
@click.option("--order", type=click.Choice(["in-order", "reverse", "shuffle"]),
              default="in-order", show_default=True, help="The order its parts are sent in.")
@click.option("--part-octets", type=int, default=None,
              help="Cut parts of this many octets (default: 153 GSM-7, 134 UCS-2).")
@click.option("--system-id", default=None, help="Only to binds of this system_id.")
def smsc_mo(control_url: str, source: str, destination: str, text: str,
            data_coding: str | None, concat: str, order: str, part_octets: int | None,
            system_id: str | None) -> None:
    """Make a running `tikosms smsc-sim --control-port N` send an MO to the gateway."""
    import json
    import urllib.error
    import urllib.request

    body = {"from": source, "to": destination, "text": text, "concat": concat, "order": order,
            "data_coding": None if data_coding is None else int(data_coding),
            "part_octets": part_octets, "system_id": system_id}
    request = urllib.request.Request(
        control_url.rstrip("/") + "/mo", json.dumps(body).encode(),
        {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise click.ClickException(exc.read().decode(errors="replace")) from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach {control_url}: {exc}") from None
    click.echo(f"MO sent in {answer['parts']} part(s), every one acknowledged by the gateway")
