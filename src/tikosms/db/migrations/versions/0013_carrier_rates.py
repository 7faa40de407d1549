"""carrier_rates: one token budget per carrier, shared by every worker process

Each process sending to an SMPP carrier takes its tokens in chunks from this row (one UPDATE
per chunk of ~5 % of the rate), and the adaptive throttling's rate is kept here too, so that
N processes together never exceed the carrier's agreed (or found) rate. The fleet's answers are
counted here too (answered, refused), for the one process (`judge`, a lease) whose controller
judges them for the fleet.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 23:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carrier_rates",
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("taken", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("slow_start", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("baseline", sa.Float(), nullable=False, server_default="0"),
        sa.Column("answered", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("refused", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("judge", sa.String(length=40), nullable=True),
        sa.Column("judge_seen", sa.Float(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("carrier", name=op.f("pk_carrier_rates")),
    )


def downgrade() -> None:
    op.drop_table("carrier_rates")
