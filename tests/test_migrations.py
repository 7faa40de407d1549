"""Migrations: processes that start together on a database behind the code migrate it once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, _admin
from tikosms.db.migrate import head_revision


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
