"""Fixtures for both databases: every DB-backed test runs on SQLite, and on PostgreSQL whenever
TIKOSMS_TEST_POSTGRES_URL is set (.ci/run sets it). Each test gets a fresh database copied from a
migrated template, so tests never share state."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from tikosms.accounts import service as accounts
from tikosms.app import create_app
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.migrate import upgrade
from tikosms.db.types import utcnow
from tikosms.rates.service import RateRow, import_rates

# CI runs the same examples every time (a property failure is found locally, not as a flake)
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

PG_URL = os.environ.get("TIKOSMS_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmpl") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    assert PG_URL
    name = f"tikosms_tmpl_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    upgrade(str(make_url(PG_URL).set(database=name)))
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(sql: str) -> None:
    """One statement on the PostgreSQL server's own database (CREATE/DROP DATABASE)."""
    assert PG_URL

    async def go() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(PG_URL))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "tikosms.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    assert PG_URL
    template = request.getfixturevalue("pg_template")
    name = f"tikosms_t_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield str(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        callback_allow_private=True,
        sim_receipt_delay_ms=50,
        idle_poll_seconds=0.05,
        lease_seconds=30,
        callback_retry_initial_seconds=0.05,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tikosms.test") as c:
        yield c


@dataclass
class Customer:
    account_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_customer(
    db: Database, balance: str = "100", credit_limit: str = "0", name: str = "Acme"
) -> Customer:
    async with db.begin() as conn:
        account_id, token, _ = await accounts.create_account(
            conn, name=name, balance=Decimal(balance), credit_limit=Decimal(credit_limit)
        )
    return Customer(account_id, token)


UA_RATES = [
    RateRow(None, "255", "001", "Ukraine", Decimal("0.045"), utcnow().replace(year=2020), None),
    RateRow(None, "255", "003", "Ukraine", Decimal("0.05"), utcnow().replace(year=2020), None),
    RateRow(None, "255", "", "Ukraine", Decimal("0.06"), utcnow().replace(year=2020), None),
    RateRow(None, "262", "", "Germany", Decimal("0.0755"), utcnow().replace(year=2020), None),
]


async def add_rates(db: Database, rows: list[RateRow] | None = None,
                    account_id: int | None = None) -> None:
    async with db.begin() as conn:
        await import_rates(conn, rows or UA_RATES, account_id)


@pytest.fixture
async def customer(db: Database) -> Customer:
    await add_rates(db)
    return await make_customer(db)
