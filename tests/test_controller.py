"""The controller on real git repositories and a real store: apply, reject, recover, reconcile."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from textwrap import dedent

import git
import msgspec
import pytest

from reconciler.controller.controller import Controller, Ingested
from reconciler.controller.source import open_repo, resolve, tree_blobs, tree_files
from reconciler.core.status import ConditionType
from reconciler.manifests.incremental import Keyed
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import validate_files
from reconciler.store import Store
from reconciler.wire import DesiredDocument, Event, ReleaseReport, StatusReport
from tests.support.repos import BASE, RELEASE_110, commit, resources


class BranchSource:
    """The tip of a branch of a local repository; its files keyed by blob id, as a `Mirror`'s,
    and the paths it read."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.repo = open_repo(str(path))
        self.branch = branch
        self.read: list[str] = []

    def fetch(self) -> str:
        return resolve(self.repo, self.branch)

    def files(self, sha: str) -> Iterable[tuple[str, bytes | Problem]]:
        return tree_files(self.repo, sha)

    def blobs(self, sha: str) -> Iterator[Keyed]:
        for file in tree_blobs(self.repo, sha):
            yield replace(file, read=partial(self._read, file))

    def _read(self, file: Keyed) -> bytes | Problem:
        self.read.append(file.path)
        return file.read()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """Every controller test runs on SQLite and on PostgreSQL."""
    with Store.open(database_url) as opened:
        yield opened


def controller(upstream: git.Repo, store: Store) -> Controller:
    clock = iter(datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(60))
    return Controller(
        BranchSource(Path(upstream.working_dir)),
        store,
        identities=[],
        fingerprint_key=b"k" * 32,
        now=lambda: next(clock),
    )


def test_a_valid_commit_is_applied_and_queues_its_devices(upstream: git.Repo, store: Store) -> None:
    ctl = controller(upstream, store)
    outcome = ctl.sync()
    assert outcome is not None and outcome.applied
    assert outcome.devices == ["pi-1", "pi-2"]
    assert store.applied_revision() == upstream.head.commit.hexsha
    assert ctl.sync() is None  # the same tip is not considered twice
    actions = ctl.reconcile("pi-1")
    assert [(a.action, a.to_release) for a in actions] == [("deploy", "1.0.0"), ("start", "1.0.0")]
    (status,) = [s.status for s in store.statuses()]
    assert status.condition(ConditionType.SYNCED).status == "True"
    assert status.condition(ConditionType.READY).reason == "NotReported"
    assert status.condition(ConditionType.PROGRESSING).reason == "Deploy+Start"
    kinds = [e.kind for e in store.events(device="pi-1")]
    assert kinds == ["deploy", "start"]
    ctl.reconcile("pi-1")  # a resync with nothing new adds no event
    assert len(store.events(device="pi-1")) == 2


def test_an_invalid_commit_is_rejected_whole_and_the_last_good_stays(
    upstream: git.Repo, store: Store
) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    good = store.applied_revision()
    bad = commit(upstream, "typo", {"release-110.yaml": RELEASE_110.replace('"1.1.0"', '"v1.1.0"')})
    outcome = ctl.sync()
    assert outcome is not None and not outcome.applied
    assert [p.field for p in outcome.errors] == ["spec.version"]
    assert store.applied_revision() == good
    (rejected,) = store.rejected()
    assert rejected.sha == bad and rejected.errors[0]["file"] == "release-110.yaml"
    (event,) = [e for e in store.events() if e.kind == "rejected"]
    assert event.device is None and "release-110.yaml:6" in event.message
    ctl.reconcile("pi-1")
    synced = store.statuses()[0].status.condition(ConditionType.SYNCED)
    assert synced.status == "False" and bad[:12] in synced.message
    assert synced.revision == good
    fixed = commit(upstream, "fix", {"release-110.yaml": RELEASE_110})
    recovered = ctl.sync()
    assert recovered is not None and recovered.applied and store.applied_revision() == fixed


def test_a_release_changed_in_place_is_rejected(upstream: git.Repo, store: Store) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    release = dedent(BASE["release.yaml"]).replace("server:1.0.0", "server:1.0.1")
    commit(upstream, "sneaky", {"release.yaml": release})
    outcome = ctl.sync()
    assert outcome is not None and not outcome.applied
    (error,) = outcome.errors
    assert error.file == "release.yaml" and error.field == "spec.version"
    assert "publish a new version" in error.message


