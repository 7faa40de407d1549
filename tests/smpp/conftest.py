"""Shared fixtures for the SMPP tests: the simulator, a carrier bound to it, a receipt sink."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitOutcome, SubmitResult
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.simulator import SimulatorConfig, SmscSimulator

SYSTEM_ID = "tiko"
PASSWORD = "secret"


class ReceiptSink:
    """The on_receipt handler of a test: records receipts; can fail or hold them on demand."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.fail_next = 0  # raise for this many calls (the SMSC must redeliver)
        self.hold: asyncio.Event | None = None  # when set: wait for it before returning
        self.entered = asyncio.Event()
        self._changed = asyncio.Event()

    async def __call__(self, receipt: Receipt) -> None:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        self.receipts.append(receipt)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.receipts) < count:
            await self._changed.wait()

    def by_id(self) -> dict[str, Receipt]:
        return {r.carrier_message_id: r for r in self.receipts}


def _make_part(part_id: int = 1, **changes: Any) -> OutboundPart:
    part = OutboundPart(
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
    return dataclasses.replace(part, **changes)


async def _submit_until_done(
    carrier: SmppCarrier, part: OutboundPart, outcomes: list[SubmitOutcome] | None = None
) -> SubmitOutcome:
    """What the delivery worker does with a single carrier: resubmit a part while the carrier
    says RETRY, or says FAILOVER because its bind is down (there is no other carrier to try).

    The retry_after delay is not waited for: the carrier's token bucket does the pacing.
    """
    while True:
        outcome = await carrier.submit(part)
        if outcomes is not None:
            outcomes.append(outcome)
        bind_down = outcome.result is SubmitResult.FAILOVER and not carrier.available
        if outcome.result is not SubmitResult.RETRY and not bind_down:
            return outcome
        if not carrier.available:
            await carrier.wait_bound()


PartFactory = Callable[..., OutboundPart]
Resubmitter = Callable[..., Awaitable[SubmitOutcome]]


@pytest.fixture
def make_part() -> PartFactory:
    """make_part(part_id, **changes): an OutboundPart, GSM-7, single part, unless changed."""
    return _make_part


@pytest.fixture
def submit_until_done() -> Resubmitter:
    """submit_until_done(carrier, part, outcomes=None): resubmit while RETRY, like the worker."""
    return _submit_until_done


SimulatorFactory = Callable[..., Awaitable[SmscSimulator]]
CarrierFactory = Callable[..., Awaitable[SmppCarrier]]


@pytest.fixture
async def simulator_factory() -> AsyncIterator[SimulatorFactory]:
    started: list[SmscSimulator] = []

    async def start(**options: Any) -> SmscSimulator:
        options.setdefault("system_id", SYSTEM_ID)
        options.setdefault("password", PASSWORD)
        options.setdefault("receipt_retry_ms", 10.0)
        simulator = SmscSimulator(SimulatorConfig(port=0, **options))
        await simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        await simulator.stop()


@pytest.fixture
async def simulator(simulator_factory: SimulatorFactory) -> SmscSimulator:
    return await simulator_factory()


@pytest.fixture
def sink() -> ReceiptSink:
    return ReceiptSink()


@pytest.fixture
async def carrier_factory(sink: ReceiptSink) -> AsyncIterator[CarrierFactory]:
    started: list[SmppCarrier] = []

    async def start(port: int, *, wait: bool = True, **options: Any) -> SmppCarrier:
        options.setdefault("system_id", SYSTEM_ID)
        options.setdefault("password", PASSWORD)
        options.setdefault("reconnect_initial", 0.01)  # tests do not wait for backoff
        options.setdefault("reconnect_max", 0.05)
        options.setdefault("stop_timeout", 1.0)
        config = SmppCarrierConfig(name="testsmsc", host="127.0.0.1", port=port, **options)
        carrier = SmppCarrier(config)
        await carrier.start(sink)
        started.append(carrier)
        if wait:
            async with asyncio.timeout(5):
                await carrier.wait_bound()
        return carrier

    yield start
    for carrier in started:
        await carrier.stop()


@pytest.fixture
async def carrier(simulator: SmscSimulator, carrier_factory: CarrierFactory) -> SmppCarrier:
    return await carrier_factory(simulator.port)
