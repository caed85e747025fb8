"""Alembic environment: migrate on the connection `reconciler.store.migrate` passes in.

No alembic.ini and no URL here: the store owns the connection (and its transaction, and on
PostgreSQL an advisory lock), so migrations run exactly where the controller will read and write.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from reconciler.store.schema import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "run migrations with reconciler.store.migrate(engine) or Store.open(url): "
        "they pass the connection in config.attributes['connection']"
    )
if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: autogenerate batch operations
)
with context.begin_transaction():
    context.run_migrations()
