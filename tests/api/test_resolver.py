"""Large campaigns resolve numbers in a process pool: the answer must not change."""

from __future__ import annotations

from tikosms.messaging import resolver


async def test_pool_resolution_matches_in_process_resolution() -> None:
    numbers = [f"38050{1000000 + i}" for i in range(resolver.POOL_THRESHOLD)]
    numbers[7] = "12"  # invalid
    numbers[99] = "+49 151 23456789"  # another country
    pooled = await resolver.resolve_many(numbers, None)
    assert pooled == resolver.resolve_chunk(numbers, None)
    assert pooled[7] is None
    assert pooled[99] is not None and pooled[99].region == "DE"
    assert pooled[0] is not None and pooled[0].mccmnc == "25501"
