"""parts.carrier_message_id indexed only once a carrier has given it

A part gets its carrier message id when the carrier accepts it; until then the column is NULL,
and indexing 100,000 NULLs is a tenth of a campaign's COPY. Lookups by carrier message id say
`carrier_message_id IS NOT NULL` so that both databases use the partial index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 12:40:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = sa.text("carrier_message_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("parts", schema=None) as batch_op:
        batch_op.drop_index("ix_parts_carrier_msgid")
        batch_op.create_index("ix_parts_carrier_msgid", ["carrier_message_id"], unique=False,
                              postgresql_where=_WHERE, sqlite_where=_WHERE)


def downgrade() -> None:
    with op.batch_alter_table("parts", schema=None) as batch_op:
        batch_op.drop_index("ix_parts_carrier_msgid")
        batch_op.create_index("ix_parts_carrier_msgid", ["carrier_message_id"], unique=False)
