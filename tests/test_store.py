"""The state store on both backends it supports: a real SQLite file and a real PostgreSQL server.

Every test runs twice (ids `sqlite` and `postgresql`), each time on a fresh database, so a
difference between the backends (time zones, JSON, conflicts, autoincrement) shows as a failure.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from reconciler import wire
from reconciler.core.document import StoredDocument
from reconciler.core.reports import SequenceConflict
from reconciler.core.status import ConditionType, DeploymentStatus, condition
from reconciler.store import (
    EventIn,
    EventRecord,
    NotLeader,
    PlannedDevice,
    RevisionRecord,
    StatusRecord,
    Store,
    StoredReport,
    StoreError,
    migrate,
    sqlite_url,
)
from reconciler.store.schema import Base
from reconciler.store.store import MIGRATIONS

T0 = datetime(2025, 3, 30, 0, 30, 15, 123456, tzinfo=UTC)
EPOCH, OTHER = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
TABLES = {
    "enrollment_tokens",
    "viewer_tokens",
    "ended_sessions",
    "device_facts",
    "revisions",
    "observed",
    "statuses",
    "events",
    "fingerprints",
    "tokens",
    "document_revisions",
    "leadership",
    "replans",
    "rollouts",
}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, to look at the schema from outside the store."""
    created = sa.create_engine(database_url)
    try:
        yield created
    finally:
        created.dispose()


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def report(device: str, *releases: str, revision: str | None = None) -> wire.StatusReport:
    """What `device` reports: web's `releases`, running, of deployment web-lyon."""
    found = [
        wire.ReleaseReport(
            application="web", release=r, deployment="web-lyon", running=True, complete=True
        )
        for r in releases
    ]
    return wire.StatusReport(device=device, revision=revision, releases=found)


def status(deployment: str, device: str, reason: str) -> DeploymentStatus:
    """web 1.1.0 wanted Running, 1.0.0 running; `reason` tells one status from another."""
    return DeploymentStatus(
        deployment=deployment,
        device=device,
        application="web",
        desired_release="1.1.0",
        observed_release="1.0.0",
        desired_state="Running",
        observed_state="Running",
        revision="aaa",
        conditions=(
            condition(ConditionType.SYNCED, True, reason, "", "aaa"),
            condition(ConditionType.READY, False, "Starting", "", "aaa"),
        ),
    )


def event(device: str = "pi-1", kind: str = "deploy", **fields: Any) -> EventIn:
    fields.setdefault("at", T0)
    fields.setdefault("message", f"{kind} on {device}")
    return EventIn(device=device, kind=kind, **fields)


def head() -> str | None:
    script = ScriptDirectory(str(MIGRATIONS))
    return script.get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# --- migrations ----------------------------------------------------------------------------------


def test_migrations_create_the_schema_on_an_empty_database(engine: sa.Engine) -> None:
    assert sa.inspect(engine).get_table_names() == []
    assert current_revision(engine) is None
    migrate(engine)
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == {*TABLES, "alembic_version"}
    assert current_revision(engine) == head() == "0013"
    indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("events")}
    assert indexes["ix_events_device_id"] == ["device", "id"]
    assert indexes["ix_events_deployment_id"] == ["deployment", "id"]
    uniques = {uq["name"]: uq["column_names"] for uq in inspector.get_unique_constraints("events")}
    assert uniques["uq_events_device_agent_epoch_agent_seq"] == [
        "device",
        "agent_epoch",
        "agent_seq",
    ]


def test_migrating_again_is_a_no_op_and_keeps_data(database_url: str, engine: sa.Engine) -> None:
    with Store.open(database_url) as first:
        first.put_token("pi-1", "hash-1", T0)
    migrate(engine)
    with Store.open(database_url) as second:
        assert second.token_hash("pi-1") == "hash-1"
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert [tuple(row) for row in versions] == [(head(),)]


def insert_fingerprint(engine: sa.Engine, kind: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO fingerprints (kind, name, fingerprint) VALUES (:kind, 'x', 'f')"),
            {"kind": kind},
        )


