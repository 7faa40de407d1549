"""Planner statistics of fast-growing tables (PostgreSQL): ANALYZE them before autovacuum does.

The gateway's hot statements look rows up by lists of keys (`carrier_message_id = ANY(...)`,
`id = ANY(...)`, a join to the part's campaign). With statistics, PostgreSQL reads them through
the indexes. Without, it estimates a list of keys to match a large share of the table and scans
it whole, with a hash of every campaign besides; and a plan cached by a prepared statement
keeps that choice until the next ANALYZE. Autovacuum analyses a table once 50 rows + 10 % of
it have changed, looking at most once a minute (`autovacuum_naptime`), and never a
partitioned parent. So a table that grows from nothing goes its first minute or more without
statistics: a new day's partition of `parts` (`db/partitions.py`), a fresh install, a
benchmark's scratch database. Measured with bench/quick_sustained.py (PostgreSQL, wrk, 2
cores): every receipt batch scanned the day's partition and all campaigns, and PostgreSQL's CPU
per send was 0.37 ms against 0.26 ms with statistics.

`analyze_grown` analyses each table of the schema (partitions included) that has changed more
than it holds since its last analysis (and at least MIN_CHANGES rows): a growing table about
each time it doubles, so log2 of its final size times in all. A large table is left to
autovacuum, which reaches it well before. One process of a fleet at a time (an advisory lock
taken without waiting); an ANALYZE that would wait for a lock (autovacuum on the same table,
an ATTACH) gives up after LOCK_TIMEOUT and is tried at the next turn.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("tikosms.db")

MIN_CHANGES = 1000  # rows changed before a table is worth analysing here
LOCK_KEY = 0x7469_6B6F_0005  # pg_try_advisory_xact_lock: one analysing process at a time
LOCK_TIMEOUT = "1s"
PERIOD = 2.0  # seconds between looks (the delivery worker's `statistics` task)

_GROWN = text("""
SELECT s.relname, s.n_mod_since_analyze
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND c.relkind = 'r'
  AND s.n_mod_since_analyze >= greatest(:least, c.reltuples)
ORDER BY s.n_mod_since_analyze DESC
""")


async def analyze_grown(conn: AsyncConnection, least: int = MIN_CHANGES) -> list[str]:
    """ANALYZE the tables that changed more than they hold since their last analysis; the
    names analysed (none on SQLite, or while another process is at it). In the caller's
    transaction: the advisory lock and the lock timeout end with it."""
    if conn.dialect.name != "postgresql":
        return []
    if not (await conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                               {"k": LOCK_KEY})).scalar_one():
        return []
    grown = (await conn.execute(_GROWN, {"least": least})).all()
    if not grown:
        return []
    await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    done: list[str] = []
    for name, changed in grown:
        try:
            async with conn.begin_nested():
                await conn.execute(text(f'ANALYZE "{name}"'))
        except DBAPIError as exc:  # lock_timeout: somebody else holds it; next turn
            log.debug("analyse of %s put off: %s", name, str(exc).splitlines()[0][:200])
            continue
        done.append(name)
        log.debug("analysed %s: %d rows changed since its last analysis", name, changed)
    return done
