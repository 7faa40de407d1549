"""console: indexes for the Inbound page (all accounts, newest first, by account or by number)

The console lists inbound messages newest first by id, for every account or one, or for one
number (the handset's or ours), and searches the opt-outs of every account by number. The
indexes of 0009 serve one account's API list ((account_id, received_at, id)) and the opt-out
checks (primary key (account_id, recipient, sender)); these serve the console's pages without
a scan: each page is one index range of 25 rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 21:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_inbound_messages_account_id", "inbound_messages", ["account_id", "id"])
    op.create_index("ix_inbound_messages_sender", "inbound_messages", ["sender", "id"])
    op.create_index("ix_inbound_messages_recipient", "inbound_messages", ["recipient", "id"])
    op.create_index("ix_opt_outs_recipient", "opt_outs", ["recipient", "account_id", "sender"])


def downgrade() -> None:
    op.drop_index("ix_opt_outs_recipient", table_name="opt_outs")
    op.drop_index("ix_inbound_messages_recipient", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_sender", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_account_id", table_name="inbound_messages")
