"""partitions by time (PostgreSQL): parts, callback events and attempts, pending receipts,
idempotency keys

Each table becomes a declaratively partitioned table (db/partitions.py says why by id); the
existing table, renamed `<table>_initial` with its indexes, is ATTACHed as the partition of
the rows from before (by id: MINVALUE to LEGACY_BOUND; idempotency keys: up to the next
partition boundary), so no row is copied: ATTACH scans it once to check its bound, under this
migration's lock. Its indexes become the partitions of the parent's indexes without a rebuild,
except where a key changes:

- callback_events: `event_id` (a UUID made by the gateway) is no longer UNIQUE, which a
  partitioned table can only enforce with the partition key in it; a plain index replaces it.
- callback_attempts: partitioned by `event_id`, so its primary key is `(event_id, id)`.
- idempotency_keys: primary key `(account_id, key, created_at)`; a key is kept unique across
  partitions by the claim (an advisory lock on the key, then a look at the keys of its
  lifetime: messaging/writer.py).

The ids of parts, callback events and pending receipts become time-ordered from here on (their
sequence gives the low 22 bits); the sequences are re-owned by the new tables, so dropping an
`_initial` partition keeps them. Then the partitions from today to `partition_days` x
`partition_ahead_days` ahead are created. SQLite: nothing changes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 23:40:00
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from alembic import op

from tikosms.config import Settings
from tikosms.db import partitions as pt
from tikosms.db.types import utcnow

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    settings = Settings()
    now = utcnow()
    days, ahead = settings.partition_days, settings.partition_ahead_days
    _by_id(conn, "parts", time_ids=True)
    _by_id(conn, "callback_events", time_ids=True, drop_unique="uq_callback_events_event_id",
           plain_index=("ix_callback_events_event_id", "event_id"))
    _by_id(conn, "callback_attempts", time_ids=False, key="event_id",
           primary_key=("event_id", "id"))
    _by_id(conn, "pending_receipts", time_ids=True)
    first_key_bound = pt.interval_start(now, days) + timedelta(days=days)
    _idempotency_keys(conn, first_key_bound)
    for table in pt.TABLES:
        initial_end = first_key_bound if not table.by_id else pt.id_time(pt.LEGACY_BOUND)
        initial = pt.Partition(table.name, f"{table.name}_initial", None, initial_end, 0, 0)
        for name, start, end in pt.plan_missing(table, [initial], now, days, ahead):
            for sql in pt.create_sql(table, name, start, end):
                conn.execute(sa.text(sql))


def _indexes(conn: sa.Connection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(sa.text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = :t ORDER BY indexname"), {"t": table})]


def _by_id(conn: sa.Connection, table: str, *, time_ids: bool, key: str = "id",
           primary_key: tuple[str, ...] = ("id",), drop_unique: str | None = None,
           plain_index: tuple[str, str] | None = None) -> None:
    old = f"{table}_initial"
    pk = f"pk_{table}"
    indexes = [(n, d) for n, d in _indexes(conn, table) if n not in (pk, drop_unique)]
    top = conn.execute(sa.text(f'SELECT max("{key}") FROM "{table}"')).scalar()
    if top is not None and top >= pt.LEGACY_BOUND:
        raise RuntimeError(f"{table}.{key} holds {top}, beyond the ids of the initial "
                           f"partition ({pt.LEGACY_BOUND}): cannot partition it in place")
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    for name, _ in indexes:
        op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_initial"')
    if drop_unique:
        op.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT "{drop_unique}"')
    if primary_key == ("id",):
        op.execute(f'ALTER TABLE "{old}" RENAME CONSTRAINT "{pk}" TO "{pk}_initial"')
    else:
        cols = ", ".join(f'"{c}"' for c in primary_key)
        op.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT "{pk}"')
        op.execute(f'ALTER TABLE "{old}" ADD CONSTRAINT "{pk}_initial" PRIMARY KEY ({cols})')
    op.execute(f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING STORAGE) '
               f'PARTITION BY RANGE ("{key}")')
    cols = ", ".join(f'"{c}"' for c in primary_key)
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{pk}" PRIMARY KEY ({cols})')
    for _, definition in indexes:  # as they were defined on the table of that name
        op.execute(definition)
    if plain_index:
        op.execute(f'CREATE INDEX "{plain_index[0]}" ON "{table}" ("{plain_index[1]}")')
    seq = f"{table}_id_seq"
    op.execute(f'ALTER SEQUENCE "{seq}" OWNED BY "{table}".id')
    op.execute(f'ALTER TABLE "{old}" ALTER COLUMN id DROP DEFAULT')
    if time_ids:
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN id SET DEFAULT '
                   f"{pt.TIME_ID_SQL.format(seq=seq)}")
    op.execute(f'ALTER TABLE "{table}" ATTACH PARTITION "{old}" '
               f"FOR VALUES FROM (MINVALUE) TO ({pt.LEGACY_BOUND})")


def _idempotency_keys(conn: sa.Connection, first_bound: datetime) -> None:
    table, old, pk = "idempotency_keys", "idempotency_keys_initial", "pk_idempotency_keys"
    indexes = [(n, d) for n, d in _indexes(conn, table) if n != pk]
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    for name, _ in indexes:
        op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_initial"')
    op.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT "{pk}"')
    op.execute(f'ALTER TABLE "{old}" ADD CONSTRAINT "{pk}_initial" '
               "PRIMARY KEY (account_id, key, created_at)")
    op.execute(f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING STORAGE) '
               "PARTITION BY RANGE (created_at)")
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{pk}" '
               "PRIMARY KEY (account_id, key, created_at)")
    for _, definition in indexes:
        op.execute(definition)
    op.execute(f'ALTER TABLE "{table}" ATTACH PARTITION "{old}" FOR VALUES FROM (MINVALUE) '
               f"TO ('{first_bound:%Y-%m-%d %H:%M:%S}')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        raise NotImplementedError(
            "0012 is not reversible in place: the partitioned tables would have to be copied "
            "back into plain ones (restore the backup taken before the upgrade instead)")
