"""Devices waiting to be planned again: written in the transaction that makes a device need it
(a commit that changes its document, a report that changes what it runs) and cleared when it is
planned. A controller that starts, or a replica that takes over, plans these and no others.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 18:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replans",
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device", name=op.f("pk_replans")),
    )


def downgrade() -> None:
    op.drop_table("replans")
