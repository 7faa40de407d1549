"""Large campaigns resolve numbers in a process pool: the answer must not change."""

from __future__ import annotations

import time
import uuid

from tikosms.messaging import resolver
from tikosms.messaging.service import new_ids


async def test_pool_resolution_matches_in_process_resolution() -> None:
    numbers = [f"38050{1000000 + i}" for i in range(resolver.POOL_THRESHOLD)]
    numbers[7] = "12"  # invalid
    numbers[99] = "+49 151 23456789"  # another country
    pooled = await resolver.resolve_many(numbers, None)
    assert pooled == resolver.resolve_chunk(numbers, None)
    assert pooled[7] is None
    assert pooled[99] == ("4915123456789", "262", pooled[99][2], pooled[99][3])
    assert pooled[0] == ("380501000000", "255", "01", "25501")


def test_message_ids_are_distinct_version_7_uuids_in_creation_order() -> None:
    before = time.time()
    ids = new_ids(1000)
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)  # increasing: appended to the message_id index, not scattered
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
        assert abs(int(text.replace("-", "")[:12], 16) / 1000 - before) < 60  # Unix ms first
    assert not set(ids) & set(new_ids(1000))  # another call starts elsewhere
