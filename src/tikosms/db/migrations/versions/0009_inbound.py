"""inbound SMS: owned numbers, inbound messages, fragments of concatenated MO, opt-outs

`owned_numbers` routes a carrier's MO to an account by the number (or short code) it was sent
to, and optionally by keyword. `inbound_fragments` keeps the parts of a concatenated MO until
the last one is in (any order, durable across a restart), then `inbound_messages` holds the
whole text. `opt_outs` are the recipients who sent a stop keyword (or were added by the
account); a send to one of them is refused. accounts gain `inbound_url` (the account's MO
callback) and `stop_keywords` (its own, beside the standard ones).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 19:55:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inbound_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("stop_keywords", sa.Text(), nullable=True))
    op.create_table(
        "owned_numbers",
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("keyword", sa.String(32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_owned_numbers_account_id_accounts")),
        sa.PrimaryKeyConstraint("number", "keyword", name=op.f("pk_owned_numbers")),
    )
    op.create_index("ix_owned_numbers_account_id", "owned_numbers", ["account_id"])
    op.create_table(
        "inbound_messages",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("sender", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data_coding", sa.SmallInteger(), nullable=False),
        sa.Column("encoding", sa.String(12), nullable=False),
        sa.Column("parts", sa.SmallInteger(), nullable=False),
        sa.Column("keyword", sa.String(32), nullable=True),
        sa.Column("opt_out", sa.String(8), nullable=True),
        sa.Column("carrier", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("public_id", name=op.f("uq_inbound_messages_public_id")),
    )
    op.create_index("ix_inbound_messages_account", "inbound_messages",
                    ["account_id", "received_at", "id"])
    op.create_table(
        "inbound_fragments",
        sa.Column("assembly", sa.String(120), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("total", sa.SmallInteger(), nullable=False),
        sa.Column("sender", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("data_coding", sa.SmallInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("carrier", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("assembly", "seq", name=op.f("pk_inbound_fragments")),
    )
    op.create_index("ix_inbound_fragments_received", "inbound_fragments", ["received_at"])
    op.create_table(
        "opt_outs",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(20), nullable=False),
        sa.Column("sender", sa.String(20), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("keyword", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "recipient", "sender", name=op.f("pk_opt_outs")),
    )


def downgrade() -> None:
    op.drop_table("opt_outs")
    op.drop_index("ix_inbound_fragments_received", table_name="inbound_fragments")
    op.drop_table("inbound_fragments")
    op.drop_index("ix_inbound_messages_account", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("ix_owned_numbers_account_id", table_name="owned_numbers")
    op.drop_table("owned_numbers")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("stop_keywords")
        batch_op.drop_column("inbound_url")