def test_0002_adds_volume_and_network_fingerprints_and_keeps_the_others(
    database_url: str, engine: sa.Engine
) -> None:
    """Volumes and networks became immutable once applied, remembered like releases."""
    migrate(engine, "0001")
    insert_fingerprint(engine, "release")
    with pytest.raises(sa.exc.IntegrityError):
        insert_fingerprint(engine, "volume")
    with Store.open(database_url) as migrated:
        migrated.put_fingerprints("volume", {"data": "sha256:aa"})
        migrated.put_fingerprints("network", {"front": "sha256:bb"})
        assert migrated.fingerprints("release") == {"x": "f"}
        assert migrated.fingerprints("volume") == {"data": "sha256:aa"}
        assert migrated.fingerprints("network") == {"front": "sha256:bb"}
    with pytest.raises(sa.exc.IntegrityError):
        insert_fingerprint(engine, "password")  # the database still checks the kind


def test_0004_scopes_agent_events_by_journal_and_keeps_the_older_ones(
    database_url: str, engine: sa.Engine
) -> None:
    """Events stored before epochs keep working: an agent without one continues its numbers
    (and is refused a number used for another event), a new journal starts again from 1."""
    migrate(engine, "0003")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (at, device, kind, message, agent_seq)"
                " VALUES (:at, 'pi-1', 'started', 'started on pi-1', :seq)"
            ),
            [{"at": T0, "seq": seq} for seq in (1, 2)],
        )
    with Store.open(database_url) as migrated:
        stored = migrated.events(device="pi-1")
        assert [(e.agent_seq, e.agent_epoch) for e in stored] == [(1, None), (2, None)]
        again = [(2, event(kind="started", message="started on pi-1")), (3, event())]
        assert migrated.append_device_events("pi-1", again) == 3
        with pytest.raises(SequenceConflict, match="event 3 "):
            migrated.append_device_events("pi-1", [(3, event(kind="error"))])
        assert migrated.append_device_events("pi-1", [(1, event())], EPOCH) == 1
        assert [(e.agent_seq, e.agent_epoch) for e in migrated.events(device="pi-1")] == [
            (1, None), (2, None), (3, None), (1, EPOCH)
        ]  # fmt: skip
    # the database holds each journal's numbers once
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (at, device, kind, message, agent_seq, agent_epoch)"
                " VALUES (:at, 'pi-1', 'started', 'again', 1, :epoch)"
            ),
            {"at": T0, "epoch": EPOCH},
        )


def test_the_migrated_schema_matches_the_models(store: Store, engine: sa.Engine) -> None:
    """A model changed without a migration (or the reverse) shows up here as a difference."""
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_open_refuses_other_databases() -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        Store.open("mysql://localhost/hedgerow")


