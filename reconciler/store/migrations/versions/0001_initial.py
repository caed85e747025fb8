"""The initial schema: revisions, observed state, statuses, events, fingerprints, tokens.

Written out in full rather than imported from the models: a migration is history and must not
change when the models do.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revisions",
        sa.Column("sha", sa.String(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sha", name="pk_revisions"),
    )
    op.create_table(
        "observed",
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device", name="pk_observed"),
    )
    op.create_table(
        "statuses",
        sa.Column("deployment", sa.String(), nullable=False),
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("deployment", "device", name="pk_statuses"),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device", sa.String(), nullable=True),
        sa.Column("deployment", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
        sa.Column("agent_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        # an agent's retried report is stored once; NULLs (controller events) never collide
        sa.UniqueConstraint("device", "agent_seq", name="uq_events_device_agent_seq"),
    )
    # keyset pagination per device and per deployment
    op.create_index("ix_events_device_id", "events", ["device", "id"])
    op.create_index("ix_events_deployment_id", "events", ["deployment", "id"])
    op.create_table(
        "fingerprints",
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name="pk_fingerprints"),
        sa.CheckConstraint("kind IN ('credential', 'release')", name="ck_fingerprints_kind"),
    )
    op.create_table(
        "tokens",
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device", name="pk_tokens"),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_table("fingerprints")
    op.drop_index("ix_events_deployment_id", table_name="events")
    op.drop_index("ix_events_device_id", table_name="events")
    op.drop_table("events")
    op.drop_table("statuses")
    op.drop_table("observed")
    op.drop_table("revisions")
