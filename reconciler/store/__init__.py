"""The state store (adapter): SQLite by default, PostgreSQL by URL, migrated by Alembic.

`records` are the plain values it takes and gives, `schema` the tables, `store` the queries.
"""

from reconciler.store.errors import NotLeader, StoreError, StoreUnavailable
from reconciler.store.records import (
    FINGERPRINT_KINDS,
    EventIn,
    EventRecord,
    FingerprintKind,
    JSONObject,
    PlannedDevice,
    RevisionRecord,
    StatusRecord,
    StoredReport,
)
from reconciler.store.store import DATABASE_FILE, Store, display_url, migrate, sqlite_url

__all__ = [
    "DATABASE_FILE",
    "FINGERPRINT_KINDS",
    "EventIn",
    "EventRecord",
    "FingerprintKind",
    "JSONObject",
    "NotLeader",
    "PlannedDevice",
    "RevisionRecord",
    "StatusRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredReport",
    "display_url",
    "migrate",
    "sqlite_url",
]