def test_an_upgrade_queues_only_the_devices_it_touches(upstream: git.Repo, store: Store) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    deployment = dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"')
    commit(upstream, "upgrade", {"release-110.yaml": RELEASE_110, "deployment.yaml": deployment})
    outcome = ctl.sync()
    assert outcome is not None and outcome.devices == ["pi-1"]
    running = ReleaseReport(
        application="web", release="1.0.0", deployment="web-lyon", running=True, complete=True
    )
    store.put_observed(
        StatusReport(device="pi-1", releases=[running]), datetime(2026, 1, 1, tzinfo=UTC)
    )
    (action,) = ctl.reconcile("pi-1")
    assert (action.action, action.from_release, action.to_release) == ("upgrade", "1.0.0", "1.1.0")


def test_a_restarted_controller_resumes_the_applied_revision(
    upstream: git.Repo, store: Store
) -> None:
    controller(upstream, store).sync()
    commit(upstream, "bad", {"broken.yaml": "kind: [\n"})
    fresh = controller(upstream, store)
    fresh.resume()
    assert fresh.applied is not None and fresh.applied.sha == store.applied_revision()
    outcome = fresh.sync()
    assert outcome is not None and not outcome.applied
    assert fresh.devices() == ["pi-1", "pi-2"]


def test_a_commit_reads_and_checks_only_the_files_it_changed_from_a_restart_on(
    upstream: git.Repo, store: Store
) -> None:
    controller(upstream, store).sync()
    fresh = controller(upstream, store)
    fresh.resume()
    source = fresh.source
    assert isinstance(source, BranchSource)
    assert source.read == sorted(BASE)  # the applied revision, validated once at start-up
    source.read.clear()
    deployment = dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"')
    changes = {"release-110.yaml": RELEASE_110, "deployment.yaml": deployment}
    sha = commit(upstream, "upgrade", changes)
    outcome = fresh.sync()
    assert outcome is not None and outcome.applied and outcome.devices == ["pi-1"]
    assert source.read == ["deployment.yaml", "release-110.yaml"]
    assert fresh.applied is not None
    assert fresh.applied.report == validate_files(tree_files(source.repo, sha), [])


def test_documents_name_the_commit_that_changed_their_device_even_after_a_restart(
    upstream: git.Repo, store: Store
) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    first = upstream.head.commit.hexsha
    moved = dedent(BASE["devices.yaml"]).replace("site: nantes", "site: lyon")
    second = commit(upstream, "pi-2 joins lyon", {"devices.yaml": moved})
    outcome = ctl.sync()
    assert outcome is not None and outcome.applied and outcome.devices == ["pi-2"]
    revisions = {d: ctl.document_revision(d) for d in ("pi-1", "pi-2")}
    assert revisions == {"pi-1": first, "pi-2": second}
    fresh = controller(upstream, store)
    fresh.resume()
    assert {d: fresh.document_revision(d) for d in ("pi-1", "pi-2")} == revisions
    body = fresh.document("pi-1")
    assert body is not None
    assert msgspec.json.decode(body, type=DesiredDocument).revision == first


def test_a_removed_deployment_clears_its_status(upstream: git.Repo, store: Store) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    ctl.reconcile("pi-1")
    assert [s.deployment for s in store.statuses()] == ["web-lyon"]
    Path(upstream.working_dir, "deployment.yaml").unlink()
    commit(upstream, "remove")
    outcome = ctl.sync()
    assert outcome is not None and outcome.devices == ["pi-1"]
    ctl.reconcile("pi-1")
    assert store.statuses() == []


def in_place(kind: str, name: str) -> str:
    return (
        f"{kind} {name} was changed in place; {kind.lower()}s are immutable once applied: "
        "create one under a new name and switch releases to it"
    )


def assert_rejected(ctl: Controller, store: Store, good: str | None, *expected: Problem) -> None:
    """The tip is rejected with exactly `expected`, and `good` stays applied."""
    outcome = ctl.sync()
    assert outcome is not None and not outcome.applied
    assert outcome.errors == list(expected)
    assert store.applied_revision() == good
    assert ctl.applied is not None and ctl.applied.sha == good


