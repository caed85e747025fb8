"""Application secrets: their fingerprints (kind `secret`), so a Secret stays immutable under
its name, and per stored document whether it needs Secret values, which are never stored: such
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


def upgrade() -> None:
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_constraint(op.f("ck_fingerprints_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({KINDS}, 'secret')")
    with op.batch_alter_table("document_revisions") as batch:
        batch.add_column(sa.Column("needs_secrets", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("document_revisions") as batch:
        batch.drop_column("needs_secrets")
    op.execute("DELETE FROM fingerprints WHERE kind = 'secret'")
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_constraint(op.f("ck_fingerprints_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({KINDS})")
