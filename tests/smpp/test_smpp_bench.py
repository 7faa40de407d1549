"""The benchmark helpers run end to end (figures are for bench/, never asserted here)."""

from __future__ import annotations

from tikosms.smpp.bench import connector_submit_rate, raw_submit_rate
from tikosms.smpp.simulator import SmscSimulator


async def test_raw_submit_rate_submits_every_part(simulator: SmscSimulator) -> None:
    result = await raw_submit_rate(
        "127.0.0.1", simulator.port, system_id="tiko", password="secret", parts=200, window=20
    )
    assert (result.parts, result.accepted) == (200, 200)
    assert result.parts_per_second > 0


async def test_connector_submit_rate_submits_every_part(simulator: SmscSimulator) -> None:
    result = await connector_submit_rate(
        "127.0.0.1", simulator.port, system_id="tiko", password="secret", parts=200, window=20
    )
    assert (result.parts, result.accepted) == (200, 200)
    assert simulator.counters.submits == 200
