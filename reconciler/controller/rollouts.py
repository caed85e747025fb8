"""The rollouts in progress, as the controller keeps them between commits and reports.

The steps themselves are pure (`reconciler.core.rollout`); this keeps their records, what each
moved device last reported of its move, and when each device was last heard from, and turns
them into the desired fleet the documents are made from: the deployment's release for moved
devices, their origin release for the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from reconciler import wire
from reconciler.core import rollout as core
from reconciler.core.desired import DesiredDeployment, spec_digest
from reconciler.core.document import Fleet
from reconciler.core.rollout import OFFLINE_AFTER, Active, Origin, Outcome, RolloutEvent, Wave
from reconciler.core.rollout_status import decode, encode
from reconciler.manifests.catalog import Catalog

Reported = tuple[Outcome, str, float]  # what a report said of a move, and when it came


class Rollouts:
    """Every rollout in progress, by deployment."""

    def __init__(
        self, records: Mapping[str, Active] | None = None, offline_after: float = OFFLINE_AFTER
    ) -> None:
        self.records: dict[str, Active] = dict(records or {})
        self.offline_after = offline_after
        self.reported: dict[tuple[str, str], Reported] = {}  # (deployment, device) → ...
        self.seen: dict[str, float] = {}  # device → when it last reported
        self._waves: dict[tuple[int, str], tuple[Wave, ...]] = {}
        self.dirty: set[str] = set()  # rollouts a report has news for since their last step
        # the last fleet made, and its held deployments: see `core.held`
        self._last: Fleet | None = None
        self._memo: dict[tuple[int, str, str | None], tuple[object, object]] = {}

    def copy(self) -> Rollouts:
        """Another set of records over the same reports: changed, then kept once stored."""
        other = Rollouts(self.records, self.offline_after)
        other.reported, other.seen, other._waves = self.reported, self.seen, self._waves
        other.dirty, other._last, other._memo = self.dirty, self._last, self._memo
        return other

    # -- the fleet ---------------------------------------------------------------------------

    def fleet(self, base: Fleet, catalog: Catalog) -> dict[str, Mapping[str, DesiredDeployment]]:
        """`base` (the repository's desired fleet) with every unmoved device held back."""
        digests: dict[tuple[str, str], str | None] = {}

        def digest(application: str, release: str) -> str | None:
            key = (application, release)
            if key not in digests:
                found = catalog.release(application, release)
                digests[key] = spec_digest(found.manifest) if found else None
            return digests[key]

        if len(self._memo) > 4096:  # the origins of rollouts long gone
            self._memo.clear()
        fleet = core.held(base, self.records.values(), digest, self._last, self._memo)
        self._last = fleet
        return fleet

    def targets(self, deployment: str, catalog: Catalog) -> dict[str, Mapping[str, str]]:
        entry = catalog.deployments.get(deployment)
        if entry is None:
            return {}
        return {d.name: d.manifest.metadata.labels for d in catalog.targets(entry.manifest)}

    def waves(self, deployment: str, catalog: Catalog) -> tuple[Wave, ...]:
        """The deployment's waves at this catalog (computed once per catalog)."""
        key = (id(catalog), deployment)
        found = self._waves.get(key)
        if found is None:
            if len(self._waves) > 64:
                self._waves.clear()
            entry = catalog.deployments[deployment]
            targets = self.targets(deployment, catalog)
            found = self._waves[key] = core.waves(entry.manifest.spec.rollout, targets)
        return found

    # -- commits -----------------------------------------------------------------------------

    def start(
        self, old: Catalog | None, new: Catalog, current: Fleet, sha: str, now: float
    ) -> list[RolloutEvent | tuple[str, RolloutEvent]]:
        """Take up a commit: the rollouts it starts (each from where its devices are now, in
        `current`, the fleet as served), superseding any of the same deployment; and forget
        those whose deployment is gone, changed application or lost its rollout."""
        events: list[RolloutEvent | tuple[str, RolloutEvent]] = []
        for name, record in list(self.records.items()):
            entry = new.deployments.get(name)
            spec = entry.manifest.spec if entry else None
            if spec is None or spec.rollout is None or spec.application != record.application:
                del self.records[name]
                why = "its deployment is gone" if spec is None else "it no longer has a rollout"
                events.append((name, RolloutEvent("complete", None, f"stopped: {why}")))
        if old is None:
            return events
        for start in core.started(old, new):
            was = old.deployments[start.deployment].manifest.spec
            source = Origin(was.release, was.redeploy)
            spec = new.deployments[start.deployment].manifest.spec
            target = Origin(spec.release, spec.redeploy)
            origins: dict[str, Origin] = {}
            for device in self.targets(start.deployment, new):
                want = current.get(device, {}).get(start.application)
                if want is not None and want.deployment == start.deployment:
                    here = Origin(want.release, want.redeploy)
                    if here != source:
                        origins[device] = here
            if start.deployment in self.records:
                events.append(
                    (start.deployment, RolloutEvent("complete", None, "superseded by a commit"))
                )
            first = core.begin(start.waves)
            self.records[start.deployment] = Active(
                start.deployment,
                start.application,
                sha,
                now,
                source,
                target,
                first.state,
                origins,
                wave_started_at=now,
            )
            events.extend((start.deployment, e) for e in first.events)
        return events

    # -- steps -------------------------------------------------------------------------------

    def observe(self, device: str, report: wire.StatusReport, want: DesiredDeployment | None,
                at: float) -> None:  # fmt: skip
        """Note what a device's report says of the rollout that moved it (if one did)."""
        if want is None:
            return
        record = self.records.get(want.deployment)
        if record is None or device not in record.state.moved:
            return
        mine = [r for r in report.releases if r.deployment == want.deployment]
        said = core.reported_outcome(
            record.target.release, record.target.redeploy, mine, running=want.state == "Running"
        )
        outcome, reason = said or ("Progressing", "moving to the new release")
        key = (want.deployment, device)
        if self.reported.get(key, (None,))[0] != outcome:
            self.dirty.add(want.deployment)
        self.reported[key] = (outcome, reason, at)

    def advance(
        self, catalog: Catalog, base: Fleet, now: float, *, only: Iterable[str] | None = None
    ) -> tuple[dict[str, Active], list[tuple[str, RolloutEvent]]]:
        """One step of each rollout (of those named in `only`): the records that changed,
        and the events of the step."""
        changed: dict[str, Active] = {}
        events: list[tuple[str, RolloutEvent]] = []
        for name in sorted(self.records if only is None else set(only) & set(self.records)):
            record = self.records[name]
            spec = catalog.deployments[name].manifest.spec
            assert spec.rollout is not None  # `start` forgot those without one
            plan = self.waves(name, catalog)
            deadline = float(spec.readiness.progress_deadline_seconds)
            outcomes: dict[str, Outcome] = {}
            reasons: dict[str, str] = {}
            for wave in plan:
                for device in wave.devices:
                    outcome, reason = core.judged(
                        record,
                        device,
                        self.seen.get(device),
                        self.reported.get((name, device)),
                        deadline,
                        now,
                        self.offline_after,
                    )
                    outcomes[device] = outcome
                    if outcome == "Failed":
                        reasons[device] = reason
            taken = core.step(spec.rollout, plan, outcomes, record.state, now)
            after = _after(record, taken, reasons, now)
            after = replace(after, progress=core.progress(plan, outcomes, taken.state))
            if after != record:
                self.records[name] = changed[name] = after
            events.extend((name, e) for e in taken.events)
        return changed, events

    def finished(self, base: Fleet) -> list[str]:
        """Complete rollouts that hold no device back any more: they are over."""
        over = []
        for name, record in self.records.items():
            if record.state.phase != "Complete":
                continue
            if all(
                device in record.state.moved
                for device, wanted in base.items()
                if (w := wanted.get(record.application)) is not None and w.deployment == name
            ):
                over.append(name)
        for name in over:
            del self.records[name]
        return over

    def outcomes(
        self, name: str, catalog: Catalog, now: float
    ) -> dict[str, tuple[str, Outcome, str]]:
        """device → (its wave, its outcome, why), for `hedgerow rollout status`."""
        record = self.records[name]
        spec = catalog.deployments[name].manifest.spec
        deadline = float(spec.readiness.progress_deadline_seconds)
        found: dict[str, tuple[str, Outcome, str]] = {}
        for wave in self.waves(name, catalog):
            for device in wave.devices:
                outcome, reason = core.judged(
                    record, device, self.seen.get(device), self.reported.get((name, device)),
                    deadline, now, self.offline_after,
                )  # fmt: skip
                if device in record.state.failed:
                    outcome, reason = "Failed", record.reasons.get(device, reason)
                found[device] = (wave.name, outcome, reason)
        return found


def _after(record: Active, taken: core.Step, reasons: Mapping[str, str], now: float) -> Active:
    """The record after a step: moves stamped with their time, reverts forgotten, the
    reasons of failed devices kept."""
    moved_at = {d: t for d, t in record.moved_at.items() if d in taken.state.moved}
    for device in taken.move:
        moved_at[device] = now
    kept = {d: r for d, r in {**record.reasons, **reasons}.items() if d in taken.state.failed}
    wave_started = record.wave_started_at
    if taken.state.wave != record.state.wave:
        wave_started = now
    return replace(
        record, state=taken.state, moved_at=moved_at, reasons=kept, wave_started_at=wave_started
    )


__all__ = ["Rollouts", "decode", "encode"]
