"""Application secrets: their fingerprints (kind `secret`), so a Secret stays immutable under
its name, and per stored document whether Secret values were withheld from it (never stored): such
a document is served only once the controller has decrypted its revision.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 04:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "'credential', 'release', 'volume', 'network'"
NAME = "ck_fingerprints_kind"


def upgrade() -> None:
    _kinds(f"{KINDS}, 'secret'")
    with op.batch_alter_table("document_revisions") as batch:
        batch.add_column(sa.Column("withheld_values", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("document_revisions") as batch:
        batch.drop_column("withheld_values")
    op.execute("DELETE FROM fingerprints WHERE kind = 'secret'")
    _kinds(KINDS)


def _kinds(kinds: str) -> None:
    """The fingerprints' kinds, as 0002 changed them (batch mode: SQLite cannot alter a CHECK,
    so the table is made again and its rows copied)."""
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_constraint(NAME, type_="check")
        batch.create_check_constraint(NAME, f"kind IN ({kinds})")
