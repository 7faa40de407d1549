"""`smsc-sim` as operators run it: a process that prints where it listens, and its counters."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

from click.testing import CliRunner

from tikosms.delivery.carrier import SubmitResult
from tikosms.smpp.cli import smsc_sim

RUN_CLI = "from tikosms.smpp.cli import smsc_sim; smsc_sim()"


def test_cli_prints_where_it_listens_and_its_counters() -> None:
    result = CliRunner().invoke(smsc_sim, ["--port", "0", "--duration", "0.05"])
    assert result.exit_code == 0, result.output
    first, *rest = result.output.splitlines()
    assert re.match(r"SMSC simulator listening on 127\.0\.0\.1:\d+ \(", first)
    assert rest[-1].startswith("binds=0 bind_failures=0 submits=0")


async def test_cli_process_serves_a_carrier(carrier_factory: Any, make_part: Any) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_CLI,
        "--port=0",
        "--system-id=tiko",
        "--password=secret",
        "--latency-ms=1",
        "--stats-interval=0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        carrier = await carrier_factory(int(match.group(1)))
        outcome = await carrier.submit(make_part())
        assert outcome.result is SubmitResult.ACCEPTED
        await carrier.stop()
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            output, _ = await process.communicate()
    assert process.returncode == 0
    assert "submits=1 accepted=1" in output.decode()
