"""carrier slots: each carrier's allowed binds, leased by worker processes

A carrier account allows a fixed number of binds; with several worker processes each used to
open all of them. Now each bind is a row here that one worker leases (holder, lease_until) and
renews; `fencing` grows at every take-over. The rows of existing carriers are created by the
workers (and by every `tikosms carriers` change): nothing to backfill here. A handful of rows:
no index beyond the primary key.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 23:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carrier_slots",
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("carrier", "slot", name=op.f("pk_carrier_slots")),
    )


def downgrade() -> None:
    op.drop_table("carrier_slots")
