"""Submit-rate helpers for bench/: how many parts a second reach an SMSC.

`raw_submit_rate` drives smpp34's own client (a transmitter bind, no receipts asked for) with a
semaphore as window: the codec's ceiling. `connector_submit_rate` drives `SmppCarrier`, the
path the gateway takes. Both return parts per second over the whole run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import smpp34

from tikosms.delivery.carrier import OutboundPart, Receipt, SubmitResult
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import SmppCarrier


@dataclass(frozen=True, slots=True)
class BenchResult:
    parts: int
    accepted: int
    seconds: float

    @property
    def parts_per_second(self) -> float:
        return self.parts / self.seconds if self.seconds > 0 else 0.0


async def raw_submit_rate(
    host: str,
    port: int,
    *,
    system_id: str = "bench",
    password: str = "bench",
    parts: int = 10_000,
    window: int = 100,
) -> BenchResult:
    """Submit `parts` with at most `window` awaiting a response, on one smpp34 bind."""
    client = smpp34.Client(host, port, system_id, password, bind_type="TX", window_size=window)
    session = await client.connect()
    slots = asyncio.Semaphore(window)  # smpp34 does not enforce window_size itself
    accepted = 0

    async def one(index: int) -> None:
        nonlocal accepted
        async with slots:
            response = await session.submit_sm(
                "380501234567",
                f"bench {index}".encode(),
                source_addr="TikoBench",
                source_addr_ton=5,
                registered_delivery=0,
            )
        accepted += response.is_success

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(parts)))
        return BenchResult(parts, accepted, time.perf_counter() - started)
    finally:
        await session.unbind()
        await client.stop()


async def connector_submit_rate(
    host: str,
    port: int,
    *,
    system_id: str = "bench",
    password: str = "bench",
    parts: int = 10_000,
    window: int = 100,
    binds: int = 1,
    concurrency: int | None = None,
) -> BenchResult:
    """Submit `parts` through SmppCarrier (receipts are asked for and acknowledged)."""
    config = SmppCarrierConfig(
        name="bench",
        host=host,
        port=port,
        system_id=system_id,
        password=password,
        binds=binds,
        window=window,
    )
    carrier = SmppCarrier(config)

    async def on_receipt(receipt: Receipt) -> None:
        return None

    await carrier.start(on_receipt)
    await carrier.wait_bound()
    limit = asyncio.Semaphore(concurrency or window * binds * 2)
    accepted = 0

    async def one(index: int) -> None:
        nonlocal accepted
        text = f"bench {index}"
        part = OutboundPart(index, "380501234567", "TikoBench", "Alpha", text, 0, 1, 1, 0)
        async with limit:
            outcome = await carrier.submit(part)
        accepted += outcome.result is SubmitResult.ACCEPTED

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(parts)))
        return BenchResult(parts, accepted, time.perf_counter() - started)
    finally:
        await carrier.stop()
