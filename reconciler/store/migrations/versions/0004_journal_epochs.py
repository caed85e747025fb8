"""Agents' events are numbered per journal epoch: a wiped journal starts again, not in conflict.

Events stored before keep the empty epoch, which is also what agents without epochs report
under, so their numbers stay unique and their `lastSeq` unchanged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "uq_events_device_agent_seq"
NEW = "uq_events_device_agent_epoch_agent_seq"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("agent_epoch", sa.String(), nullable=False, server_default=""))
        batch.drop_constraint(OLD, type_="unique")
        batch.create_unique_constraint(NEW, ["device", "agent_epoch", "agent_seq"])


def downgrade() -> None:
    # only one journal per device fits the old constraint: the events of newer epochs go
    op.execute("DELETE FROM events WHERE agent_epoch <> '' AND agent_seq IS NOT NULL")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(NEW, type_="unique")
        batch.create_unique_constraint(OLD, ["device", "agent_seq"])
        batch.drop_column("agent_epoch")
