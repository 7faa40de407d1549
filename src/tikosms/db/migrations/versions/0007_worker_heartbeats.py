"""worker heartbeats: one row per running worker process, for readiness and the console

Every worker process upserts its row every few seconds (owner, host, pid, roles, the bind
states of its carriers as JSON) and deletes it when it stops cleanly; the API processes'
`/readyz` and the console's overview and carriers pages read them. A handful of rows: no index
beyond the primary key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 19:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("roles", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("carriers", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_worker_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