def test_a_volume_changed_in_place_is_rejected(upstream: git.Repo, store: Store) -> None:
    """The agent never recreates a volume (it holds data): the change could not be applied."""
    ctl = controller(upstream, store)
    ctl.sync()
    good = store.applied_revision()
    commit(upstream, "options", {"resources.yaml": resources("spec: {options: {o: size=1g}}\n")})
    assert_rejected(
        ctl,
        store,
        good,
        Problem(
            "resources.yaml", 7, 18, "Volume", "data", "metadata.name", in_place("Volume", "data")
        ),
    )


def test_a_network_changed_in_place_is_rejected(upstream: git.Repo, store: Store) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    good = store.applied_revision()
    commit(upstream, "internal", {"resources.yaml": resources(network="spec: {internal: true}\n")})
    assert_rejected(
        ctl,
        store,
        good,
        Problem(
            "resources.yaml",
            3,
            18,
            "Network",
            "front",
            "metadata.name",
            in_place("Network", "front"),
        ),
    )


def test_a_removed_volume_cannot_come_back_with_another_spec(
    upstream: git.Repo, store: Store
) -> None:
    """The controller remembers every volume it applied, as it does releases."""
    ctl = controller(upstream, store)
    ctl.sync()
    deployment = dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"')
    Path(upstream.working_dir, "release.yaml").unlink()  # the only release using `data`
    without = dedent(BASE["resources.yaml"]).split("---\n")[0]
    commit(
        upstream,
        "drop data",
        {"release-110.yaml": RELEASE_110, "deployment.yaml": deployment, "resources.yaml": without},
    )
    removed = ctl.sync()
    assert removed is not None and removed.applied, removed
    good = store.applied_revision()
    commit(upstream, "reuse", {"resources.yaml": resources("spec: {deletionPolicy: Delete}\n")})
    assert_rejected(
        ctl,
        store,
        good,
        Problem(
            "resources.yaml", 7, 18, "Volume", "data", "metadata.name", in_place("Volume", "data")
        ),
    )
    commit(upstream, "same again", {"resources.yaml": resources()})
    back = ctl.sync()
    assert back is not None and back.applied  # the same spec under the same name is fine


def test_a_new_volume_and_a_release_switched_to_it_are_applied(
    upstream: git.Repo, store: Store
) -> None:
    ctl = controller(upstream, store)
    ctl.sync()
    volume = "---\napiVersion: hedgerow.dev/v1alpha1\nkind: Volume\nmetadata: {name: data-v2}\n"
    volume += "spec: {options: {o: size=1g}, deletionPolicy: Delete}\n"
    release = dedent(RELEASE_110).replace(
        "server:1.1.0}", "server:1.1.0, volumes: [{volume: data-v2, target: /data}]}"
    )
    deployment = dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"')
    commit(
        upstream,
        "data-v2",
        {
            "resources.yaml": resources(extra=volume),
            "release-110.yaml": release,
            "deployment.yaml": deployment,
        },
    )
    outcome = ctl.sync()
    assert outcome is not None and outcome.applied, outcome
    assert outcome.devices == ["pi-1"]
    body = ctl.document("pi-1")
    assert body is not None
    (web,) = msgspec.json.decode(body, type=DesiredDocument).deployments
    assert [(v.name, v.options, v.deletion_policy) for v in web.volumes] == [
        ("data-v2", {"o": "size=1g"}, "Delete")
    ]


def test_a_restarted_controller_remembers_the_volumes_it_had_applied(
    upstream: git.Repo, store: Store
) -> None:
    """A store from before volumes were fingerprinted learns them from the applied revision."""
    controller(upstream, store).sync()
    good = store.applied_revision()
    store.put_fingerprints("volume", {})
    commit(upstream, "options", {"resources.yaml": resources("spec: {options: {o: size=1g}}\n")})
    fresh = controller(upstream, store)
    fresh.resume()
    assert_rejected(
        fresh,
        store,
        good,
        Problem(
            "resources.yaml", 7, 18, "Volume", "data", "metadata.name", in_place("Volume", "data")
        ),
    )


