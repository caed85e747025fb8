"""The leader's term: replicas on one PostgreSQL database elect a leader with an advisory lock,
and each new leader takes the next term. A commit is applied only in a transaction that finds
its leader's term still current, so a leader deposed mid-apply applies nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leadership",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leadership")),
        sa.CheckConstraint("id = 1", name=op.f("ck_leadership_one_row")),
    )


def downgrade() -> None:
    op.drop_table("leadership")