def test_open_makes_the_sqlite_folder_and_takes_plain_postgresql_urls(
    database_url: str, tmp_path: Path
) -> None:
    """A first start has no data directory yet; `postgresql://` would mean psycopg2 to
    SQLAlchemy, while the store means psycopg 3."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql")
    else:
        url = sa.make_url(sqlite_url(tmp_path / "new" / "data"))
    with Store.open(url) as opened:
        assert opened.applied_revision() is None
    assert url.get_backend_name() == "postgresql" or (tmp_path / "new/data/hedgerow.db").is_file()


# --- revisions -----------------------------------------------------------------------------------


def test_attempts_and_the_applied_revision(store: Store) -> None:
    assert store.last_attempt() is None
    assert store.applied_revision() is None
    store.apply("aaa", at(1))
    store.reject("bbb", [{"file": "x.yaml", "message": "bad"}], at(2))
    assert store.applied_revision() == "aaa"  # a rejected revision is not applied
    assert store.last_attempt() == RevisionRecord(
        "bbb", False, at(2), [{"file": "x.yaml", "message": "bad"}], None
    )
    store.apply("ccc", at(4))
    assert store.applied_revision() == "ccc"
    assert store.last_attempt() == RevisionRecord("ccc", True, at(4), [], at(4))


def test_a_commit_is_applied_with_its_events_or_rejected_with_them(store: Store) -> None:
    applied = EventIn(at(1), None, "applied", "revision aaa applied", revision="aaa")
    store.apply("aaa", at(1), changed=["pi-1"], events=[applied])
    rejected = EventIn(at(2), None, "rejected", "commit bbb rejected", revision="bbb")
    store.reject("bbb", [{"message": "bad"}], at(2), [rejected])
    assert [(e.kind, e.revision) for e in store.events()] == [
        ("applied", "aaa"),
        ("rejected", "bbb"),
    ]


def test_only_the_current_leader_s_term_applies_a_commit(store: Store, engine: sa.Engine) -> None:
    """A leader deposed mid-apply (another replica elected, the term moved on) writes
    nothing: no attempt, no document, no event; the new leader applies the commit once."""
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO leadership (id, term, holder, since) VALUES (1, 2, 'b', :at)"),
            {"at": at(0)},
        )
    event = EventIn(at(1), None, "applied", "revision aaa applied", revision="aaa")
    with pytest.raises(NotLeader, match="term 1 is over"):
        store.apply("aaa", at(1), changed=["pi-1"], events=[event], term=1)
    with pytest.raises(NotLeader):
        store.reject("aaa", [], at(1), [event], term=1)
    assert store.last_attempt() is None and store.document_revisions() == {}
    assert store.events() == []
    store.apply("aaa", at(1), changed=["pi-1"], events=[event], term=2)
    assert store.applied_revision() == "aaa" and store.leadership() == (2, "b")
    assert [e.kind for e in store.events()] == ["applied"]


def test_reapplying_an_older_revision_makes_it_the_applied_one(store: Store) -> None:
    for minute, sha in enumerate(["aaa", "bbb"]):
        store.apply(sha, at(minute))
    store.apply("aaa", at(5))  # history rewritten back to aaa
    assert store.applied_revision() == "aaa"
    assert store.last_attempt() == RevisionRecord("aaa", True, at(5), [], at(5))


def test_applying_records_the_revision_each_changed_device_s_document_names(store: Store) -> None:
    store.apply("aaa", at(0), changed=["pi-1", "pi-2", "pi-3"])
    store.apply("bbb", at(1), changed=["pi-2"], gone=["pi-3"])
    assert store.document_revisions() == {"pi-1": "aaa", "pi-2": "bbb"}


def test_documents_are_kept_with_their_revision_and_without_credentials(store: Store) -> None:
    """What a restarted controller serves at once: the body, and which images need a pull
    credential (the credential itself never reaches the store)."""
    body = b'{"deployments":[],"device":"pi-1","registryAuth":[],"revision":"aaa"}'
    document = StoredDocument("aaa", body, ("r.example/app:1",))
    store.apply("aaa", at(0), changed=["pi-1", "pi-2"], documents={"pi-1": document})
    assert store.stored_document("pi-1") == document
    assert store.stored_document("pi-2") is None  # its revision only
    assert store.undocumented() == {"pi-2"}
    later = StoredDocument("aaa", body.replace(b"pi-1", b"pi-2"), ())
    store.put_documents({"pi-2": later})
    assert store.stored_document("pi-2") == later and store.undocumented() == set()
    store.apply("bbb", at(1), gone=["pi-1"])
    assert store.stored_document("pi-1") is None


def test_a_document_serves_a_device_that_holds_its_credentialed_images() -> None:
    document = StoredDocument("aaa", b"{}", ("r.example/app:1", "r.example/db:2"))
    assert document.serves({"r.example/app:1", "r.example/db:2", "busybox:1"})
    assert not document.serves({"r.example/app:1"})
    assert StoredDocument("aaa", b"{}", ()).serves(set())


def test_0005_keeps_document_revisions_without_bodies(database_url: str, engine: sa.Engine) -> None:
    migrate(engine, "0003")
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO document_revisions (device, revision) VALUES ('pi-1', 'aaa')")
        )
    with Store.open(database_url) as migrated:
        assert migrated.document_revisions() == {"pi-1": "aaa"}
        assert migrated.stored_document("pi-1") is None
        assert migrated.undocumented() == {"pi-1"}


def test_rejected_lists_invalid_revisions_newest_first(store: Store) -> None:
    for minute in range(5):
        valid = minute % 2 == 0
        if valid:
            store.apply(f"sha{minute}", at(minute))
        else:
            store.reject(f"sha{minute}", [{"n": minute}], at(minute))
    assert [(r.sha, r.at, r.errors) for r in store.rejected(10)] == [
        ("sha3", at(3), [{"n": 3}]),
        ("sha1", at(1), [{"n": 1}]),
    ]
    assert [r.sha for r in store.rejected(1)] == ["sha3"]
    store.apply("sha3", at(6))  # fixed by a later attempt (e.g. a key added)
    assert [r.sha for r in store.rejected(10)] == ["sha1"]
    with pytest.raises(ValueError, match="limit"):
        store.rejected(0)


# --- observed state and statuses -----------------------------------------------------------------


def test_observed_state_per_device(store: Store) -> None:
    assert store.get_observed("pi-1") is None
    assert store.observed_all() == {}
    store.put_observed(report("pi-1", "1.0.0"), at(0))
    store.put_observed(report("pi-2"), at(1))
    store.put_observed(report("pi-1", "1.1.0"), at(2))
    assert store.get_observed("pi-1") == (report("pi-1", "1.1.0"), at(2))
    assert store.observed_all() == {
        "pi-1": report("pi-1", "1.1.0"),
        "pi-2": report("pi-2"),
    }


def test_statuses_are_replaced_per_deployment_and_device(store: Store) -> None:
    assert store.statuses() == []
    store.put_status(status("web-lyon", "pi-2", "A"))
    store.put_status(status("web-lyon", "pi-1", "B"))
    store.put_status(status("db", "pi-1", "C"))
    store.put_status(status("web-lyon", "pi-2", "D"))
    assert store.statuses() == [
        StatusRecord("db", "pi-1", status("db", "pi-1", "C")),
        StatusRecord("web-lyon", "pi-1", status("web-lyon", "pi-1", "B")),
        StatusRecord("web-lyon", "pi-2", status("web-lyon", "pi-2", "D")),
    ]


def test_conditions_are_counted_by_type_and_status_as_the_statuses_say(store: Store) -> None:
    assert store.condition_counts() == {}
    store.put_status(status("web-lyon", "pi-1", "A"))
    store.put_status(status("db", "pi-1", "B"))
    healthy = status("web-lyon", "pi-2", "C")
    ready = condition(ConditionType.READY, True, "Running", "", "aaa")
    store.put_status(msgspec.structs.replace(healthy, conditions=(*healthy.conditions[:1], ready)))
    expected = Counter(
        (c.type.value, c.status) for record in store.statuses() for c in record.status.conditions
    )
    assert (
        store.condition_counts()
        == expected
        == {
            ("Synced", "True"): 3,
            ("Ready", "False"): 2,
            ("Ready", "True"): 1,
        }
    )


# --- events --------------------------------------------------------------------------------------


def test_appended_events_come_back_in_order_with_their_ids(store: Store) -> None:
    assert store.append_events([]) == []
    ids = store.append_events(
        [
            event(kind="deploy", deployment="web-lyon", revision="aaa", at=at(1)),
            event(kind="error", at=at(2)),
            event("pi-2", kind="rejected", revision="bbb", at=at(3)),
        ]
    )
    assert len(ids) == 3 and ids == sorted(ids)
    assert store.append_events([event(kind="started")])[0] > ids[-1]
    assert store.events(limit=3) == [
        EventRecord(ids[0], at(1), "pi-1", "deploy", "deploy on pi-1", "web-lyon", "aaa", None),
        EventRecord(ids[1], at(2), "pi-1", "error", "error on pi-1", None, None, None),
        EventRecord(ids[2], at(3), "pi-2", "rejected", "rejected on pi-2", None, "bbb", None),
    ]


def test_event_pages_by_id_with_filters(store: Store) -> None:
    items = [
        event(f"pi-{n % 2}", deployment=f"dep-{n % 3}", message=f"m{n}", at=at(n))
        for n in range(25)
    ]
    ids = store.append_events(items)

    def pages(**filters: Any) -> list[list[int]]:
        out: list[list[int]] = []
        after: int | None = None
        while page := store.events(after_id=after, limit=4, **filters):
            out.append([e.id for e in page])
            after = page[-1].id
        return out

    everything = pages()
    assert [len(page) for page in everything] == [4, 4, 4, 4, 4, 4, 1]
    assert [i for page in everything for i in page] == ids
    assert [i for page in pages(device="pi-1") for i in page] == ids[1::2]
    assert [i for page in pages(deployment="dep-2") for i in page] == ids[2::3]
    both = [i for page in pages(device="pi-0", deployment="dep-0") for i in page]
    assert both == ids[0::6]
    assert [e.id for e in store.events(after_id=ids[20])] == ids[21:]
    assert store.events(after_id=ids[-1]) == []
    assert store.events(device="nobody") == []
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=0)


def test_agent_events_are_stored_once_per_sequence_number(store: Store) -> None:
    assert store.append_device_events("pi-1", []) is None
    first = [(1, event(kind="deploy")), (2, event(kind="started"))]
    assert store.append_device_events("pi-1", first) == 2
    retried = [(2, event(kind="started")), (3, event(kind="error")), (3, event(kind="error"))]
    assert store.append_device_events("pi-1", retried) == 3
    assert store.append_device_events("pi-1", first) == 3  # a whole report sent again
    assert store.append_device_events("pi-2", [(1, event("pi-2"))]) == 1  # per device
    assert store.append_device_events("pi-1", []) == 3
    stored = store.events(device="pi-1")
    assert [(e.agent_seq, e.kind) for e in stored] == [(1, "deploy"), (2, "started"), (3, "error")]
    # the controller's own events carry no sequence number and never collide
    store.append_events([event(kind="rejected"), event(kind="rejected")])
    assert len(store.events(device="pi-1")) == 5


def test_agent_events_in_a_report_are_stored_in_sequence_order(store: Store) -> None:
    store.append_device_events("pi-1", [(7, event(kind="b")), (5, event(kind="a"))])
    assert [(e.agent_seq, e.kind) for e in store.events()] == [(5, "a"), (7, "b")]


def test_an_agent_cannot_report_events_of_another_device(store: Store) -> None:
    with pytest.raises(ValueError, match="pi-2"):
        store.append_device_events("pi-1", [(1, event("pi-2"))])
    assert store.events() == []


def test_a_sequence_number_used_for_another_event_is_refused_and_nothing_is_stored(
    store: Store,
) -> None:
    """Skipping it would drop the new event silently: what an agent does after its journal is
    wiped, or with two events numbered alike in one report."""
    assert store.append_device_events("pi-1", [(1, event()), (2, event(kind="started"))]) == 2
    for clash in (
        [(2, event(kind="error")), (3, event())],  # against a stored event
        [(3, event(kind="a")), (3, event(kind="b"))],  # within one report
        [(2, event(kind="started", at=at(1)))],  # another time is another event
    ):
        with pytest.raises(SequenceConflict, match="stored before with other content"):
            store.append_device_events("pi-1", clash)
    observed = report("pi-1", "1.1.0")
    with pytest.raises(SequenceConflict):
        store.put_report(observed, T0, [(1, event(kind="error"))])
    assert store.get_observed("pi-1") is None  # the whole report was refused
    assert [(e.agent_seq, e.kind) for e in store.events()] == [(1, "deploy"), (2, "started")]
    # an identical retry is no conflict, even carrying another revision
    retried = [(2, event(kind="started", revision="bbb")), (3, event(kind="c"))]
    assert store.put_report(observed, T0, retried) == 3
    assert store.get_observed("pi-1") == (observed, T0)
    assert [e.agent_seq for e in store.events()] == [1, 2, 3]


def test_devices_wait_for_a_plan_from_the_transaction_that_needs_it_until_planned(
    store: Store,
) -> None:
    """What a starting controller, or a replica taking over, plans: the devices a commit
    changed or a report moved, and no others, even after a crash between store and plan."""
    store.apply("aaa", at(0), changed=["pi-1", "pi-2"], gone=["pi-9"])
    assert store.replans() == ["pi-1", "pi-2", "pi-9"]
    first = store.replan_generations(["pi-1", "pi-9", "pi-7"])
    assert first.keys() == {"pi-1", "pi-9"}
    store.put_report(report("pi-1", "1.0.0"), at(1), [])  # a new reason, after the first
    store.put_plans(  # plans made from the first reasons only
        [PlannedDevice("pi-1", [], [], first["pi-1"]), PlannedDevice("pi-9", [], [], first["pi-9"])]
    )
    assert store.replans() == ["pi-1", "pi-2"]
    again = store.replan_generations(["pi-1"])["pi-1"]
    assert again > first["pi-1"]
    store.put_plans([PlannedDevice("pi-1", [], [], again)])
    assert store.replans() == ["pi-2"]
    store.put_reports(
        [StoredReport(None, "pi-1", None, [(1, event("pi-1"))], None)], at(2)
    )  # events only: its state did not change, nothing to plan
    assert store.replans() == ["pi-2"]


def test_plans_replace_statuses_prune_the_rest_and_append_events(store: Store) -> None:
    def status(deployment: str, device: str) -> DeploymentStatus:
        return DeploymentStatus(
            deployment=deployment,
            device=device,
            application="web",
            desired_release="1.0.0",
            observed_release=None,
            desired_state="Running",
            observed_state=None,
            revision="aaa",
            conditions=(),
        )

    store.put_plans(
        [
            PlannedDevice("pi-1", [status("a", "pi-1"), status("b", "pi-1")], [], None),
            PlannedDevice("pi-2", [status("a", "pi-2")], [event("pi-2")], None),
        ]
    )
    assert [(s.deployment, s.device) for s in store.statuses()] == [
        ("a", "pi-1"),
        ("a", "pi-2"),
        ("b", "pi-1"),
    ]
    store.put_plans([PlannedDevice("pi-1", [status("b", "pi-1")], [], None)])
    store.put_plans([PlannedDevice("pi-2", [], [], None)])  # no deployment targets it now
    assert [(s.deployment, s.device) for s in store.statuses()] == [("b", "pi-1")]
    assert [e.device for e in store.events()] == ["pi-2"]


def test_events_are_numbered_per_journal_and_a_new_journal_is_recorded(store: Store) -> None:
    reset = event(kind="journal-reset", message="started again")
    assert store.append_device_events("pi-1", [(1, event())], EPOCH, reset) == 1
    assert store.events()[0].kind == "deploy"  # a first journal is no reset
    assert (
        store.append_device_events("pi-1", [(1, event(kind="x")), (2, event())], OTHER, reset) == 2
    )
    assert store.append_device_events("pi-1", [], EPOCH, reset) == 1  # lastSeq per journal
    assert store.append_device_events("pi-1", [(2, event())], EPOCH, reset) == 2  # no new reset
    assert store.append_device_events("pi-1", []) is None  # without an epoch: its own journal
    assert store.append_device_events("pi-2", [(1, event("pi-2"))], OTHER, reset) == 1
    stored = [(e.device, e.agent_epoch, e.agent_seq, e.kind) for e in store.events()]
    assert stored == [
        ("pi-1", EPOCH, 1, "deploy"),
        ("pi-1", OTHER, None, "journal-reset"),
        ("pi-1", OTHER, 1, "x"),
        ("pi-1", OTHER, 2, "deploy"),
        ("pi-1", EPOCH, 2, "deploy"),
        ("pi-2", OTHER, 1, "deploy"),
    ]


def test_concurrent_retries_store_each_sequence_number_once(database_url: str) -> None:
    """Agents retry while their first report is still being written: threads race on the same
    sequence numbers through separate connections."""
    with Store.open(database_url) as shared:
        errors: list[BaseException] = []

        def report(offset: int) -> None:
            try:
                for start in range(0, 20, 5):
                    batch = [(seq, event(kind=f"k{seq}")) for seq in range(start, start + 5)]
                    # any order in a report: the store sorts, so racing writers never deadlock
                    shared.append_device_events("pi-1", batch[offset:] + batch[:offset])
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=report, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert [e.agent_seq for e in shared.events()] == list(range(20))


# --- fingerprints and tokens ---------------------------------------------------------------------


def test_fingerprints_are_replaced_per_kind(store: Store) -> None:
    assert store.fingerprints("credential") == {}
    store.put_fingerprints("credential", {"registry": "hmac-sha256:aa", "mirror": "hmac-sha256:bb"})
    store.put_fingerprints("release", {"web-1-0-0": "sha256:11"})
    store.put_fingerprints("credential", {"registry": "hmac-sha256:cc"})
    assert store.fingerprints("credential") == {"registry": "hmac-sha256:cc"}
    assert store.fingerprints("release") == {"web-1-0-0": "sha256:11"}
    store.put_fingerprints("volume", {"data": "sha256:22"})
    store.put_fingerprints("network", {"data": "sha256:33"})  # the same name, another kind
    store.put_fingerprints("release", {})
    assert store.fingerprints("release") == {}
    assert store.fingerprints("volume") == {"data": "sha256:22"}
    assert store.fingerprints("network") == {"data": "sha256:33"}
    with pytest.raises(ValueError, match="unknown fingerprint kind"):
        store.put_fingerprints("password", {})  # type: ignore[arg-type]


def test_device_tokens_are_hashes_that_can_be_revoked(store: Store) -> None:
    assert store.token_hash("pi-1") is None
    store.put_token("pi-1", "argon2:first", at(0))
    store.put_token("pi-2", "argon2:other", at(0))
    store.put_token("pi-1", "argon2:rotated", at(1))
    assert store.token_hash("pi-1") == "argon2:rotated"
    assert store.revoke_token("pi-1") is True
    assert store.revoke_token("pi-1") is False
    assert store.token_hash("pi-1") is None
    assert store.token_hash("pi-2") == "argon2:other"


def test_many_token_hashes_are_set_at_once(store: Store) -> None:
    store.put_token("pi-1", "old", at(0))
    store.put_tokens({f"pi-{i}": f"hash-{i}" for i in range(1, 501)}, at(1))
    assert store.token_hash("pi-1") == "hash-1" and store.token_hash("pi-500") == "hash-500"
    assert store.token_owner("hash-250") == "pi-250"
    store.put_tokens({}, at(2))  # nothing to do


def test_the_schema_has_no_place_for_a_secret(store: Store) -> None:
    columns = {c.name for table in Base.metadata.tables.values() for c in table.columns}
    assert not {name for name in columns if "password" in name or "secret" in name}
    assert {name for name in columns if "token" in name} == {"token_hash"}


# --- round trips ---------------------------------------------------------------------------------


def test_times_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2025, 3, 30, 3, 59, 59, 999999, tzinfo=paris)
    store.apply("aaa", local)
    store.put_observed(report("pi-1"), local)
    store.put_token("pi-1", "h", local)
    store.append_events([event(at=local)])
    store.append_device_events("pi-1", [(1, event(at=local))])
    attempt = store.last_attempt()
    observed = store.get_observed("pi-1")
    assert attempt is not None and observed is not None
    times = [attempt.at, attempt.applied_at, observed[1], *(e.at for e in store.events())]
    for value in times:
        assert value == local
        assert value is not None and value.tzinfo is UTC
        assert value.isoformat() == "2025-03-30T01:59:59.999999+00:00"


def test_naive_times_are_refused(store: Store) -> None:
    naive = datetime(2025, 1, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        store.apply("aaa", naive)
    with pytest.raises(ValueError, match="naive"):
        store.append_events([event(at=naive)])
    assert store.last_attempt() is None and store.events() == []


def test_json_documents_round_trip(store: Store) -> None:
    text = 'héllo 🌱 "quoted" \\ back\nslash'
    document: dict[str, Any] = {
        "text": text,
        "nested": {"list": [1, 2.5, -0.0, True, False, None, [], {}], "empty": ""},
        "big": 2**62,
        "negative": -(2**53) - 1,
        "float": 1e-300,
        "keys with.dots": {"$and'quotes\"": 1},
        "unicode-key-ü": ["ß"],
    }
    container = wire.ContainerReport(name=text, state=text, image_present=False, error=text)
    release = wire.ReleaseReport(
        application=text,
        release=text,
        deployment=text,
        running=False,
        complete=False,
        redeploy=text,
        digest="",
        error=text,
        containers=[container],
    )
    events = [
        wire.Event(
            seq=2**62, at="2026-01-01T00:00:00.5+01:00", kind="error", message=text, deployment=text
        ),
        # not exact as a float
        wire.Event(seq=2**53 + 1, at="2026-01-01T00:00:00Z", kind="started", message=""),
    ]
    reported = wire.StatusReport(
        device="pi-1", revision=text, releases=[release], images=[text, ""], events=events
    )
    written = DeploymentStatus(
        deployment="dep",
        device="pi-1",
        application=text,
        desired_release=text,
        observed_release=None,
        desired_state="Stopped",
        observed_state=None,
        revision=text,
        conditions=(condition(ConditionType.DEGRADED, True, text, text, text),),
    )
    store.put_observed(reported, T0)
    store.put_status(written)
    store.reject("aaa", [document, {}], T0)
    assert store.get_observed("pi-1") == (reported, T0)
    assert store.statuses() == [StatusRecord("dep", "pi-1", written)]
    assert store.rejected(1)[0].errors == [document, {}]


# --- two stores, one database --------------------------------------------------------------------


def test_two_stores_on_one_database_see_each_others_writes(store: Store, database_url: str) -> None:
    with Store.open(database_url) as other:
        store.put_observed(report("pi-1", revision="first"), T0)
        assert other.get_observed("pi-1") == (report("pi-1", revision="first"), T0)
        other.put_observed(report("pi-1", revision="second"), at(1))
        assert store.observed_all() == {"pi-1": report("pi-1", revision="second")}
        mine = store.append_events([event(kind="a")])
        theirs = other.append_events([event(kind="b")])
        assert theirs[0] > mine[0]
        assert [e.kind for e in store.events()] == [e.kind for e in other.events()] == ["a", "b"]
        other.put_token("pi-1", "h", T0)
        assert store.token_hash("pi-1") == "h"
        store.revoke_token("pi-1")
        assert other.token_hash("pi-1") is None


def test_a_token_hash_finds_its_device(store: Store) -> None:
    store.put_token("pi-1", "hash-1", T0)
    assert store.token_owner("hash-1") == "pi-1"
    assert store.token_owner("hash-2") is None
    store.revoke_token("pi-1")
    assert store.token_owner("hash-1") is None


def test_an_older_store_gains_secret_fingerprints_and_keeps_its_own(engine: sa.Engine) -> None:
    """0010 rebuilds the fingerprints' CHECK (SQLite cannot alter one): rows are kept, a
    Secret's fingerprint is taken, a made-up kind still refused."""
    migrate(engine, "0009")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO fingerprints VALUES ('credential', 'c', 'f1')"))
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO fingerprints VALUES ('secret', 'db', 'f2')"))
        rows = connection.execute(sa.text("SELECT kind, name FROM fingerprints ORDER BY kind"))
        assert rows.all() == [("credential", "c"), ("secret", "db")]
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO fingerprints VALUES ('bogus', 'x', 'f3')"))