def test_an_unchanged_report_only_appends_its_events(upstream: git.Repo, store: Store) -> None:
    """A converged device reports the same state every period: its events are stored, and
    neither its observed state is written again nor the device re-planned."""
    ticks = iter(datetime(2026, 1, 1, 0, minute, tzinfo=UTC) for minute in range(10))
    ctl = Controller(
        BranchSource(Path(upstream.working_dir)),
        store,
        identities=[],
        fingerprint_key=b"k" * 32,
        now=lambda: next(ticks),
    )
    ctl.sync()
    running = ReleaseReport(
        application="web", release="1.0.0", deployment="web-lyon", running=True, complete=True
    )

    def report(seq: int, *releases: ReleaseReport) -> StatusReport:
        event = Event(seq=seq, at="2026-01-01T00:00:00+00:00", kind="started", message="up")
        return StatusReport(
            device="pi-1", releases=list(releases), events=[event], epoch="journal-1"
        )

    first, second, third = ctl.ingest_many([report(1, running), report(2, running), report(3)])
    assert first == Ingested(1, True)
    assert second == Ingested(2, False)  # the same state: events only
    assert third == Ingested(3, True)  # the release is gone
    assert [e.agent_seq for e in store.events(device="pi-1")] == [1, 2, 3]
    observed = store.get_observed("pi-1")
    assert observed is not None and observed[0].releases == []
    (again,) = ctl.ingest_many([report(4)])
    assert again == Ingested(4, False)
    assert store.get_observed("pi-1") == observed  # not written again: the same time


def test_a_restart_plans_only_what_waits_and_a_same_report_after_it_adds_nothing(
    upstream: git.Repo, store: Store
) -> None:
    """A fleet of 100,000 is not planned again at each start: the store keeps the devices
    waiting for a plan, and a device reporting the state it reported before the restart
    is not one of them."""
    ctl = controller(upstream, store)
    ctl.sync()
    assert store.replans() == ["pi-1", "pi-2"]  # the commit changed them
    ctl.reconcile("pi-1")
    assert store.replans() == ["pi-2"]  # a crash now: the next start plans pi-2 alone
    running = ReleaseReport(
        application="web", release="1.0.0", deployment="web-lyon", running=True, complete=True
    )
    event = Event(seq=1, at="2026-01-01T00:00:00+00:00", kind="started", message="up")
    report = StatusReport(device="pi-1", releases=[running], events=[event], epoch="journal-1")
    assert ctl.ingest_many([report]) == [Ingested(1, True)]
    assert store.replans() == ["pi-1", "pi-2"]
    ctl.reconcile("pi-1")
    restarted = controller(upstream, store)
    restarted.resume()
    again = msgspec.structs.replace(report, events=[msgspec.structs.replace(event, seq=2)])
    assert restarted.ingest_many([again]) == [Ingested(2, False)]
    assert store.replans() == ["pi-2"]


def test_a_follower_serves_the_leaders_stored_documents_before_it_validates_the_revision(
    upstream: git.Repo, store: Store
) -> None:
    """Replicas: a follower woken by the leader's commit serves the documents the leader
    stored at once (the same bytes it will build once it has validated the commit), and
    validating wakes no device a second time."""
    leader, follower = controller(upstream, store), controller(upstream, store)
    heard: list[Sequence[str] | None] = []
    follower.listeners.append(heard.append)
    assert leader.sync() is not None and follower.follow() == ["pi-1", "pi-2"]
    before = follower.document("pi-1")
    deployment = dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"')
    sha = commit(
        upstream, "upgrade", {"release-110.yaml": RELEASE_110, "deployment.yaml": deployment}
    )
    assert leader.sync() is not None
    heard.clear()
    assert follower.take_stored() == ["pi-1"] and follower.ahead == {"pi-1"}
    assert heard == [["pi-1"]]  # its poll wakes now
    assert follower.document_revision("pi-1") == sha
    stored = store.stored_documents(["pi-1", "pi-2"])
    assert list(stored) == ["pi-1", "pi-2"] and stored["pi-1"].revision == sha
    assert stored["pi-1"].body != before
    assert msgspec.json.decode(stored["pi-1"].body, type=DesiredDocument).revision == sha
    assert follower.take_stored() == []  # nothing moved since
    heard.clear()
    assert follower.follow() == [] and not follower.ahead  # validated: not woken again
    assert heard == [[]]
    assert follower.document("pi-1") == stored["pi-1"].body  # byte for byte: the same ETag
