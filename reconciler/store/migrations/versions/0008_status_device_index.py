"""An index of statuses by device: planning a device reads and prunes its statuses, and
without one each of those was a scan of the whole fleet's (quadratic in a fleet's re-plan).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_statuses_device", "statuses", ["device"])


def downgrade() -> None:
    op.drop_index("ix_statuses_device", table_name="statuses")
