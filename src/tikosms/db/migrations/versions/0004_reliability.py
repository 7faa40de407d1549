"""reliability: counters that cannot overflow, capped unanswered submits, expiry indexes

- parts.attempts SMALLINT -> INTEGER (and the claim caps it with LEAST): a part retried every
  second for ~9 h overflowed a SMALLINT, and from then on every claim failed for everyone.
- parts.unanswered: submits the carrier may have sent without a usable answer, capped per part.
- indexes on pending_receipts.received_at and idempotency_keys.created_at, which housekeeping
  deletes by in small batches.

batch_alter_table so that SQLite (which cannot ALTER a column's type) copies the table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 16:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("parts", schema=None) as batch_op:
        batch_op.alter_column("attempts", existing_type=sa.SmallInteger(), type_=sa.Integer(),
                              existing_nullable=False)
        batch_op.add_column(sa.Column("unanswered", sa.Integer(), nullable=False,
                                      server_default=sa.text("0")))
    with op.batch_alter_table("pending_receipts", schema=None) as batch_op:
        batch_op.create_index("ix_pending_receipts_received_at", ["received_at"], unique=False)
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_created_at")
    with op.batch_alter_table("pending_receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_receipts_received_at")
    with op.batch_alter_table("parts", schema=None) as batch_op:
        batch_op.drop_column("unanswered")
        batch_op.alter_column("attempts", existing_type=sa.Integer(), type_=sa.SmallInteger(),
                              existing_nullable=False)
