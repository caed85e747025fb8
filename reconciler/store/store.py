"""The controller's state store: SQLite by default, PostgreSQL by URL.

The pure core computes (validation, desired state, plans, statuses); this module only persists
what the controller must remember across restarts and what an API shows: revisions tried and
applied, what each device reported, deployment statuses, events, fingerprints and device token
hashes. No business logic lives here, and no secret is ever stored: credentials are kept as keyed
fingerprints and device tokens as hashes, both computed by the caller.

The schema is owned by the Alembic migrations in `migrations/`; `Store.open` migrates
to the latest revision, so a new version of the controller upgrades its database on start.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, CursorResult, make_url
from sqlalchemy.exc import DatabaseError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from reconciler import wire
from reconciler.core.document import StoredDocument
from reconciler.core.enrollment import (
    EnrolledDevice,
    EnrollmentRefused,
    EnrollmentToken,
    refusal,
)
from reconciler.core.inventory import DeviceInfo, inventory, iso
from reconciler.core.reports import SequenceConflict
from reconciler.core.status import DeploymentStatus
from reconciler.store.errors import NotLeader, StoreError, StoreUnavailable
from reconciler.store.notices import APPLIED, OBSERVED, ROLLOUTS, observed_payloads
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
from reconciler.store.schema import (
    NO_EPOCH,
    Base,
    DeviceFacts,
    DocumentRevision,
    EndedSession,
    Event,
    Fingerprint,
    Leadership,
    Observed,
    Replan,
    Revision,
    Rollout,
    Status,
    Token,
    ViewerToken,
    utc,
)
from reconciler.store.schema import EnrollmentToken as EnrollmentRow

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DATABASE_FILE = "hedgerow.db"
# Serialises migrations of one PostgreSQL database when several controllers start at once.
_MIGRATION_LOCK = 0x6865_6467_6572  # "hedger"


def sqlite_url(data_dir: Path | str) -> str:
    """The default database: one SQLite file in the controller's data directory."""
    return f"sqlite:///{Path(data_dir) / DATABASE_FILE}"


T = TypeVar("T")
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


