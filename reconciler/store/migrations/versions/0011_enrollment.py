"""Enrollment: shared enrollment tokens (hashes), what an enrolled device said of itself
beside its token, and each device's facts and last poll time.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 07:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrollment_tokens",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("allow_reenroll", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_enrollment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrollment_tokens_token_hash")),
    )
    op.create_table(
        "device_facts",
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("device", name=op.f("pk_device_facts")),
    )
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("enrollment", sa.String(), nullable=True))
        batch.add_column(sa.Column("system_model", sa.String(), nullable=True))
        batch.add_column(sa.Column("labels", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("enrolled_at")
        batch.drop_column("labels")
        batch.drop_column("system_model")
        batch.drop_column("enrollment")
    op.drop_table("device_facts")
    op.drop_table("enrollment_tokens")
