"""The controller: follow a branch, apply each valid commit whole, and reconcile every device.

Level-triggered: `sync` turns the branch tip into the desired state (or a rejection that keeps
the last good revision in force) and queues the devices whose desired state changed;
`reconcile(device)` recomputes that device's plan and statuses from scratch. The blocking
parts (git, the database) are plain methods; `run` in `reconciler.controller.runner` drives them.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import msgspec

from reconciler import wire
from reconciler.controller.memory import release_free_memory
from reconciler.controller.rollouts import Rollouts, decode, encode
from reconciler.controller.source import BranchDeleted, SourceError
from reconciler.core import history
from reconciler.core.desired import (
    affected_devices,
    changed_files,
    desired_fleet,
    refresh_fleet,
    spec_digest,
)
from reconciler.core.document import (
    Applied,
    Fleet,
    Projection,
    StoredDocument,
    pull_credentials,
)
from reconciler.core.immutable import (
    ResourceKind,
    credential_changed,
    release_changed,
    resource_changed,
    resources,
    secret_changed,
)
from reconciler.core.observed import observed_releases
from reconciler.core.plan import Action, plan_device
from reconciler.core.reports import InvalidReport, SequenceConflict, checked_events
from reconciler.core.rollout import OFFLINE_AFTER, RolloutEvent
from reconciler.core.status import deployment_status
from reconciler.logs import get_logger
from reconciler.manifests.appsecrets import fingerprints as secret_fingerprints
from reconciler.manifests.credentials import changed, fingerprints
from reconciler.manifests.incremental import Keyed, Validation, keyed, validate_changes
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import Report
from reconciler.secrets.sops import Identity
from reconciler.store import (
    EventIn,
    FingerprintKind,
    JSONObject,
    PlannedDevice,
    Store,
    StoredReport,
)

log = get_logger("hedgerow.controller")

# Told which devices' desired documents may have changed (None: every device); may be called
# from the controller's worker thread, so listeners must be thread-safe.
Listener = Callable[[Sequence[str] | None], None]


class Source(Protocol):
    """Where revisions come from: the tip of a branch, and the manifests of a commit. `fetch`
    raises `BranchDeleted` when the branch is gone upstream."""

    def fetch(self) -> str: ...

    def files(self, sha: str) -> Iterable[tuple[str, bytes | Problem]]: ...


@runtime_checkable
class DescribedSource(Protocol):
    """A source that tells a commit's subject line (a `Mirror`), kept with the revision for
    people (`hedgerow status`, the dashboard)."""

    def message(self, sha: str) -> str: ...


@runtime_checkable
class BlobSource(Protocol):
    """A source that keys each file by its blob id (a `Mirror`): a file a commit did not change
    is not even read. Another source's files are keyed by a digest of their content."""

    def blobs(self, sha: str) -> Iterable[Keyed]: ...