def display_url(url: str | URL) -> str:
    """A store URL fit to print: the password hidden, a SQLite file as its path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def _reason(error: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement and background link."""
    original = getattr(error, "orig", None) or error
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """A store method whose database does not answer raises StoreUnavailable."""

    @functools.wraps(method)
    def call(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except UNAVAILABLE as error:
            raise StoreUnavailable(f"the store does not answer: {_reason(error)}") from None

    return call


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database to the latest schema (or to `revision`, to test a migration from
    an older one); a no-op when it is there already."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


# The conditions of every status, counted by type and status: the JSON column's array unnested
# in SQL, which each dialect spells its own way.
_CONDITIONS_SQLITE = text(
    "SELECT json_extract(c.value, '$.type'), json_extract(c.value, '$.status'), count(*)"
    " FROM statuses, json_each(statuses.status, '$.conditions') AS c GROUP BY 1, 2"
)
_CONDITIONS_POSTGRESQL = text(
    "SELECT c->>'type', c->>'status', count(*)"
    " FROM statuses, json_array_elements(statuses.status->'conditions') AS c GROUP BY 1, 2"
)


class Store:
    """Synchronous persistence for the controller; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite writes one transaction at a time. Its busy handler polls with growing sleeps,
        # so a writer that commits back to back (reports) starves the other (a commit); the
        # store's own writers queue on this lock instead, and the busy timeout is left for
        # other processes. PostgreSQL locks rows, not the database: no lock.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self.replica = "controller"  # this process's name in its notifications to the others

    @classmethod
    def open(cls, url: str | URL) -> Self:
        """Connect and migrate. `postgresql://` means psycopg 3; SQLite files get their folder."""
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                _private_file(Path(database))
            engine = create_engine(parsed)
            _sqlite_transactions(engine)
        elif backend == "postgresql":
            # a stopped server answers at once; an unreachable one must not hold a request long
            engine = create_engine(
                parsed, pool_pre_ping=True, pool_timeout=5, connect_args={"connect_timeout": 5}
            )
        else:
            raise StoreError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")
        shown = display_url(parsed)
        try:
            migrate(engine)
        except UNAVAILABLE as error:
            engine.dispose()
            if backend == "sqlite":  # a local file that cannot be read is not coming back
                raise StoreError(f"{shown}: {_reason(error)}") from None
            raise StoreUnavailable(f"{shown} does not answer: {_reason(error)}") from None
        except DatabaseError as error:  # SQLite: "file is not a database"
            engine.dispose()
            raise StoreError(f"{shown}: {_reason(error)}") from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The database's URL, password included: for a connection of its own (`cluster`);
        never print it (`display_url` does)."""
        return self._engine.url.render_as_string(hide_password=False)

    def ping(self) -> None:
        """One round trip: raises StoreUnavailable when the database does not answer."""
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        """Close every pooled connection (PostgreSQL cannot drop a database still in use)."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # revisions

    def apply(
        self,
        sha: str,
        at: datetime,
        *,
        changed: Iterable[str] = (),
        gone: Iterable[str] = (),
        documents: Mapping[str, StoredDocument] | None = None,
        events: Sequence[EventIn] = (),
        term: int | None = None,
        rollouts: Mapping[str, JSONObject | None] | None = None,
        message: str | None = None,
    ) -> None:
        """Apply a valid commit whole, in one transaction: its attempt, its application (the
        documents of `changed` devices name `sha` from now on, kept with their `documents`
        when given; devices `gone` from the fleet are forgotten) and its events. A leader
        killed part way applied nothing, and its successor applies the commit once. With
        `term` (replicas), only while that term is the leader's: else NotLeader, and nothing
        is written. On PostgreSQL, the other replicas hear of it when the transaction
        commits (NOTIFY is transactional)."""
        with self._writing() as session:
            self._check_term(session, term)
            values = {"sha": sha, "valid": True, "errors": [], "attempted_at": utc(at),
                      "applied_at": utc(at), "message": message}  # fmt: skip
            session.execute(self._upsert(Revision, values, ["sha"]))
            if gone := sorted(gone):
                session.execute(delete(DocumentRevision).where(DocumentRevision.device.in_(gone)))
            if changed := sorted(changed):
                stored = documents or {}
                self._put_documents(
                    session, {device: (sha, stored.get(device)) for device in changed}
                )
            if events:
                session.connection().execute(
                    insert(Event), [_event_values(e, None) for e in events]
                )
            self._put_rollouts(session, rollouts or {}, at)
            self._need_replan(session, [*changed, *gone])
            self._announce(session, APPLIED, sha)

    def step_rollouts(
        self,
        rollouts: Mapping[str, JSONObject | None],
        at: datetime,
        *,
        documents: Mapping[str, StoredDocument],
        events: Sequence[EventIn] = (),
        term: int | None = None,
    ) -> None:
        """Keep rollouts' progress (a record, or None: over) with the documents of the
        devices they moved and their events, in one transaction: a device's document never
        names a release its rollout's record does not account for. The devices moved wait
        for a plan; the other replicas hear of it (see `apply`)."""
        with self._writing() as session:
            self._check_term(session, term)
            self._put_rollouts(session, rollouts, at)
            if documents:
                self._put_documents(
                    session, {device: (d.revision, d) for device, d in documents.items()}
                )
            if events:
                session.connection().execute(
                    insert(Event), [_event_values(e, None) for e in events]
                )
            self._need_replan(session, sorted(documents))
            self._announce(session, ROLLOUTS, self.replica)

    def _put_rollouts(
        self, session: Session, rollouts: Mapping[str, JSONObject | None], at: datetime
    ) -> None:
        if gone := sorted(d for d, record in rollouts.items() if record is None):
            session.execute(delete(Rollout).where(Rollout.deployment.in_(gone)))
        if kept := [(d, r) for d, r in sorted(rollouts.items()) if r is not None]:
            statement = self._insert(Rollout)
            session.connection().execute(
                statement.on_conflict_do_update(
                    index_elements=["deployment"],
                    set_={
                        "record": statement.excluded.record,
                        "updated_at": statement.excluded.updated_at,
                    },
                ),
                [{"deployment": d, "record": r, "updated_at": utc(at)} for d, r in kept],
            )

    def rollouts(self) -> dict[str, JSONObject]:
        """Every rollout in progress: deployment → its record."""
        with self._sessions() as session:
            rows = session.execute(select(Rollout.deployment, Rollout.record))
            return {deployment: record for deployment, record in rows}

    def seen_at(self, devices: Collection[str]) -> dict[str, datetime]:
        """When each of `devices` last reported (a replica's `touch` keeps it current)."""
        found: dict[str, datetime] = {}
        with self._sessions() as session:
            for chunk in _chunks(sorted(devices), 5_000):
                rows = session.execute(
                    select(Observed.device, Observed.at).where(Observed.device.in_(chunk))
                )
                found.update({device: at for device, at in rows})
        return found

    def touch(self, devices: Collection[str], at: datetime) -> None:
        """Devices that reported an unchanged state: their last report time moves on, so a
        leader on another replica does not take them for offline."""
        if not devices:
            return
        with self._writing() as session:
            for chunk in _chunks(sorted(devices), 5_000):
                session.execute(
                    update(Observed).where(Observed.device.in_(chunk)).values(at=utc(at))
                )

    def reject(
        self,
        sha: str,
        errors: Sequence[JSONObject],
        at: datetime,
        events: Sequence[EventIn] = (),
        term: int | None = None,
        message: str | None = None,
    ) -> None:
        """Record a rejected commit and its events in one transaction (see `apply`)."""
        with self._writing() as session:
            self._check_term(session, term)
            values = {"sha": sha, "valid": False, "errors": list(errors), "attempted_at": utc(at),
                      "message": message}  # fmt: skip
            session.execute(self._upsert(Revision, values, ["sha"]))
            if events:
                session.connection().execute(
                    insert(Event), [_event_values(e, None) for e in events]
                )

    def _check_term(self, session: Session, term: int | None) -> None:
        """Lock the leader's row for this transaction and check its term: an election waits
        for the transaction, and a transaction after an election finds the new term."""
        if term is None:
            return
        query = select(Leadership.term).where(Leadership.id == 1).with_for_update()
        current = session.scalar(query)
        if current != term:
            raise NotLeader(f"this replica's term {term} is over (the leader's is {current})")

    def _need_replan(self, session: Session, devices: Sequence[str]) -> None:
        if not devices:
            return
        statement = self._insert(Replan)
        session.connection().execute(
            statement.on_conflict_do_update(
                index_elements=["device"], set_={"generation": Replan.generation + 1}
            ),
            [{"device": device, "generation": 1} for device in sorted(set(devices))],
        )

    def replans(self) -> list[str]:
        """The devices waiting to be planned again (see `Replan`)."""
        with self._sessions() as session:
            return list(session.scalars(select(Replan.device).order_by(Replan.device)))

    def leadership(self) -> tuple[int, str] | None:
        """The current leader's term and name, as elected (None before any election)."""
        with self._sessions() as session:
            row = session.get(Leadership, 1)
            return None if row is None else (row.term, row.holder)

    def _announce(self, session: Session, channel: str, payload: str) -> None:
        """NOTIFY the other replicas when this transaction commits (PostgreSQL only)."""
        if self._engine.dialect.name == "postgresql":
            session.execute(select(func.pg_notify(channel, payload)))

    def put_documents(self, documents: Mapping[str, StoredDocument]) -> None:
        """Keep the documents of devices (each names its own revision): a controller that
        starts on a store without them fills them in."""
        if documents:
            with self._writing() as session:
                self._put_documents(
                    session, {device: (d.revision, d) for device, d in documents.items()}
                )

    def _put_documents(
        self, session: Session, rows: Mapping[str, tuple[str, StoredDocument | None]]
    ) -> None:
        statement = self._insert(DocumentRevision)
        session.connection().execute(
            statement.on_conflict_do_update(
                index_elements=["device"],
                set_={
                    "revision": statement.excluded.revision,
                    "body": statement.excluded.body,
                    "credential_images": statement.excluded.credential_images,
                    "withheld_values": statement.excluded.withheld_values,
                },
            ),
            [
                {
                    "device": device,
                    "revision": revision,
                    "body": document.body if document else None,
                    "credential_images": list(document.credential_images) if document else None,
                    "withheld_values": document.needs_secrets if document else None,
                }
                for device, (revision, document) in sorted(rows.items())
            ],
        )

    def document_revisions(self) -> dict[str, str]:
        """Device → the revision its document names (see `apply`)."""
        with self._sessions() as session:
            rows = session.execute(select(DocumentRevision.device, DocumentRevision.revision))
            return {device: revision for device, revision in rows}

    def stored_document(self, device: str) -> StoredDocument | None:
        """The document kept for `device`, None when there is none (or only its revision)."""
        return self.stored_documents([device]).get(device)

    def stored_documents(self, devices: Collection[str]) -> dict[str, StoredDocument]:
        """The documents kept for `devices` (those with one), in one query."""
        if not devices:
            return {}
        columns = (DocumentRevision.device, DocumentRevision.revision, DocumentRevision.body)
        more = (DocumentRevision.credential_images, DocumentRevision.withheld_values)
        query = select(*columns, *more).where(
            DocumentRevision.device.in_(sorted(devices)), DocumentRevision.body.is_not(None)
        )
        with self._sessions() as session:
            return {
                device: StoredDocument(revision, body, tuple(images or ()), bool(secrets))
                for device, revision, body, images, secrets in session.execute(query)
                if body is not None
            }

    def undocumented(self) -> set[str]:
        """Devices whose revision is kept without their document (a store older than it)."""
        with self._sessions() as session:
            query = select(DocumentRevision.device).where(DocumentRevision.body.is_(None))
            return set(session.scalars(query))

    def applied_revision(self) -> str | None:
        """The revision applied last (a revert to an older sha counts as its latest apply)."""
        with self._sessions() as session:
            return session.scalar(
                select(Revision.sha)
                .where(Revision.applied_at.is_not(None))
                .order_by(Revision.applied_at.desc(), Revision.sha)
                .limit(1)
            )

    def last_attempt(self) -> RevisionRecord | None:
        with self._sessions() as session:
            row = session.scalar(
                select(Revision).order_by(Revision.attempted_at.desc(), Revision.sha).limit(1)
            )
            return None if row is None else _revision(row)

    def rejected(self, limit: int = 20) -> list[RevisionRecord]:
        """The invalid revisions, newest first, with their findings."""
        _check_limit(limit)
        with self._sessions() as session:
            rows = session.scalars(
                select(Revision)
                .where(Revision.valid.is_(False))
                .order_by(Revision.attempted_at.desc(), Revision.sha)
                .limit(limit)
            )
            return [_revision(row) for row in rows]

    # observed state

    def put_observed(self, report: wire.StatusReport, at: datetime) -> None:
        """Replace what `report.device` last reported (its events are appended apart)."""
        values = {"device": report.device, "document": msgspec.to_builtins(report), "at": utc(at)}
        with self._writing() as session:
            session.execute(self._upsert(Observed, values, ["device"]))

    def get_observed(self, device: str) -> tuple[wire.StatusReport, datetime] | None:
        with self._sessions() as session:
            row = session.get(Observed, device)
            return None if row is None else (_report(row.document), row.at)

    def observed_of(self, devices: Collection[str]) -> dict[str, wire.StatusReport]:
        """The stored observed state of those of `devices` that have one (one query)."""
        if not devices:
            return {}
        query = select(Observed.device, Observed.document).where(
            Observed.device.in_(sorted(devices))
        )
        with self._sessions() as session:
            return {device: _report(document) for device, document in session.execute(query)}

    def observed_all(self) -> dict[str, wire.StatusReport]:
        with self._sessions() as session:
            rows = session.scalars(select(Observed).order_by(Observed.device))
            return {row.device: _report(row.document) for row in rows}

    # deployment statuses

    def put_status(self, status: DeploymentStatus) -> None:
        """Replace the status of a deployment on a device (conditions, releases, state)."""
        values = {
            "deployment": status.deployment,
            "device": status.device,
            "status": status.to_json(),
        }
        with self._writing() as session:
            session.execute(self._upsert(Status, values, ["deployment", "device"]))

    def put_plans(self, plans: Sequence[PlannedDevice]) -> None:
        """Many devices' plans in one transaction: statuses replaced, those of deployments
        that no longer target a device pruned, events appended, and each device's reasons to
        be planned cleared up to the generation its plan saw."""
        if not plans:
            return
        with self._writing() as session:
            statuses = [
                {"deployment": s.deployment, "device": s.device, "status": s.to_json()}
                for plan in plans
                for s in plan.statuses
            ]
            if statuses:
                statement = self._insert(Status)
                session.connection().execute(
                    statement.on_conflict_do_update(
                        index_elements=["deployment", "device"],
                        set_={"status": statement.excluded.status},
                    ),
                    statuses,
                )
            stale = self._stale_statuses(session, plans)
            if stale:
                session.connection().execute(
                    delete(Status).where(
                        Status.device == bindparam("d"), Status.deployment == bindparam("p")
                    ),
                    [{"d": device, "p": deployment} for device, deployment in stale],
                )
            if events := [e for plan in plans for e in plan.events]:
                session.connection().execute(
                    insert(Event), [_event_values(e, None) for e in events]
                )
            if cleared := [(p.device, p.generation) for p in plans if p.generation is not None]:
                session.connection().execute(
                    delete(Replan).where(
                        Replan.device == bindparam("d"), Replan.generation == bindparam("g")
                    ),
                    [{"d": device, "g": generation} for device, generation in cleared],
                )

    @staticmethod
    def _stale_statuses(session: Session, plans: Sequence[PlannedDevice]) -> list[tuple[str, str]]:
        """The (device, deployment) statuses of deployments that no longer target the planned
        devices: read in one query, deleted by key (one delete per device was a scan each)."""
        kept = {(plan.device, s.deployment) for plan in plans for s in plan.statuses}
        query = select(Status.device, Status.deployment).where(
            Status.device.in_(sorted({plan.device for plan in plans}))
        )
        return [(d, p) for d, p in session.execute(query) if (d, p) not in kept]

    def replan_generations(self, devices: Collection[str]) -> dict[str, int]:
        """The generation of each of `devices`' reasons to be planned again (see `Replan`)."""
        if not devices:
            return {}
        query = select(Replan.device, Replan.generation).where(Replan.device.in_(sorted(devices)))
        with self._sessions() as session:
            return {device: generation for device, generation in session.execute(query)}

    def condition_counts(self) -> dict[tuple[str, str], int]:
        """How many deployments on devices have each (condition type, status), counted by the
        database: decoding 300,000 statuses for a metrics scrape took seconds of the
        controller's CPU."""
        if self._engine.dialect.name == "postgresql":
            query = _CONDITIONS_POSTGRESQL
        else:
            query = _CONDITIONS_SQLITE
        with self._sessions() as session:
            return {(kind, status): n for kind, status, n in session.execute(query)}

    def statuses(
        self, *, device: str | None = None, deployment: str | None = None
    ) -> list[StatusRecord]:
        """Every status, or one device's, or one deployment's (each an indexed lookup)."""
        query = select(Status).order_by(Status.deployment, Status.device)
        if device is not None:
            query = query.where(Status.device == device)
        if deployment is not None:
            query = query.where(Status.deployment == deployment)
        with self._sessions() as session:
            rows = session.scalars(query)
            return [
                StatusRecord(row.deployment, row.device, DeploymentStatus.from_json(row.status))
                for row in rows
            ]

    # events

    def append_events(self, events: Sequence[EventIn]) -> list[int]:
        """Append events in order; returns their ids, increasing."""
        if not events:
            return []
        with self._writing() as session:
            ids = session.scalars(
                insert(Event).returning(Event.id, sort_by_parameter_order=True),
                [_event_values(e, None) for e in events],
            )
            return list(ids)

    def append_device_events(
        self,
        device: str,
        events: Iterable[tuple[int, EventIn]],
        epoch: str | None = None,
        reset: EventIn | None = None,
    ) -> int | None:
        """Append an agent's events, numbered within its journal `epoch` (None: an agent older
        than epochs). A number already stored for the same event is skipped, so a retried report
        is not counted twice; one stored for another event raises SequenceConflict and nothing
        is stored. `reset` is appended first when these events open a new journal for a device
        that reported under another. Returns the highest number stored for the journal."""
        with self._writing() as session:
            return self._append_device_events(session, device, events, epoch, reset)

    def put_report(
        self,
        report: wire.StatusReport,
        at: datetime,
        events: Iterable[tuple[int, EventIn]],
        reset: EventIn | None = None,
    ) -> int | None:
        """One report (see `put_reports`): raises the SequenceConflict that refused it."""
        stored = StoredReport(report, report.device, report.epoch, list(events), reset)
        (result,) = self.put_reports([stored], at)
        if isinstance(result, SequenceConflict):
            raise result
        return result

    def put_reports(
        self, reports: Sequence[StoredReport], at: datetime
    ) -> list[int | SequenceConflict | None]:
        """Many reports in one transaction: per report, the highest sequence number stored
        for its journal, or the SequenceConflict that refused it with nothing of it stored.
        A burst of reports costs a few statements and one commit, not several each: their
        events in one INSERT, their journals' highest numbers in one query. A batch with a
        report that needs more (a clash of numbers, a journal that starts) is stored again
        a report at a time, each in a savepoint."""
        if not reports:
            return []
        try:
            with self._writing() as session:
                results: list[int | SequenceConflict | None] = list(
                    self._put_reports_together(session, reports, at)
                )
                self._after_reports(session, reports, results)
                return results
        except _OneByOne:
            pass
        results = []
        with self._writing() as session:
            for report in reports:
                try:
                    with session.begin_nested():
                        if report.observed is not None:
                            self._put_observed(session, [report], at)
                        self._put_facts(session, [report], at)
                        results.append(
                            self._append_device_events(
                                session, report.device, report.events, report.epoch, report.reset
                            )
                        )
                except SequenceConflict as conflict:
                    results.append(conflict)
            self._after_reports(session, reports, results)
        return results

    def _put_reports_together(
        self, session: Session, reports: Sequence[StoredReport], at: datetime
    ) -> list[int | None]:
        rows: list[dict[str, Any]] = []
        journals: list[tuple[str, str]] = []
        resets: list[dict[str, Any]] = []
        for report in reports:
            journal = (report.device, report.epoch or NO_EPOCH)
            if journal in journals:
                raise _OneByOne
            journals.append(journal)
            mine: dict[int, dict[str, Any]] = {}
            for seq, item in report.events:
                values = _event_values(item, seq, journal[1])
                if item.device != report.device or _content(
                    mine.setdefault(seq, values)
                ) != _content(values):
                    raise _OneByOne
            rows.extend(mine[seq] for seq in sorted(mine))
            # the first report of a journal this process sees: is it a new one?
            reset = report.reset
            if mine and reset and report.epoch and self._opens_journal(session, *journal):
                resets.append(_event_values(reset, None, journal[1]))
        if resets:
            session.connection().execute(insert(Event), resets)
        if rows:
            statement = self._insert(Event).on_conflict_do_nothing(
                index_elements=["device", "agent_epoch", "agent_seq"]
            )
            returning = statement.returning(Event.device, Event.agent_epoch, Event.agent_seq)
            inserted = {tuple(row) for row in session.connection().execute(returning, rows)}
            keys = [(r["device"], r["agent_epoch"], r["agent_seq"]) for r in rows]
            if skipped := [(k, r) for k, r in zip(keys, rows, strict=True) if k not in inserted]:
                columns = (Event.device, Event.agent_epoch, Event.agent_seq)
                found = session.execute(
                    select(*columns, Event.at, Event.kind, Event.message, Event.deployment).where(
                        tuple_(*columns).in_([k for k, _ in skipped])
                    )
                )
                stored = {(d, e, q): (t, kind, m, dep) for d, e, q, t, kind, m, dep in found}
                if any(stored.get(k) != _content(r) for k, r in skipped):
                    raise _OneByOne  # a number that names another event: refuse that report
        self._put_observed(session, [r for r in reports if r.observed is not None], at)
        self._put_facts(session, reports, at)
        last = _highest_seqs(session.connection(), journals)
        return [last.get(journal) for journal in journals]

    def _put_observed(
        self, session: Session, reports: Sequence[StoredReport], at: datetime
    ) -> None:
        if not reports:
            return
        statement = self._insert(Observed)
        session.connection().execute(
            statement.on_conflict_do_update(
                index_elements=["device"],
                set_={"document": statement.excluded.document, "at": statement.excluded.at},
            ),
            [
                {"device": r.device, "document": msgspec.to_builtins(r.observed), "at": utc(at)}
                for r in reports
            ],
        )

    def _put_facts(self, session: Session, reports: Sequence[StoredReport], at: datetime) -> None:
        rows = [
            {"device": r.device, "facts": msgspec.to_builtins(r.facts), "reported_at": utc(at)}
            for r in reports
            if r.facts is not None
        ]
        if not rows:
            return
        statement = self._insert(DeviceFacts)
        session.connection().execute(
            statement.on_conflict_do_update(
                index_elements=["device"],
                set_={
                    "facts": statement.excluded.facts,
                    "reported_at": statement.excluded.reported_at,
                },
            ),
            rows,
        )

    def _after_reports(
        self,
        session: Session,
        reports: Sequence[StoredReport],
        results: Sequence[int | SequenceConflict | None],
    ) -> None:
        """The devices whose observed state changed wait for a plan; the leader hears of it."""
        changed = [
            r.device
            for r, result in zip(reports, results, strict=True)
            if r.observed is not None and not isinstance(result, SequenceConflict)
        ]
        self._need_replan(session, changed)
        for payload in observed_payloads(self.replica, changed):
            self._announce(session, OBSERVED, payload)

    def _append_device_events(
        self,
        session: Session,
        device: str,
        events: Iterable[tuple[int, EventIn]],
        epoch: str | None,
        reset: EventIn | None,
    ) -> int | None:
        scope = epoch or NO_EPOCH
        rows: dict[int, dict[str, Any]] = {}
        # in sequence order: ids follow it, and racing retries take row locks in the same order
        for seq, item in sorted(events, key=lambda pair: pair[0]):
            if item.device != device:
                raise ValueError(f"event of device {item.device!r} reported by {device!r}")
            values = _event_values(item, seq, scope)
            if _content(rows.setdefault(seq, values)) != _content(values):
                raise _conflict(device, epoch, [seq])
        if rows:
            if reset is not None and epoch and self._opens_journal(session, device, scope):
                session.execute(insert(Event), [_event_values(reset, None, scope)])
            statement = self._insert(Event).on_conflict_do_nothing(
                index_elements=["device", "agent_epoch", "agent_seq"]
            )
            inserted = set(
                session.scalars(statement.returning(Event.agent_seq), list(rows.values()))
            )
            if skipped := sorted(rows.keys() - inserted):
                stored = session.execute(
                    select(Event.agent_seq, Event.at, Event.kind, Event.message, Event.deployment)
                    .where(Event.device == device, Event.agent_epoch == scope)
                    .where(Event.agent_seq.in_(skipped))
                )
                found = {
                    seq: (at, kind, message, deployment)
                    for seq, at, kind, message, deployment in stored
                }
                if clashes := [seq for seq in skipped if found.get(seq) != _content(rows[seq])]:
                    raise _conflict(device, epoch, clashes)
        return session.scalar(
            select(func.max(Event.agent_seq)).where(
                Event.device == device, Event.agent_epoch == scope
            )
        )

    @staticmethod
    def _opens_journal(session: Session, device: str, scope: str) -> bool:
        """No event of this journal yet, and some of another: the device's journal restarted."""
        agent = (Event.device == device, Event.agent_seq.is_not(None))
        known = select(Event.id).where(*agent, Event.agent_epoch == scope).limit(1)
        other = select(Event.id).where(*agent, Event.agent_epoch != scope).limit(1)
        return session.scalar(known) is None and session.scalar(other) is not None

    def events(
        self,
        device: str | None = None,
        deployment: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """One page of events, oldest first: pass the last id seen as `after_id` for the next."""
        _check_limit(limit)
        query = select(Event).order_by(Event.id).limit(limit)
        if device is not None:
            query = query.where(Event.device == device)
        if deployment is not None:
            query = query.where(Event.deployment == deployment)
        if after_id is not None:
            query = query.where(Event.id > after_id)
        with self._sessions() as session:
            return [_event(e) for e in session.scalars(query)]

    def recent_events(
        self,
        device: str | None = None,
        deployment: str | None = None,
        kind: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        """One page of events, newest first: pass the last id seen as `before_id` for the next."""
        _check_limit(limit)
        query = select(Event).order_by(Event.id.desc()).limit(limit)
        if device is not None:
            query = query.where(Event.device == device)
        if deployment is not None:
            query = query.where(Event.deployment == deployment)
        if kind is not None:
            query = query.where(Event.kind == kind)
        if before_id is not None:
            query = query.where(Event.id < before_id)
        with self._sessions() as session:
            return [_event(e) for e in session.scalars(query)]

    def revision(self, sha: str) -> RevisionRecord | None:
        with self._sessions() as session:
            row = session.get(Revision, sha)
            return None if row is None else _revision(row)

    def last_event(self, kinds: Collection[str]) -> EventRecord | None:
        """The newest event of the fleet as a whole (no device) whose kind is one of `kinds`:
        few rows, found through the (device, id) index."""
        query = (
            select(Event)
            .where(Event.device.is_(None), Event.kind.in_(list(kinds)))
            .order_by(Event.id.desc())
            .limit(1)
        )
        with self._sessions() as session:
            found = session.scalar(query)
            return None if found is None else _event(found)

    # fingerprints

    def put_fingerprints(self, kind: FingerprintKind, fingerprints: Mapping[str, str]) -> None:
        """Replace every fingerprint of `kind`: a name missing from `fingerprints` is forgotten.
        Credential fingerprints are keyed HMACs computed by the caller, never plaintext."""
        _check_kind(kind)
        with self._writing() as session:
            session.execute(delete(Fingerprint).where(Fingerprint.kind == kind))
            if fingerprints:
                session.execute(
                    insert(Fingerprint),
                    [
                        {"kind": kind, "name": name, "fingerprint": value}
                        for name, value in sorted(fingerprints.items())
                    ],
                )

    def fingerprints(self, kind: FingerprintKind) -> dict[str, str]:
        _check_kind(kind)
        with self._sessions() as session:
            rows = session.execute(
                select(Fingerprint.name, Fingerprint.fingerprint)
                .where(Fingerprint.kind == kind)
                .order_by(Fingerprint.name)
            )
            return {name: value for name, value in rows}

    # device tokens: hashes only

    def put_token(self, device: str, token_hash: str, at: datetime) -> None:
        """Set the hash of `device`'s token, replacing any previous one."""
        values = {"device": device, "token_hash": token_hash, "issued_at": utc(at)}
        with self._writing() as session:
            session.execute(self._upsert(Token, values, ["device"]))

    def put_tokens(self, hashes: Mapping[str, str], at: datetime) -> None:
        """Set the token hashes of many devices in one transaction (a fleet being set up)."""
        if not hashes:
            return
        statement = self._insert(Token)
        with self._writing() as session:
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["device"],
                    set_={
                        "token_hash": statement.excluded.token_hash,
                        "issued_at": statement.excluded.issued_at,
                    },
                ),
                [
                    {"device": device, "token_hash": value, "issued_at": utc(at)}
                    for device, value in sorted(hashes.items())
                ],
            )

    def revoke_token(self, device: str) -> bool:
        """Forget `device`'s token; False when it had none."""
        with self._writing() as session:
            return _rowcount(session.execute(delete(Token).where(Token.device == device))) > 0

    def token_hash(self, device: str) -> str | None:
        with self._sessions() as session:
            return session.scalar(select(Token.token_hash).where(Token.device == device))

    def token_hashes(self) -> dict[str, str]:
        """Every device's token hash (a controller keeps them all in memory)."""
        with self._sessions() as session:
            rows = session.execute(select(Token.device, Token.token_hash))
            return {device: value for device, value in rows}

    def tokens_version(self) -> tuple[int, datetime | None]:
        """What changes whenever a token is issued or revoked: how many there are, and when
        the last was issued. Cheap, so a controller asks every few seconds."""
        with self._sessions() as session:
            count, last = session.execute(select(func.count(), func.max(Token.issued_at))).one()
            return int(count), last

    def token_owner(self, token_hash: str) -> str | None:
        """The device a token hash belongs to: tells an unknown token from another device's."""
        with self._sessions() as session:
            query = select(Token.device).where(Token.token_hash == token_hash).limit(1)
            return session.scalar(query)

    # enrollment: shared tokens (hashes only) and what enrolled devices said of themselves

    def create_enrollment_token(self, token: EnrollmentToken, token_hash: str) -> bool:
        """Store a new enrollment token; False when one has that name already."""
        values = {
            "name": token.name,
            "token_hash": token_hash,
            "labels": dict(token.labels),
            "created_at": utc(token.created_at),
            "expires_at": utc(token.expires_at) if token.expires_at else None,
            "max_uses": token.max_uses,
            "uses": 0,
            "allow_reenroll": token.allow_reenroll,
            "revoked_at": None,
        }
        statement = self._insert(EnrollmentRow).values(values).on_conflict_do_nothing()
        with self._writing() as session:
            return _rowcount(session.execute(statement)) > 0

    def enrollment_tokens(self) -> list[EnrollmentToken]:
        with self._sessions() as session:
            rows = session.scalars(select(EnrollmentRow).order_by(EnrollmentRow.name))
            return [_enrollment_token(row) for row in rows]

    def revoke_enrollment_token(self, name: str, at: datetime) -> bool:
        """Revoke an enrollment token (devices enrolled with it keep their own tokens); False
        when there is none of that name, or it was revoked already."""
        with self._writing() as session:
            result = session.execute(
                update(EnrollmentRow)
                .where(EnrollmentRow.name == name, EnrollmentRow.revoked_at.is_(None))
                .values(revoked_at=utc(at))
            )
            return _rowcount(result) > 0

    def enrollment_token_name(self, token_hash: str) -> str | None:
        with self._sessions() as session:
            query = select(EnrollmentRow.name).where(EnrollmentRow.token_hash == token_hash)
            return session.scalar(query)

    def enroll(
        self,
        token_hash: str,
        request: wire.EnrollRequest,
        device_token_hash: str,
        at: datetime,
    ) -> EnrolledDevice:
        """Enroll a device with the enrollment token hashing to `token_hash`, in one
        transaction: the token's use is counted, the device's token stored (replacing the old
        one, which is thereby revoked, when the token allows re-enrollment) with what the
        device said of itself, and its facts. EnrollmentRefused, with nothing stored: 401 for
        an unknown token, 403 for one revoked, expired or used up, 409 for a name taken."""
        name = request.device
        with self._writing() as session:
            row = session.scalar(
                select(EnrollmentRow).where(EnrollmentRow.token_hash == token_hash)
            )
            if row is None:
                raise EnrollmentRefused(401, "unknown enrollment token")
            token = _enrollment_token(row)
            taken = session.scalar(select(Token.device).where(Token.device == name)) is not None
            refused = refusal(token, name_taken=taken, now=at)
            if refused is not None:
                raise refused
            counted = session.execute(  # one statement: two devices cannot take the last use
                update(EnrollmentRow)
                .where(
                    EnrollmentRow.name == token.name,
                    EnrollmentRow.revoked_at.is_(None),
                    (EnrollmentRow.max_uses.is_(None))
                    | (EnrollmentRow.uses < EnrollmentRow.max_uses),
                )
                .values(uses=EnrollmentRow.uses + 1)
            )
            if _rowcount(counted) == 0:
                raise EnrollmentRefused(403, "this enrollment token has been used up meanwhile")
            values = {
                "device": name,
                "token_hash": device_token_hash,
                "issued_at": utc(at),
                "enrollment": token.name,
                "system_model": request.system_model,
                "labels": dict(token.labels),
                "enrolled_at": utc(at),
            }
            statement = self._insert(Token).values(values)
            if taken:  # re-enrollment: the old token stops working now
                statement = statement.on_conflict_do_update(
                    index_elements=["device"],
                    set_={k: statement.excluded[k] for k in values if k != "device"},
                )
            else:
                statement = statement.on_conflict_do_nothing()
            if _rowcount(session.execute(statement)) == 0:
                raise EnrollmentRefused(409, "a device with this name enrolled a moment ago")
            facts = {"device": name, "facts": msgspec.to_builtins(request.facts),
                     "reported_at": utc(at)}  # fmt: skip
            session.execute(self._upsert(DeviceFacts, facts, ["device"]))
        return EnrolledDevice(name, token.name, request.system_model, dict(token.labels), utc(at))

    def enrolled_devices(self) -> dict[str, EnrolledDevice]:
        """Every device that enrolled itself (and has its token still)."""
        query = select(Token).where(Token.enrollment.is_not(None)).order_by(Token.device)
        with self._sessions() as session:
            return {row.device: _enrolled(row) for row in session.scalars(query)}

    def enrolled_names(self) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(Token.device).where(Token.enrollment.is_not(None))))

    def activity(self) -> tuple[object, ...]:
        """What moves whenever the fleet does, cheaply: the last event's id (commits, rollout
        steps and agents' events add one), the last commit attempted and when, and the last
        time a device's observed state or facts changed."""
        with self._sessions() as session:
            last = session.scalar(select(func.max(Event.id))) or 0
            attempt = session.execute(
                select(Revision.sha, Revision.attempted_at)
                .order_by(Revision.attempted_at.desc())
                .limit(1)
            ).first()
            observed = session.scalar(select(func.max(Observed.at)))
            facts = session.scalar(select(func.max(DeviceFacts.reported_at)))
        return (
            int(last),
            attempt[0] if attempt else None,
            iso(attempt[1]) if attempt else None,
            iso(observed),
            iso(facts),
        )

    # viewer tokens: read-only access to the operator API and the dashboard

    def create_viewer_token(self, name: str, token_hash: str, at: datetime) -> bool:
        """False when a viewer token has that name already."""
        values = {"name": name, "token_hash": token_hash, "created_at": utc(at)}
        statement = self._insert(ViewerToken).values(values).on_conflict_do_nothing()
        with self._writing() as session:
            return _rowcount(session.execute(statement)) > 0

    def revoke_viewer_token(self, name: str) -> bool:
        with self._writing() as session:
            result = session.execute(delete(ViewerToken).where(ViewerToken.name == name))
            return _rowcount(result) > 0

    def viewer_tokens(self) -> dict[str, str]:
        """Name → hash of every viewer token."""
        with self._sessions() as session:
            rows = session.execute(select(ViewerToken.name, ViewerToken.token_hash))
            return {name: value for name, value in rows}

    # dashboard sessions logged out

    def end_session(self, session: str, until: datetime, now: datetime) -> None:
        """Remember a logged-out session until `until`; forget those past theirs."""
        with self._writing() as session_:
            session_.execute(delete(EndedSession).where(EndedSession.until < utc(now)))
            values = {"id": session, "until": utc(until)}
            session_.execute(self._insert(EndedSession).values(values).on_conflict_do_nothing())

    def ended_sessions(self, now: datetime) -> set[str]:
        with self._sessions() as session:
            query = select(EndedSession.id).where(EndedSession.until >= utc(now))
            return set(session.scalars(query))

    def inventory(self, devices: Collection[str] | None = None) -> list[DeviceInfo]:
        """Every device of the applied revision and every enrolled one (see
        `reconciler.core.inventory`), or those of them in `devices`."""
        admitted = select(DocumentRevision.device)
        enrolled = select(Token).where(Token.enrollment.is_not(None))
        reports = select(Observed.device, Observed.at)
        if devices is not None:
            names = sorted(devices)
            admitted = admitted.where(DocumentRevision.device.in_(names))
            enrolled = enrolled.where(Token.device.in_(names))
            reports = reports.where(Observed.device.in_(names))
        with self._sessions() as session:
            fleet = set(session.scalars(admitted))
            joined = {row.device: _enrolled(row) for row in session.scalars(enrolled)}
            reported = {device: at for device, at in session.execute(reports)}
        return inventory(fleet, joined, self.device_facts(devices), reported)

    def put_poll_times(self, polls: Mapping[str, datetime]) -> None:
        """When each device last polled for its document (a replica writes them in batches)."""
        if not polls:
            return
        statement = self._insert(DeviceFacts)
        with self._writing() as session:
            session.connection().execute(
                statement.on_conflict_do_update(
                    index_elements=["device"], set_={"polled_at": statement.excluded.polled_at}
                ),
                [{"device": d, "polled_at": utc(at)} for d, at in sorted(polls.items())],
            )

    def device_facts(
        self, devices: Collection[str] | None = None
    ) -> dict[str, tuple[wire.Facts | None, datetime | None, datetime | None]]:
        """Device → its facts, when they were reported, and when it last polled."""
        query = select(DeviceFacts)
        if devices is not None:
            query = query.where(DeviceFacts.device.in_(sorted(devices)))
        with self._sessions() as session:
            return {
                row.device: (
                    None if row.facts is None else _facts(row.facts),
                    row.reported_at,
                    row.polled_at,
                )
                for row in session.scalars(query)
            }

    # helpers

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A write transaction (see `_write_lock`)."""
        with self._write_lock or nullcontext(), self._sessions.begin() as session:
            yield session

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with ON CONFLICT: both dialects spell it the same, from different modules."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)

    def _upsert(
        self, model: type[Base], values: Mapping[str, Any], keys: Sequence[str]
    ) -> postgresql.Insert | sqlite.Insert:
        """One atomic statement, so two writers never race between a read and a write."""
        statement = self._insert(model).values(dict(values))
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in values if name not in keys},
        )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def _check_kind(kind: str) -> None:
    if kind not in FINGERPRINT_KINDS:
        raise ValueError(f"unknown fingerprint kind {kind!r}; expected one of {FINGERPRINT_KINDS}")


def _rowcount(result: object) -> int:
    """Rows touched by an UPDATE or DELETE (the ORM types its result as a plain Result)."""
    assert isinstance(result, CursorResult)
    return result.rowcount


def _enrollment_token(row: EnrollmentRow) -> EnrollmentToken:
    return EnrollmentToken(
        name=row.name,
        labels=dict(row.labels),
        created_at=row.created_at,
        expires_at=row.expires_at,
        max_uses=row.max_uses,
        uses=row.uses,
        allow_reenroll=row.allow_reenroll,
        revoked_at=row.revoked_at,
    )


def _enrolled(row: Token) -> EnrolledDevice:
    return EnrolledDevice(
        row.device,
        row.enrollment or "",
        row.system_model or "",
        dict(row.labels or {}),
        row.enrolled_at or row.issued_at,
    )


def _facts(document: JSONObject | None) -> wire.Facts:
    return msgspec.convert(document or {}, wire.Facts)


def _report(document: JSONObject) -> wire.StatusReport:
    """A stored report, decoded as the wire type it was stored from."""
    return msgspec.convert(document, wire.StatusReport)


def _revision(row: Revision) -> RevisionRecord:
    return RevisionRecord(
        row.sha, row.valid, row.attempted_at, row.errors, row.applied_at, row.message
    )


def _event(e: Event) -> EventRecord:
    return EventRecord(
        e.id,
        e.at,
        e.device,
        e.kind,
        e.message,
        e.deployment,
        e.revision,
        e.agent_seq,
        e.agent_epoch or None,
    )


class _OneByOne(StoreError):
    """A batch of reports that must be stored a report at a time (see `put_reports`)."""


# SQLite compounds at most 500 SELECTs in one statement
_HIGHEST_AT_ONCE = 200


def _highest_seqs(
    connection: Connection, journals: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The highest sequence number stored of each journal: one `max()` each, which both
    databases answer from the (device, epoch, seq) index in a seek. A `(device, epoch) IN`
    list with GROUP BY scanned the events table on SQLite, 30 ms a batch at 10,000 devices."""
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(journals), _HIGHEST_AT_ONCE):
        chunk = journals[start : start + _HIGHEST_AT_ONCE]
        query = " UNION ALL ".join(  # only numbered placeholders here: values are bound
            f"SELECT {i}, (SELECT max(agent_seq) FROM events"
            f" WHERE device = :d{i} AND agent_epoch = :e{i})"
            for i in range(len(chunk))
        )
        values = {}
        for i, (device, epoch) in enumerate(chunk):
            values[f"d{i}"], values[f"e{i}"] = device, epoch
        for index, seq in connection.execute(text(query), values):
            if seq is not None:
                found[chunk[index]] = seq
    return found


