"""Migrations: processes that start together on a database behind the code migrate it once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, _admin
from tikosms.db.migrate import head_revision, upgrade
from tikosms.db.partitions import id_time
from tikosms.db.types import utcnow


@pytest.mark.skipif(not PG_URL, reason="the migration lock is PostgreSQL's")
def test_processes_migrating_at_once_both_succeed() -> None:
    assert PG_URL
    name = f"tikosms_mig_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = str(make_url(PG_URL).set(database=name))
    # processes, as in production (Alembic's `context` is one per process, not per thread)
    code = "import sys; from tikosms.db.migrate import upgrade; upgrade(sys.argv[1])"
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE)
                 for _ in range(3)]
        errors = [p.communicate(timeout=120)[1].decode() for p in procs if p.wait(120) != 0]
        assert errors == []
        async def version() -> str:
            conn = await asyncpg.connect(make_url(url).set(drivername="postgresql")
                                         .render_as_string(hide_password=False))
            try:
                return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
            finally:
                await conn.close()

        assert asyncio.run(version()) == head_revision()
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.skipif(not PG_URL, reason="partitions are PostgreSQL's")
def test_rows_from_before_the_partitions_stay_in_the_initial_partition() -> None:
    """0012 on a database with history: the old rows keep their ids in `<table>_initial`,
    new rows get time-ordered ids in the partition of their day."""
    assert PG_URL
    name = f"tikosms_mig_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = str(make_url(PG_URL).set(database=name))
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        upgrade(url, "0010")

        async def before() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(
                    "INSERT INTO pending_receipts (carrier_message_id, status, received_at) "
                    "SELECT 'old-' || g, 'DELIVRD', now() FROM generate_series(1, 3) g")
                await conn.execute(
                    "INSERT INTO idempotency_keys (account_id, key, endpoint, request_hash, "
                    "status_code, response_body, created_at) "
                    "VALUES (1, 'k', 'message', 'h', 200, '{}', now())")
            finally:
                await conn.close()

        async def after() -> tuple[list[Any], Any, Any]:
            conn = await asyncpg.connect(dsn)
            try:
                old = await conn.fetch("SELECT id, tableoid::regclass::text AS home "
                                       "FROM pending_receipts ORDER BY id")
                new = await conn.fetchrow(
                    "INSERT INTO pending_receipts (carrier_message_id, status, received_at) "
                    "VALUES ('new', 'DELIVRD', now()) RETURNING id, tableoid::regclass::text")
                key = await conn.fetchval("SELECT tableoid::regclass::text FROM "
                                          "idempotency_keys WHERE key = 'k'")
                return list(old), new, key
            finally:
                await conn.close()

        asyncio.run(before())
        upgrade(url)
        old, new, key = asyncio.run(after())
        assert [(r["id"], r["home"]) for r in old] == [(i, "pending_receipts_initial")
                                                        for i in (1, 2, 3)]
        assert new[1] == f"pending_receipts_p{utcnow():%Y%m%d}"
        assert abs((id_time(new[0]) - utcnow()).total_seconds()) < 60
        assert key == "idempotency_keys_initial"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