class History(Protocol):
    """How commits relate: whether `sha` is `ancestor` or comes after it (a `Mirror` is one)."""

    def descends(self, sha: str, ancestor: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Ingested:
    last_seq: int  # the highest event number stored for the report's journal
    changed: bool  # its observed state differs from the last: the device is re-planned


@dataclass(frozen=True, slots=True)
class ReportToStore:
    report: wire.StatusReport  # without its events
    events: list[tuple[int, EventIn]]
    reset: EventIn | None
    changed: bool
    digest: bytes
    facts: wire.Facts | None = None  # when they changed
    facts_digest: bytes | None = None

    def as_store(self) -> StoredReport:
        return StoredReport(self.report if self.changed else None, self.report.device,
                            self.report.epoch, self.events, self.reset, self.facts)  # fmt: skip


# Devices planned between two returns of the C heap's free pages to the system (about 2 ms
# each): a start or a commit that plans the fleet leaves no more than this many devices'
# buffers in the heap, and a device planned now and then costs nothing.
RELEASE_EVERY = 1000
_DIGEST = 16  # bytes of a digest (`_digest`)
TOUCH_EVERY = 30.0  # seconds: a third of the time without a report that makes a device offline


def _digest(value: object) -> bytes:
    """A short digest of what msgspec encodes: equal for equal observed states, statuses or
    actions, to tell an unchanged one at once without keeping it."""
    return hashlib.blake2b(msgspec.json.encode(value), digest_size=_DIGEST).digest()


@dataclass(frozen=True)
class Outcome:
    sha: str
    applied: bool
    errors: list[Problem]
    devices: list[str]  # queued for reconciliation


class Controller:
    def __init__(
        self,
        source: Source,
        store: Store,
        *,
        identities: Sequence[Identity],
        fingerprint_key: bytes,
        history: History | None = None,
        allow_history_rewrite: bool = True,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        offline_after: float = OFFLINE_AFTER,
    ) -> None:
        """Without `history`, commits are not checked for a rewrite of history (a source of
        one commit, in tests); with it, a commit that does not descend from the applied one is
        applied with a warning, or rejected when `allow_history_rewrite` is off."""
        self.source = source
        self.history = history
        self.allow_history_rewrite = allow_history_rewrite
        self.store = store
        self.identities = list(identities)
        self.key = fingerprint_key
        self.now = now
        self.applied: Applied | None = None
        self.projection: Projection | None = None  # the applied revision's documents
        self.listeners: list[Listener] = []
        self._present: dict[str, frozenset[str]] = {}  # images each device last reported
        self._observed: dict[str, bytes] = {}  # digest of each device's last observed state
        self._journals: dict[str, str] = {}  # each device's journal epoch, once seen
        # each device's plan as this process stored it: digests of its statuses and of its
        # actions (16 bytes each; lists of actions were about 600 bytes a device)
        self._planned: dict[str, bytes] = {}
        self._unreleased = 0  # devices planned since the C heap's free pages were returned
        # device → the commit that last changed its desired state (as stored; see resume)
        self._revisions: dict[str, str] = {}
        self._branch_deleted: bool | None = None  # as the store's events say; None: not read
        self.term: int | None = None  # the leader's term among replicas (None: alone)
        # a follower's devices whose documents the leader changed in a revision this replica
        # has not validated yet: they are served the documents the leader stored
        self.ahead: frozenset[str] = frozenset()
        # the last commit validated (applied or not): the next one loads and checks only the
        # files it changed; kept from `resume` on
        self._validation: Validation | None = None
        # Commits and reports run on two threads (see runner): changes to `applied`,
        # `_revisions` and `_present` are made under this lock, never around a database call,
        # so a report compares pull credentials before and after against one applied revision.
        self._state = threading.Lock()
        # Rollouts in progress (see `reconciler.controller.rollouts`), and the repository's
        # desired fleet before they hold devices back; `applied.fleet` is the fleet served.
        self.rollouts = Rollouts(offline_after=offline_after)
        self._base: Fleet | None = None
        self._touched: dict[str, float] = {}  # when each device's report time was last stored
        self._facts: dict[str, bytes] = {}  # digest of each device's facts as last stored

    # -- revisions -----------------------------------------------------------------------------

    def _message(self, sha: str) -> str | None:
        if not isinstance(self.source, DescribedSource):
            return None
        try:
            return self.source.message(sha)[:1000]
        except Exception:
            log.warning("no commit message", revision=sha)
            return None

    def resume(self) -> None:
        """After a restart, rebuild the applied state from the revision the store recorded."""
        sha = self.store.applied_revision()
        if sha is not None:
            report = self._validate_applied(sha)
            if report.valid:
                self._remember(report)  # a store older than some fingerprint kind learns them
                base = desired_fleet(report.catalog)
                rollouts = self._stored_rollouts()
                applied = Applied(sha, report, rollouts.fleet(base, report.catalog))
                projection = Projection(applied)
                revisions = _shared_strings(self.store.document_revisions())
                self._document_missing(projection, revisions)
                with self._state:
                    self.applied, self._revisions = applied, revisions
                    self.projection, self._base, self.rollouts = projection, base, rollouts
                self._notify(None)
                release_free_memory()  # after validating the whole repository

    def _document_missing(self, projection: Projection, revisions: dict[str, str]) -> None:
        """Store the documents a store older than them lacks, so the next start serves them."""
        sha = projection.applied.sha
        missing = self.store.undocumented() & set(projection.applied.fleet)
        self.store.put_documents(
            {d: projection.stored(d, revisions.get(d, sha)) for d in sorted(missing)}
        )

    def stored_document(self, device: str) -> StoredDocument | None:
        """The document the store kept for `device`: what a starting controller serves."""
        return self.store.stored_document(device)

    def sync(self) -> Outcome | None:
        """Fetch the branch and consider its tip; None when it was already considered, or
        when the branch is deleted upstream (recorded once; the applied revision stays)."""
        try:
            sha = self.source.fetch()
        except BranchDeleted as gone:
            self._branch_gone(gone)
            return None
        if self._branch_is_deleted():
            self._record(history.BRANCH_RESTORED, history.restored(sha), sha)
            log.info("followed branch restored", revision=sha)
            self._branch_deleted = False
        last = self.store.last_attempt()
        # an attempt is applied in its own transaction: a valid one was applied
        if last is not None and last.sha == sha and (not last.valid or self._serves(sha)):
            return None
        return self.consider(sha)

    def _serves(self, sha: str) -> bool:
        return self.applied is not None and self.applied.sha == sha

    def take_stored(self) -> list[str] | None:
        """A follower's first step at the leader's new revision, before validating it: the
        devices whose documents it changed are served what the leader stored for them (the
        same bytes as the projection would be), so their polls wake now, not after this
        replica has validated the commit (seconds of CPU for a large one, on every replica).
        The devices moved, or None when there is nothing new."""
        sha = self.store.applied_revision()
        if sha is None or self._serves(sha) or self.applied is None:
            return None
        revisions = _shared_strings(self.store.document_revisions())
        with self._state:
            moved = _moved(self._revisions, revisions)
            self._revisions, self.ahead = revisions, self.ahead | moved
        changed = sorted(moved)
        self._notify(changed)
        return changed

    def follow(self) -> list[str] | None:
        """A replica's step: take up the revision the leader applied last, when it is not
        the one this replica serves. It is fetched, validated (the leader did: this builds
        the same documents) and served with the revisions the leader stored for each device,
        so every replica serves the same bytes. The devices whose documents changed, or None
        when there was nothing new."""
        sha = self.store.applied_revision()
        if sha is None or self._serves(sha):
            return None
        report = self._validate_applied(sha)
        if not report.valid:
            log.error(
                "the leader's revision does not validate here: check this replica's keys",
                revision=sha,
                errors=len(report.errors),
            )
            return None
        base, _ = self._desired(report)
        rollouts = self._stored_rollouts()
        fleet = rollouts.fleet(base, report.catalog)
        held = _differ(self.applied.fleet if self.applied else {}, fleet)
        applied = Applied(sha, report, fleet)
        projection = self.projection.carry(applied) if self.projection else Projection(applied)
        revisions = _shared_strings(self.store.document_revisions())
        with self._state:
            before, ahead = self._revisions, self.ahead
            self.applied, self.projection, self._revisions = applied, projection, revisions
            self._base, self.rollouts, self.ahead = base, rollouts, frozenset()
        moved = _moved(before, revisions)
        # the devices served the stored documents were woken already, and keep the same bytes
        changed = sorted(moved.union(set(held) - ahead))
        self._notify(changed)
        release_free_memory()
        return changed

    def follow_rollouts(self) -> list[str]:
        """A follower's step when the leader's rollouts moved devices: the same holds, so it
        serves the same documents. The devices whose documents changed."""
        applied, base = self.applied, self._base
        if applied is None or base is None or self.projection is None:
            return []
        rollouts = self._stored_rollouts()
        if rollouts.records == self.rollouts.records:
            return []
        fleet = rollouts.fleet(base, applied.report.catalog)
        changed = _differ(applied.fleet, fleet)
        moved = Applied(applied.sha, applied.report, fleet)
        stored = self.store.stored_documents(changed)  # the revisions the leader gave them
        with self._state:
            self.applied, self.projection = moved, self.projection.carry(moved)
            self.rollouts = rollouts
            self._revisions.update({d: sys.intern(doc.revision) for d, doc in stored.items()})
        self._notify(changed)
        return changed

    def _stored_rollouts(self) -> Rollouts:
        """The rollouts the store keeps, over this process's reports and times."""
        records = {name: decode(record) for name, record in self.store.rollouts().items()}
        kept = self.rollouts.copy()
        kept.records = records
        return kept

    def consider(self, sha: str) -> Outcome:
        """Validate one commit as a whole; apply it, or reject it and keep the last good one."""
        report = self._validate(sha)
        errors = [*report.errors, *self._immutability(report)]
        rewrite = self._rewrite(sha)
        if rewrite is not None and not self.allow_history_rewrite:
            log.warning("history rewrite refused", revision=sha, rewrite=rewrite)
            errors.append(Problem("", 0, 0, None, None, None, history.refused(rewrite)))
        at = self.now()
        if errors:
            summary = "; ".join(p.render() for p in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            message = f"commit {sha[:12]} rejected: {summary}{more}"
            event = EventIn(at, None, "rejected", message, revision=sha)
            self.store.reject(sha, [p.to_json() for p in errors], at, [event], self.term,
                              self._message(sha))  # fmt: skip
            # every device is queued: each status must show the rejection
            return Outcome(sha, False, errors, self.devices())
        base, _ = self._desired(report)
        old = self.applied
        rollouts = self.rollouts.copy()
        now = at.timestamp()
        started = rollouts.start(old.report.catalog if old else None, report.catalog,
                                 old.fleet if old else {}, sha, now)  # fmt: skip
        _, stepped = rollouts.advance(report.catalog, base, now)
        over = rollouts.finished(base)
        fleet = rollouts.fleet(base, report.catalog)
        devices = _differ(old.fleet if old else {}, fleet)
        gone = [d for d in devices if d not in fleet]
        changed = [d for d in devices if d in fleet]
        applied = Applied(sha, report, fleet)
        projection = self.projection.carry(applied) if self.projection else Projection(applied)
        documents = {device: projection.stored(device, sha) for device in changed}
        events = [EventIn(at, None, "applied", f"revision {sha[:12]} applied", revision=sha)]
        events += _rollout_events([*started, *stepped], at, sha)
        records = _changed_records(self.rollouts, rollouts, over)
        if rewrite is not None:  # devices go back: say so where operators look
            log.warning("history rewritten", revision=sha, rewrite=rewrite)
            warning = history.rewritten(rewrite, sha)
            events.append(EventIn(at, None, history.HISTORY_REWRITTEN, warning, revision=sha))
        self.store.apply(
            sha,
            at,
            changed=changed,
            gone=gone,
            documents=documents,
            events=events,
            term=self.term,
            rollouts=records,
            message=self._message(sha),
        )
        self._remember(report)
        with self._state:
            self.applied, self.projection = applied, projection
            self._base, self.rollouts = base, rollouts
            for device in gone:
                self._revisions.pop(device, None)
            self._revisions.update(dict.fromkeys(changed, sha))
        self._notify(devices)  # only their documents changed: the others stay as they are
        del documents  # with the validation's, the largest buffers of a commit
        release_free_memory()
        return Outcome(sha, True, [], devices)

    def _rewrite(self, sha: str) -> str | None:
        """How `sha` rewrites the history of the applied revision (the branch was force-pushed
        or moved back), or None when it descends from it."""
        applied = self.applied
        if applied is None or self.history is None or self.history.descends(sha, applied.sha):
            return None
        backwards = self.history.descends(applied.sha, sha)
        return history.rewrite(sha, applied.sha, backwards=backwards)

    def _branch_gone(self, gone: BranchDeleted) -> None:
        """Record a deleted branch once (not at every fetch); its last revision stays."""
        if not self._branch_is_deleted():
            log.warning("followed branch deleted upstream", revision=gone.last, error=str(gone))
            self._record(history.BRANCH_DELETED, str(gone), gone.last)
            self._branch_deleted = True

    def _branch_is_deleted(self) -> bool:
        """Whether the store's last word on the branch is that it is deleted (read once)."""
        if self._branch_deleted is None:
            last = self.store.last_event(history.BRANCH_EVENTS)
            self._branch_deleted = last is not None and last.kind == history.BRANCH_DELETED
        return self._branch_deleted

    def _record(self, kind: str, message: str, sha: str) -> None:
        self.store.append_events([EventIn(self.now(), None, kind, message, revision=sha)])

    def _desired(self, report: Report) -> tuple[Fleet, list[str]]:
        """The new desired fleet, and the devices it changes: recomputed only where the
        commit touched deployments or devices, so a small commit to a large fleet is cheap."""
        if self.applied is None or self._base is None:
            full = desired_fleet(report.catalog)
            return full, sorted(full)
        old, before = self.applied.report.catalog, self._base
        scope = affected_devices(old, report.catalog, changed_files(old, report.catalog))
        fleet = refresh_fleet(before, report.catalog, scope)
        return fleet, sorted(d for d in scope if before.get(d) != fleet.get(d))

    def _remember(self, report: Report) -> None:
        """Keep fingerprints of everything ever applied, so a name can never be reused."""
        digests: list[tuple[FingerprintKind, dict[str, str]]] = [
            ("release", _release_digests(report)),
            *_resource_digests(report).items(),
            ("credential", fingerprints(report.credentials, self.key)),
            ("secret", secret_fingerprints(report.secrets, self.key)),
        ]
        for kind, current in digests:
            self.store.put_fingerprints(kind, {**self.store.fingerprints(kind), **current})

    def _validate(self, sha: str) -> Report:
        """Validate a commit incrementally from the last one: the report is exactly a full
        validation's, at the cost of what changed (and of the rules across documents)."""
        source = self.source
        files = source.blobs(sha) if isinstance(source, BlobSource) else keyed(source.files(sha))
        self._validation = validate_changes(self._validation, files, self.identities)
        return self._validation.report

    def _validate_applied(self, sha: str) -> Report:
        """Validate a commit another process applied: this replica's mirror (new, or behind
        the leader's) may have to fetch it first."""
        try:
            return self._validate(sha)
        except SourceError:
            self.source.fetch()
            return self._validate(sha)

    def _immutability(self, report: Report) -> list[Problem]:
        """Releases, volumes, networks and credentials once applied never change under the
        same name, even after a commit removed them."""
        catalog = report.catalog
        problems: list[Problem] = []
        for key in changed(self.store.fingerprints("release"), _release_digests(report)):
            entry = catalog.release(*key.split("@", 1))
            assert entry is not None
            problems.append(release_changed(entry))
        for kind, digests in _resource_digests(report).items():
            entries = resources(catalog)[kind]
            for name in changed(self.store.fingerprints(kind), digests):
                problems.append(resource_changed(entries[name]))
        credentials = fingerprints(report.credentials, self.key)
        for name in changed(self.store.fingerprints("credential"), credentials):
            problems.append(credential_changed(catalog.credentials[name]))
        secrets = secret_fingerprints(report.secrets, self.key)
        for name in changed(self.store.fingerprints("secret"), secrets):
            problems.append(secret_changed(catalog.secrets[name]))
        return problems

    # -- devices -------------------------------------------------------------------------------

    def devices(self) -> list[str]:
        return sorted(self.applied.fleet) if self.applied else []

    def forget_plans(self) -> None:
        """Forget what this process stored of plans: another leader may have stored others
        since (called on taking up leadership)."""
        self._planned.clear()

    def reconcile(self, device: str) -> list[Action]:
        """Plan one device (see `reconcile_many`)."""
        return self.reconcile_many([device]).get(device, [])

    def reconcile_many(self, devices: Sequence[str]) -> dict[str, list[Action]]:
        """Plan devices from their desired and observed state; store their statuses and the
        events of new actions. A few queries and one transaction for the lot: planning is
        pure, the database round trips were what cost (18 ms a device, one at a time). A
        device whose plan and statuses are those it had costs no write."""
        applied = self.applied
        if applied is None or not devices:
            return {}
        generations = self.store.replan_generations(devices)
        reported = self.store.observed_of(devices)
        last = self.store.last_attempt()
        rejected = last.sha if last is not None and not last.valid else None
        plans: list[PlannedDevice] = []
        found: dict[str, list[Action]] = {}
        digests: dict[str, bytes] = {}
        at = self.now()
        for device in devices:
            desired = applied.fleet.get(device, {})
            report = reported.get(device)
            observed, errors = observed_releases(report) if report else ({}, {})
            if report is not None and self.rollouts.records:
                seen = self.rollouts.seen.get(device, at.timestamp())
                for want in desired.values():
                    self.rollouts.observe(device, report, want, seen)
            actions = found[device] = plan_device(desired, observed)
            statuses = [
                deployment_status(
                    device,
                    want,
                    observed.get(application, []) if report else None,
                    actions,
                    applied.sha,
                    rejected=rejected,
                    error=errors.get(want.deployment),
                )
                for application, want in desired.items()
            ]
            events = []
            known = self._planned.get(device, b"")
            acted = _digest(actions)  # new actions are stored as events
            if acted != known[_DIGEST:]:
                events = [
                    EventIn(at, device, a.action, a.reason, a.deployment, applied.sha)
                    for a in actions
                ]
            digest = digests[device] = _digest(statuses) + acted
            generation = generations.get(device)
            if events or generation is not None or known[:_DIGEST] != digest[:_DIGEST]:
                plans.append(PlannedDevice(device, statuses, events, generation))
        self.store.put_plans(plans)
        self._planned.update(digests)
        self._unreleased += len(devices)
        if self._unreleased >= RELEASE_EVERY:
            plans.clear()  # the statuses planned: this batch's largest buffers
            release_free_memory()
            self._unreleased = 0
        return found

    # -- the device API ------------------------------------------------------------------------

    def document(self, device: str) -> bytes | None:
        """What `device` should run, as the canonical JSON it is served as, with pull
        credentials only for images it has not reported; None when the applied revision has
        no such device. Built from parts shared across devices: a join, not an encoding."""
        with self._state:
            applied, projection = self.applied, self.projection
            revision = self._revisions.get(device, applied.sha) if applied else ""
        if applied is None or projection is None or device not in applied.fleet:
            return None
        return projection.body(device, self.images_present(device), revision)

    def document_revision(self, device: str) -> str:
        """The revision a device's document names: the commit that last changed what the
        device should run, so a commit changes the documents (and ETags) of the devices it
        touches and no other (the applied revision for a store older than this record)."""
        assert self.applied is not None
        return self._revisions.get(device, self.applied.sha)

    def ingest(self, report: wire.StatusReport) -> int:
        """Store one agent's report (see `ingest_many`); raises what its result holds."""
        (result,) = self.ingest_many([report])
        if isinstance(result, Exception):
            raise result
        return result.last_seq

    def ingest_many(self, reports: Sequence[wire.StatusReport]) -> list[Ingested | Exception]:
        """See `_ingest_run`: reports are stored in runs where each device appears once, so
        each is compared with the state its device's previous report left."""
        results: list[Ingested | Exception] = []
        run: list[wire.StatusReport] = []
        for report in reports:
            if any(r.device == report.device for r in run):
                results.extend(self._ingest_run(run))
                run = []
            run.append(report)
        results.extend(self._ingest_run(run))
        return results

    def _ingest_run(self, reports: Sequence[wire.StatusReport]) -> list[Ingested | Exception]:
        """Store agents' reports in one transaction: each one's observed state replaces the
        last — unless it is unchanged, the common case of a converged device, which costs an
        append of its events and nothing else — and its events are stored once per sequence
        number of its journal (a retried report adds nothing). Per report, in order: what was
        stored (the highest sequence number of its journal, 0 before any; whether its
        observed state changed, so the device is re-planned), or InvalidReport (a bad event
        time) or SequenceConflict (a number that names another event), with nothing of that
        report stored."""
        now = self.now()
        results: list[Ingested | Exception | None] = []
        items: list[ReportToStore] = []
        self._read_observed({r.device for r in reports} - self._observed.keys())
        for report in reports:
            device = report.device
            try:
                events = [
                    (e.seq, EventIn(e.at, device, e.kind, e.message, e.deployment, report.revision))
                    for e in checked_events(report)
                ]
            except (InvalidReport, SequenceConflict) as refused:
                results.append(refused)
                continue
            reset = None
            if report.epoch is not None and self._journals.get(device) != report.epoch:
                message = (  # recorded by the store if this journal is a new one
                    f"the agent's event journal started again (epoch {report.epoch}): "
                    "its event numbers count from 1 anew"
                )
                reset = EventIn(now, device, "journal-reset", message, revision=report.revision)
            # its events are stored apart, its facts too: they never make a device be planned
            observed = msgspec.structs.replace(report, events=[], facts=None)
            digest = _digest(observed)
            changed = self._observed.get(device) != digest
            facts = facts_digest = None
            if report.facts is not None:
                facts_digest = _digest(report.facts)
                if self._facts.get(device) != facts_digest:
                    facts = report.facts
            items.append(
                ReportToStore(observed, events, reset, changed, digest, facts, facts_digest)
            )
            results.append(None)
        for item in items:
            self.images_present(item.report.device)  # what its document was made with
        stored = iter(self.store.put_reports([item.as_store() for item in items], now))
        if self.rollouts.records:  # only then does a leader judge whether devices are offline
            self._touch([i.report.device for i in items if not i.changed], now)
        out: list[Ingested | Exception] = []
        pending = iter(items)
        for result in results:
            if result is not None:
                out.append(result)
                continue
            item, last = next(pending), next(stored)
            if isinstance(last, Exception):
                out.append(last)
                continue
            self._stored_report(item)
            out.append(Ingested(last or 0, item.changed))
        return out

    # -- rollouts ------------------------------------------------------------------------------

    def step_rollouts(self, refresh: bool = False) -> list[str]:
        """The leader's step of the rollouts a report had news for (every rollout with
        `refresh`, the periodic tick that also reads when each device last reported): the
        devices moved now get their new documents, stored with the rollouts' records in one
        transaction. The devices whose documents changed, to plan again."""
        applied, base, projection = self.applied, self._base, self.projection
        if applied is None or base is None or projection is None or not self.rollouts.records:
            return []
        at = self.now()
        catalog = applied.report.catalog
        if refresh:
            self._refresh_rollouts(base)
        only = None if refresh else set(self.rollouts.dirty)
        if only is not None and not only:
            return []
        self.rollouts.dirty.difference_update(only or self.rollouts.records)
        rollouts = self.rollouts.copy()
        changed_records, events = rollouts.advance(catalog, base, at.timestamp(), only=only)
        over = rollouts.finished(base)
        if not changed_records and not over and not events:
            return []
        fleet = rollouts.fleet(base, catalog)
        devices = _differ(applied.fleet, fleet)
        moved = Applied(applied.sha, applied.report, fleet)
        carried = projection.carry(moved)
        # a document a step changes names the applied revision, whose rollout changed it
        documents = {d: carried.stored(d, applied.sha) for d in devices if d in fleet}
        self.store.step_rollouts(
            _changed_records(self.rollouts, rollouts, over),
            at,
            documents=documents,
            events=_rollout_events(events, at, applied.sha),
            term=self.term,
        )
        with self._state:
            self.applied, self.projection, self.rollouts = moved, carried, rollouts
            self._revisions.update(dict.fromkeys(documents, applied.sha))
        self._notify(devices)
        return devices

    def _refresh_rollouts(self, base: Fleet) -> None:
        """When each targeted device last reported (the store's time, which replicas keep
        current), and what moved devices unknown to this process reported since their move
        (after a restart, or a new leader)."""
        rollouts = self.rollouts
        names = set(rollouts.records)
        apps = {r.application: r.deployment for r in rollouts.records.values()}
        targets = {
            d
            for d, wanted in base.items()
            if any(w.deployment in names for a, w in wanted.items() if apps.get(a) == w.deployment)
        }
        for device, seen in self.store.seen_at(targets).items():
            stamp = seen.timestamp()
            if stamp > rollouts.seen.get(device, 0.0):
                rollouts.seen[device] = stamp
        unknown = {
            d
            for name, r in rollouts.records.items()
            for d in r.state.moved
            if (name, d) not in rollouts.reported
        }
        for device, report in self.store.observed_of(unknown).items():
            for want in base.get(device, {}).values():
                rollouts.observe(device, report, want, rollouts.seen.get(device, 0.0))

    def _touch(self, devices: Sequence[str], at: datetime) -> None:
        """Move on the stored report time of devices whose report changed nothing, at most
        once every TOUCH_EVERY seconds each: a leader on another replica judges from it
        whether a device is offline."""
        stamp = at.timestamp()
        due = [d for d in devices if stamp - self._touched.get(d, 0.0) >= TOUCH_EVERY]
        if due:
            self.store.touch(due, at)
            self._touched.update(dict.fromkeys(due, stamp))

    def _read_observed(self, devices: set[str]) -> None:
        """The digests of what `devices` reported last, read from the store once (after a
        start, or a device new to this replica), so a device that reports what it reported
        before the restart is not planned again."""
        for device, observed in self.store.observed_of(devices).items():
            self._observed.setdefault(device, _digest(observed))

    def _stored_report(self, item: ReportToStore) -> None:
        """Remember what a stored report says; wake the device's poll if its credentials
        change with it."""
        report = item.report
        device = report.device
        self._observed[device] = item.digest
        if item.facts_digest is not None:
            self._facts[device] = item.facts_digest
        self.rollouts.seen[device] = self.now().timestamp()
        if report.epoch is not None:
            self._journals[device] = report.epoch
        with self._state:
            before = self._pending_auth(device)
            self._present[device] = frozenset(report.images)
            after = self._pending_auth(device)
        if after != before:
            self._notify([device])  # its document gains or loses registry credentials

    def known_images(self, device: str) -> frozenset[str] | None:
        """The images `device` last reported, when they are in memory (no database read)."""
        return self._present.get(device)

    def images_present(self, device: str) -> frozenset[str]:
        """The images `device` last reported: kept in memory, so a poll reads no database."""
        present = self._present.get(device)
        if present is None:
            reported = self.store.get_observed(device)
            found = frozenset(reported[0].images) if reported else frozenset()
            with self._state:  # a report stored meanwhile wins over what was read before it
                present = self._present.setdefault(device, found)
        return present

    def _pending_auth(self, device: str) -> set[str]:
        """The images whose credentials the device's document carries now (under the lock,
        with the device's images in memory)."""
        if self.applied is None:
            return set()
        return set(pull_credentials(self.applied, device)) - self._present.get(device, frozenset())

    def _notify(self, devices: Sequence[str] | None) -> None:
        for listener in self.listeners:
            listener(devices)


def _differ(before: Fleet, after: Fleet) -> list[str]:
    """The devices whose desired state differs between two fleets (gained, lost or changed):
    most are the same object in both, and cost an identity check."""
    return sorted(
        d
        for d in before.keys() | after.keys()
        if before.get(d) is not after.get(d) and before.get(d) != after.get(d)
    )


def _rollout_events(
    events: Iterable[RolloutEvent | tuple[str, RolloutEvent]], at: datetime, sha: str
) -> list[EventIn]:
    found = []
    for item in events:
        name, event = item if isinstance(item, tuple) else (None, item)
        wave = f"wave {event.wave}: " if event.wave else ""
        message = f"rollout of {name}: {wave}{event.message}"
        found.append(EventIn(at, None, f"rollout-{event.kind}", message, name, sha))
    return found


def _changed_records(
    before: Rollouts, after: Rollouts, over: Iterable[str]
) -> dict[str, JSONObject | None]:
    """What the store must write of the rollouts: changed records, and None for those over."""
    records: dict[str, JSONObject | None] = {
        name: encode(record)
        for name, record in after.records.items()
        if before.records.get(name) != record
    }
    records.update(dict.fromkeys(set(before.records) - set(after.records), None))
    records.update(dict.fromkeys(over, None))
    return records


def _moved(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """The devices whose document revision differs (gained, lost or changed)."""
    return {d for d in before.keys() | after.keys() if before.get(d) != after.get(d)}


def _shared_strings(revisions: dict[str, str]) -> dict[str, str]:
    """Revisions as read from the store, each device name and commit one object (the catalog's
    names are interned): rows read give a new string each, about 140 bytes a device."""
    return {sys.intern(device): sys.intern(sha) for device, sha in revisions.items()}


def _resource_digests(report: Report) -> dict[ResourceKind, dict[str, str]]:
    return {
        kind: {name: spec_digest(entry.manifest) for name, entry in entries.items()}
        for kind, entries in resources(report.catalog).items()
    }


def _release_digests(report: Report) -> dict[str, str]:
    return {
        f"{r.manifest.spec.application}@{r.manifest.spec.version}": spec_digest(r.manifest)
        for r in report.catalog.releases.values()
    }
