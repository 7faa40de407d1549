"""Helpers of the SMPP fault tests: `tikosms smsc-sim` as a real process, the connector
driven as the delivery worker drives it (resubmit on RETRY after retry_after)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import TIKOSMS, Process, free_port

from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitOutcome, SubmitResult
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import SmppCarrier


@dataclass
class Simulator:
    port: int
    process: Process

    def counters(self) -> dict[str, int]:
        """Stop the simulator and read its last line of counters."""
        self.process.stop()
        text = self.process.log.read_text()
        line = [x for x in text.splitlines() if x.startswith("binds=")][-1]
        return {k: int(v.split("/")[0]) for k, v in re.findall(r"(\w+)=(\S+)", line)}


@contextmanager
def smsc_sim(tmp_path: Path, *options: str) -> Iterator[Simulator]:
    port = free_port()
    args = [TIKOSMS, "smsc-sim", "--port", str(port), "--stats-interval", "0", *options]
    with Process(args, tmp_path / "smsc-sim.log", port=port) as process:
        yield Simulator(port, process)


def part(part_id: int) -> OutboundPart:
    return OutboundPart(
        part_id=part_id,
        to="380501234567",
        sender="TikoSMS",
        sender_type="Alpha",
        text="Hello from TikoSMS",
        data_coding=0,
        part_no=1,
        total_parts=1,
        concat_ref=0,
    )


@dataclass
class Receipts:
    received: list[Receipt] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, receipt: Receipt) -> None:
        self.received.append(receipt)
        self.arrived.set()


async def carrier_for(sim: Simulator, receipts: Receipts, **options: object) -> SmppCarrier:
    config = SmppCarrierConfig(
        name="faultsmsc", host="127.0.0.1", port=sim.port, system_id="tiko",
        password="secret", reconnect_initial=0.05, reconnect_max=0.2, stop_timeout=1.0,
        **options,  # type: ignore[arg-type]
    )
    carrier = SmppCarrier(config)
    await carrier.start(receipts)
    async with asyncio.timeout(10):
        await carrier.wait_bound()
    return carrier


@dataclass
class Drive:
    finals: dict[int, SubmitOutcome] = field(default_factory=dict)
    accepted_at: list[float] = field(default_factory=list)  # monotonic times
    retries: int = 0
    started: float = 0.0


async def drive(carrier: SmppCarrier, parts: int, concurrency: int = 200) -> Drive:
    """Submit `parts` parts with `concurrency` in flight, as the worker does: a RETRY is
    submitted again after its retry_after; every other outcome is final."""
    result = Drive(started=time.monotonic())
    queue: asyncio.Queue[int] = asyncio.Queue()
    for part_id in range(1, parts + 1):
        queue.put_nowait(part_id)

    async def one() -> None:
        while not queue.empty():
            part_id = queue.get_nowait()
            while True:
                outcome = await carrier.submit(part(part_id))
                if outcome.result is not SubmitResult.RETRY:
                    break
                result.retries += 1
                await asyncio.sleep(outcome.retry_after or 0.1)
            result.finals[part_id] = outcome
            if outcome.result is SubmitResult.ACCEPTED:
                result.accepted_at.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return result


def sustained_rate(times: list[float], start: float, skip: float) -> float:
    """Accepted parts per second from `skip` seconds after start to the last acceptance."""
    late = [t for t in times if t >= start + skip]
    if len(late) < 2:
        return 0.0
    return (len(late) - 1) / (late[-1] - late[0])
