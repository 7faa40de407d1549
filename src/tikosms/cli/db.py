"""tikosms db upgrade | current."""

from __future__ import annotations

import click

from tikosms.cli.base import cli, database_url, ensure_schema, fail


@cli.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations)."""


@db_group.command("upgrade")
def upgrade() -> None:
    """Create or upgrade the schema to the latest version."""
    from tikosms.db.migrate import head_revision

    try:
        ensure_schema(database_url())
    except Exception as exc:
        fail(f"migration failed: {exc}", code=2)
    click.echo(f"database is at schema revision {head_revision()}")
