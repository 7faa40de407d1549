"""customers over SMPP: SMPP credentials per account and the outbox of their deliver_sm

`smpp_users` holds the credentials a customer binds with (argon2id hash, binds, window, rate,
IP allowlist). `smpp_outbox` holds what is owed to a customer's receiver binds (receipts now,
MO later), each kept until acknowledged; the partial index holds only items not yet delivered.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 20:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("delivered_at IS NULL")
_DELIVERED = sa.text("delivered_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "smpp_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("system_id", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("max_binds", sa.Integer(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("tps", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("allow_ip", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_smpp_users_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smpp_users")),
        sa.UniqueConstraint("system_id", name=op.f("uq_smpp_users_system_id")),
    )
    op.create_index(op.f("ix_smpp_users_account_id"), "smpp_users", ["account_id"],
                    unique=False)
    op.create_table(
        "smpp_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smpp_outbox")),
    )
    op.create_index("ix_smpp_outbox_due", "smpp_outbox", ["account_id", "next_attempt_at"],
                    unique=False, postgresql_where=_PENDING, sqlite_where=_PENDING)
    op.create_index("ix_smpp_outbox_delivered", "smpp_outbox", ["delivered_at"], unique=False,
                    postgresql_where=_DELIVERED, sqlite_where=_DELIVERED)


def downgrade() -> None:
    op.drop_index("ix_smpp_outbox_delivered", table_name="smpp_outbox")
    op.drop_index("ix_smpp_outbox_due", table_name="smpp_outbox")
    op.drop_table("smpp_outbox")
    op.drop_index(op.f("ix_smpp_users_account_id"), table_name="smpp_users")
    op.drop_table("smpp_users")
