"""The operator's numbering plan (prefix -> MCC/MNC) in the database, and its in-process cache.

Sends read the plan from a cache refreshed every `REFRESH_SECONDS`, so an import made by
`tikosms numbering import` in another process takes effect within that time.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import NumberingPrefix
from tikosms.numbers import NumberingPlan

REFRESH_SECONDS = 5.0

_cache: dict[Any, tuple[float, NumberingPlan | None]] = {}


async def numbering_plan(conn: AsyncConnection) -> NumberingPlan | None:
    key = conn.engine  # the engine itself: a URL hashes by rendering itself as text
    hit = _cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < REFRESH_SECONDS:
        return hit[1]
    if hit is not None:
        # one request reads the plan again; those arriving meanwhile keep the plan they would
        # have had a moment earlier, instead of each reading it too
        _cache[key] = (now, hit[1])
    rows = (await conn.execute(select(NumberingPrefix))).all()
    plan = NumberingPlan((r.prefix, r.mcc, r.mnc) for r in rows) if rows else None
    _cache[key] = (now, plan)
    return plan


def invalidate() -> None:
    _cache.clear()


async def replace_plan(
    conn: AsyncConnection, rows: list[tuple[str, str, str | None]]
) -> int:
    """Replace the whole plan with `rows` (an import is the new truth, not a merge)."""
    await conn.execute(delete(NumberingPrefix))
    if rows:
        await conn.execute(
            insert(NumberingPrefix),
            [{"prefix": p, "mcc": mcc, "mnc": mnc} for p, mcc, mnc in rows],
        )
    invalidate()
    return len(rows)
