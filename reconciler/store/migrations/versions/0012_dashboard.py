"""The dashboard: each revision's commit subject line, and read-only viewer tokens (hashes).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 07:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
    op.create_table(
        "viewer_tokens",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_viewer_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_viewer_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("viewer_tokens")
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("message")
