"""console: operator users and their sessions, login throttling, traffic roll-ups, part lookups

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("name", name=op.f("uq_operators_name")),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"], ondelete="CASCADE",
                                name=op.f("fk_operator_sessions_operator_id_operators")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_operator_sessions")),
    )
    op.create_index(op.f("ix_operator_sessions_operator_id"), "operator_sessions",
                    ["operator_id"], unique=False)
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    op.create_table(
        "traffic_minutes",
        sa.Column("minute", sa.DateTime(), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("mccmnc", sa.String(length=6), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("dlv_hist", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "carrier", "mccmnc", name=op.f("pk_traffic_minutes")),
    )
    op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("watermark", sa.DateTime(), nullable=False),
        sa.Column("ran_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_state")),
    )
    op.create_index("ix_parts_updated_at", "parts", ["updated_at"], unique=False)
    op.create_index("ix_parts_to", "parts", ["to"], unique=False)
    op.create_index("ix_parts_client_ref", "parts", ["client_ref"], unique=False,
                    postgresql_where=sa.text("client_ref IS NOT NULL"),
                    sqlite_where=sa.text("client_ref IS NOT NULL"))
    op.create_index("ix_campaigns_kind_created", "campaigns", ["kind", "created_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_campaigns_kind_created", table_name="campaigns")
    op.drop_index("ix_parts_client_ref", table_name="parts")
    op.drop_index("ix_parts_to", table_name="parts")
    op.drop_index("ix_parts_updated_at", table_name="parts")
    op.drop_table("rollup_state")
    op.drop_table("traffic_minutes")
    op.drop_table("login_throttle")
    op.drop_index(op.f("ix_operator_sessions_operator_id"), table_name="operator_sessions")
    op.drop_table("operator_sessions")
    op.drop_table("operators")
