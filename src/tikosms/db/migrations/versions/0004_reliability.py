"""reliability: counters that cannot overflow, bounded carrier strings

Reserved in the migration chain so that work in parallel branches keeps one linear history;
filled in by the change that needs it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 16:50:00
"""
from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
