"""Fingerprints of volumes and networks: they are immutable once applied, like releases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_fingerprints_kind"


def upgrade() -> None:
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_constraint(NAME, type_="check")
        batch.create_check_constraint(
            NAME, "kind IN ('credential', 'release', 'volume', 'network')"
        )


def downgrade() -> None:
    op.execute("DELETE FROM fingerprints WHERE kind IN ('volume', 'network')")
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_constraint(NAME, type_="check")
        batch.create_check_constraint(NAME, "kind IN ('credential', 'release')")
