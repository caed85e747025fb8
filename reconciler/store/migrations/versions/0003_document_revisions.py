"""Per device, the revision its desired document names, so a restart changes no ETag.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document_revisions",
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("revision", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("device", name="pk_document_revisions"),
    )


def downgrade() -> None:
    op.drop_table("document_revisions")
