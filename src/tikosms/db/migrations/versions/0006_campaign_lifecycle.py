"""campaign lifecycle: completed campaigns and counts by status; routes that can be disabled

The worker's housekeeping counts the parts of every campaign not yet finished and stores the
counts on the campaign (`counts` JSON, `counted_at`), and `completed_at` once every part is final
(status then moves active -> completed). The partial index holds only unfinished campaigns, so
each round finds them without reading the millions that are done. `routes.enabled` lets an
operator stop a route without removing it (running workers apply it within seconds).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = sa.text("completed_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("counts", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("counted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("completed_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_campaigns_unfinished", ["id"], unique=False,
                              postgresql_where=_UNFINISHED, sqlite_where=_UNFINISHED)
    with op.batch_alter_table("routes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enabled", sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("routes", schema=None) as batch_op:
        batch_op.drop_column("enabled")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_unfinished")
        batch_op.drop_column("completed_at")
        batch_op.drop_column("counted_at")
        batch_op.drop_column("counts")
