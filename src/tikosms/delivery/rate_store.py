"""The shared rates' store in PostgreSQL: one `carrier_rates` row per carrier, one statement
per chunk of tokens, which also adds the sender's answers to the fleet's counts and renews or
hands over the judge's lease (see tikosms.smpp.shared_rate for the algorithm)."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.smpp.shared_rate import (
    JUDGE_LEASE,
    SLACK,
    Answers,
    Decision,
    Grant,
    RedisRateStore,
    SharedRates,
    StoreDown,
)

# A chunk is given when the carrier's `tat` has passed, give or take SLACK (PostgreSQL's clock,
# the same for every machine); the row is locked for the one statement only (autocommit).
_TAKE = text("""
WITH old AS (
    SELECT tat, judge, judge_seen, extract(epoch FROM clock_timestamp())::float8 AS now,
           :publish AND (:base < 0 OR version = :base) AS pub
    FROM carrier_rates WHERE carrier = :carrier FOR UPDATE
), upd AS (
    UPDATE carrier_rates AS r SET
        tat = CASE WHEN old.tat <= old.now + :slack
                   THEN greatest(old.tat, old.now - :slack) + :cost ELSE old.tat END,
        taken = r.taken + CASE WHEN old.tat <= old.now + :slack THEN :tokens ELSE 0 END,
        rate = CASE WHEN old.pub THEN :rate ELSE r.rate END,
        slow_start = CASE WHEN old.pub THEN :slow_start ELSE r.slow_start END,
        baseline = CASE WHEN old.pub THEN :baseline ELSE r.baseline END,
        version = r.version + CASE WHEN old.pub THEN 1 ELSE 0 END,
        answered = r.answered + :answered,
        refused = r.refused + :refused,
        judge = CASE WHEN old.judge IS NULL OR old.judge = :me
                          OR old.judge_seen < old.now - :lease THEN :me ELSE old.judge END,
        judge_seen = CASE WHEN old.judge IS NULL OR old.judge = :me
                               OR old.judge_seen < old.now - :lease
                          THEN old.now ELSE old.judge_seen END
    FROM old WHERE r.carrier = :carrier
    RETURNING r.taken, r.rate, r.slow_start, r.baseline, r.version, r.answered, r.refused,
              r.judge
)
SELECT old.tat <= old.now + :slack AS granted, old.tat - old.now - :slack AS wait,
       upd.taken, upd.rate, upd.slow_start, upd.baseline, upd.version, upd.answered,
       upd.refused, upd.judge = :me AS judging, old.pub AS published
FROM old, upd
""").bindparams(
    bindparam("cost", type_=Float), bindparam("slack", type_=Float),
    bindparam("tokens", type_=Integer),
    bindparam("publish", type_=Boolean), bindparam("base", type_=Integer),
    bindparam("rate", type_=Float),
    bindparam("slow_start", type_=Boolean), bindparam("baseline", type_=Float),
    bindparam("answered", type_=Integer), bindparam("refused", type_=Integer),
    bindparam("me", type_=String), bindparam("lease", type_=Float),
)
_CREATE = text("""
INSERT INTO carrier_rates (carrier, tat, taken, rate, slow_start, version)
VALUES (:carrier, 0, 0, NULL, true, 0) ON CONFLICT (carrier) DO NOTHING
""")


class PostgresRateStore:
    name = "postgresql"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: set[str] = set()  # carriers whose row exists

    async def take(self, carrier: str, tokens: int, rate: float,
                   decision: Decision | None, answers: Answers) -> Grant:
        params = {
            "carrier": carrier, "cost": tokens / rate, "slack": SLACK, "tokens": tokens,
            "publish": decision is not None,
            "base": -1 if decision is None or decision.base is None else decision.base,
            "rate": decision.rate if decision else 0.0,
            "slow_start": decision.slow_start if decision else True,
            "baseline": decision.baseline if decision else 0.0,
            "answered": answers.answered, "refused": answers.refused,
            "me": answers.sender, "lease": JUDGE_LEASE,
        }
        try:
            async with self.db.connect() as conn:
                if carrier not in self._known:
                    await conn.execute(_CREATE, {"carrier": carrier})
                    self._known.add(carrier)
                row = (await conn.execute(_TAKE, params)).one()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreDown(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc
        return Grant(bool(row.granted), float(row.wait), int(row.taken),
                     None if row.rate is None else float(row.rate), bool(row.slow_start),
                     int(row.version), float(row.baseline), int(row.answered),
                     int(row.refused), bool(row.judging), bool(row.published))

    async def close(self) -> None:
        """The database is the worker's: nothing to close."""


def open_shared_rates(db: Database, settings: Settings) -> SharedRates | None:
    """The store the settings ask for: Redis when its URL is set, else PostgreSQL when the
    database is; None (each carrier its own bucket) on SQLite or when turned off."""
    if not settings.rate_shared:
        return None
    if settings.rate_redis_url:
        return SharedRates(RedisRateStore(settings.rate_redis_url, settings.rate_redis_prefix))
    if db.is_postgres:
        return SharedRates(PostgresRateStore(db))
    return None
