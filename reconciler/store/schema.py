"""The schema as SQLAlchemy models; the Alembic migrations in `migrations/` are its history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JSONObject = dict[str, Any]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both sides: SQLite keeps no offset, PostgreSQL answers in its zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )


class Revision(Base):
    __tablename__ = "revisions"

    sha: Mapped[str] = mapped_column(String, primary_key=True)
    valid: Mapped[bool] = mapped_column(Boolean)
    errors: Mapped[list[JSONObject]] = mapped_column(JSON)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message: Mapped[str | None] = mapped_column(Text)  # the commit's subject line


class Observed(Base):
    __tablename__ = "observed"

    device: Mapped[str] = mapped_column(String, primary_key=True)
    document: Mapped[JSONObject] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Status(Base):
    __tablename__ = "statuses"
    # a plan reads and prunes one device's statuses: without it, each is a scan of the fleet's
    __table_args__ = (Index(None, "device"),)

    deployment: Mapped[str] = mapped_column(String, primary_key=True)
    device: Mapped[str] = mapped_column(String, primary_key=True)
    status: Mapped[JSONObject] = mapped_column(JSON)


NO_EPOCH = ""  # the journal epoch of events from agents older than epochs, and of the controller's


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # an agent numbers events per journal; NULL sequence numbers (the controller's events)
        # are distinct, and NO_EPOCH is a value, so older agents' numbers stay unique too
        UniqueConstraint("device", "agent_epoch", "agent_seq"),
        Index(None, "device", "id"),
        Index(None, "deployment", "id"),
    )

    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid)
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    device: Mapped[str | None] = mapped_column(String)
    deployment: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    message: Mapped[str] = mapped_column(Text)
    revision: Mapped[str | None] = mapped_column(String)
    agent_seq: Mapped[int | None] = mapped_column(BigInteger)
    agent_epoch: Mapped[str] = mapped_column(String, default=NO_EPOCH, server_default=NO_EPOCH)


class Fingerprint(Base):
    __tablename__ = "fingerprints"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('credential', 'release', 'volume', 'network', 'secret')", name="kind"
        ),
    )

    kind: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String)


class DocumentRevision(Base):
    """Per device, the commit that last changed what it should run: the revision its desired
    document names, kept across restarts so a restart changes no device's ETag; and the
    document itself without credentials, served by a restarted controller at once."""

    __tablename__ = "document_revisions"

    device: Mapped[str] = mapped_column(String, primary_key=True)
    revision: Mapped[str] = mapped_column(String)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    credential_images: Mapped[list[str] | None] = mapped_column(JSON)
    withheld_values: Mapped[bool | None] = mapped_column(Boolean)  # Secret values left out


class Leadership(Base):
    """The one row of the replicas' leader: its term grows with each election (see
    `reconciler.store.cluster`), and applying a commit checks it."""

    __tablename__ = "leadership"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    term: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String)
    since: Mapped[datetime] = mapped_column(UTCDateTime)


class Replan(Base):
    """A device to plan again; `generation` grows with each new reason, so a plan clears
    only the reasons it saw (`Store.replanned`)."""

    __tablename__ = "replans"

    device: Mapped[str] = mapped_column(String, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


class Rollout(Base):
    """A rollout in progress (see `reconciler.core.rollout.Active`), one row per deployment: a
    controller restarted mid-rollout, or a new leader, goes on exactly where it was."""

    __tablename__ = "rollouts"

    deployment: Mapped[str] = mapped_column(String, primary_key=True)
    record: Mapped[JSONObject] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Token(Base):
    """A device's token (its hash); with `enrollment` set, the device enrolled itself with
    that enrollment token and said what it is (see `reconciler.core.enrollment`)."""

    __tablename__ = "tokens"

    device: Mapped[str] = mapped_column(String, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enrollment: Mapped[str | None] = mapped_column(String)
    system_model: Mapped[str | None] = mapped_column(String)
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EnrollmentToken(Base):
    """A shared token devices enroll with, stored as its hash."""

    __tablename__ = "enrollment_tokens"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String, unique=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    allow_reenroll: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeviceFacts(Base):
    """What each device last said it is (`wire.Facts`), and when it last polled: for people,
    apart from the observed state, so neither makes a device be planned again."""

    __tablename__ = "device_facts"

    device: Mapped[str] = mapped_column(String, primary_key=True)
    facts: Mapped[JSONObject | None] = mapped_column(JSON)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def utc(at: datetime) -> datetime:
    """Refuse naive datetimes: a time without a zone is ambiguous once stored."""
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass a timezone-aware one")
    return at.astimezone(UTC)


class ViewerToken(Base):
    """A read-only token for the operator API and the dashboard (`hedgerow operator token
    --read-only NAME`), stored as its hash."""

    __tablename__ = "viewer_tokens"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EndedSession(Base):
    """A dashboard session logged out, until its cookie would have expired anyway: every
    replica refuses it, not only the one that ended it."""

    __tablename__ = "ended_sessions"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