def _event_values(item: EventIn, seq: int | None, epoch: str = NO_EPOCH) -> dict[str, Any]:
    return {
        "at": utc(item.at),
        "device": item.device,
        "deployment": item.deployment,
        "kind": item.kind,
        "message": item.message,
        "revision": item.revision,
        "agent_seq": seq,
        "agent_epoch": epoch,
    }


# Every query of the store: a database that does not answer is StoreUnavailable, one type the
# edges handle (503 with Retry-After in the API, a one-line error in a command).
for _name, _method in list(vars(Store).items()):
    if not _name.startswith("_") and _name not in ("open", "close") and callable(_method):
        setattr(Store, _name, _translated(_method))


def _private_file(path: Path) -> None:
    """The SQLite file readable by the controller's user alone (token hashes, fingerprints,
    every device's reports): made 0600 before SQLite opens it, which gives its -wal and -shm
    files the same mode; a folder made for it is 0700. An existing folder is left as it is
    (it may be any folder an operator named), an existing database made 0600 when it is ours."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            with contextlib.suppress(PermissionError):  # another user's: only read it
                path.chmod(0o600)


def _content(values: Mapping[str, Any]) -> tuple[datetime, str, str, str | None]:
    """What a retry of an event repeats (not the revision: a retry may follow an apply)."""
    return values["at"], values["kind"], values["message"], values["deployment"]


def _conflict(device: str, epoch: str | None, seqs: Sequence[int]) -> SequenceConflict:
    journal = f"journal {epoch}" if epoch else "journal without an epoch"
    shown = ", ".join(str(seq) for seq in seqs[:5]) + (", ..." if len(seqs) > 5 else "")
    return SequenceConflict(
        f"device {device!r}: event {shown} of its {journal} was stored before with other "
        "content; a sequence number names one event, and a journal that starts again needs a "
        "new epoch"
    )


def _sqlite_transactions(engine: Engine) -> None:
    """Real transactions on SQLite: pysqlite otherwise commits before DDL and begins lazily, so a
    failed migration would leave half a schema. WAL lets readers and one writer work at once."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")
