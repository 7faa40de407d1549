"""The SMPP connector's MO path over real TCP against the simulator: an MO is acknowledged only
after the handler has stored it, and one it failed to store is delivered again."""

from __future__ import annotations

import asyncio

from tikosms.delivery.carrier import InboundPdu, Receipt
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.simulator import SimulatorConfig, SmscSimulator


async def _no_receipt(_receipt: Receipt) -> None:
    raise AssertionError("no receipt expected")


async def test_an_mo_the_handler_failed_to_store_comes_again() -> None:
    sim = SmscSimulator(SimulatorConfig(port=0, receipt_retry_ms=50))
    await sim.start()
    carrier = SmppCarrier(SmppCarrierConfig(name="sim", host="127.0.0.1", port=sim.port,
                                            system_id="tiko", password="pw"))
    received: list[InboundPdu] = []
    calls = 0

    async def on_inbound(pdu: InboundPdu) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database away")
        received.append(pdu)

    carrier.on_inbound = on_inbound
    await carrier.start(_no_receipt)
    try:
        async with asyncio.timeout(10):
            await carrier.wait_bound()
            parts = await sim.send_mo("+380501234567", "4455", "hello", system_id="tiko")
        assert parts == 1
        assert calls == 2  # refused (ESME_RSYSERR) once, then sent again and stored
        assert (sim.counters.mo_sent, sim.counters.mo_acked) == (2, 1)
        [pdu] = received
        assert (pdu.source_addr, pdu.destination_addr, pdu.short_message, pdu.carrier) == (
            "+380501234567", "4455", b"hello", "sim")
    finally:
        await carrier.stop()
        await sim.stop()


async def test_without_a_handler_an_mo_is_acknowledged_and_dropped() -> None:
    sim = SmscSimulator(SimulatorConfig(port=0))
    await sim.start()
    carrier = SmppCarrier(SmppCarrierConfig(name="sim", host="127.0.0.1", port=sim.port,
                                            system_id="tiko", password="pw"))
    await carrier.start(_no_receipt)
    try:
        async with asyncio.timeout(10):
            await carrier.wait_bound()
            await sim.send_mo("380501234567", "4455", "x" * 400, order="reverse")
        assert sim.counters.mo_acked == sim.counters.mo_sent == 3
    finally:
        await carrier.stop()
        await sim.stop()
