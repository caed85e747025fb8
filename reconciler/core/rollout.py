"""Rollouts: a new release moved over a deployment's devices wave by wave (pure).

A rollout starts when a commit changes the release (or redeploy token) of a deployment that
has a `rollout`. Its waves are a partition of the targeted devices, computed from the
repository alone, so that `hedgerow plan` shows the same waves the controller will use. Each
`step` takes the rollout's state, the waves and every targeted device's outcome, and says which
devices to move to the new release now, which to give the old one back, and what happened:

- at most `maxInFlight` moved devices are Progressing at once;
- a wave is done when each of its devices Succeeded, Failed or is Offline; the next starts
  `bakeSeconds` after that;
- once more than `maxFailures` devices Failed, nothing more moves (Halted); with `onFailure:
  Rollback` every moved device gets the old release back (RolledBack);
- `paused` moves nothing new; raising `maxFailures` above the failures resumes a halted
  rollout;
- an Offline device neither holds a slot nor blocks its wave; once back, it is moved like
  any other device of a wave already reached. A device that starts being targeted falls in a
  wave like the others: the old release before its wave is reached, the new one after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from reconciler.manifests.catalog import Catalog
from reconciler.manifests.model.deployment import Rollout
from reconciler.manifests.model.fields import amount_of

Outcome = Literal["Pending", "Progressing", "Succeeded", "Failed", "Offline"]
OUTCOMES: tuple[Outcome, ...] = ("Pending", "Progressing", "Succeeded", "Failed", "Offline")
Phase = Literal["Progressing", "Paused", "Halted", "RolledBack", "Complete"]
PHASES: tuple[Phase, ...] = ("Progressing", "Paused", "Halted", "RolledBack", "Complete")
EventKind = Literal[
    "wave-started", "wave-done", "halted", "rolled-back", "paused", "resumed", "complete"
]
REST = "(rest)"  # the wave of devices no wave of the spec takes: not a DNS label, so unique


@dataclass(frozen=True, slots=True)
class Wave:
    name: str
    devices: tuple[str, ...]  # in the order they move: by the stable hash of their names


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    kind: EventKind
    wave: str | None
    message: str


@dataclass(frozen=True, slots=True)
class RolloutState:
    """What a rollout remembers between steps; the store keeps it."""

    phase: Phase = "Progressing"
    wave: int = 0  # the index of the furthest wave reached
    wave_done_at: float | None = None  # when the current wave was done (its bake began)
    moved: frozenset[str] = frozenset()  # devices whose document names the new release
    failed: frozenset[str] = frozenset()  # moved devices that Failed: they count for good


@dataclass(frozen=True, slots=True)
class Step:
    state: RolloutState
    move: tuple[str, ...] = ()  # to the new release, now
    revert: tuple[str, ...] = ()  # back to the old release, now
    events: tuple[RolloutEvent, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RolloutStart:
    """A rollout a commit starts: a deployment's devices moved from one release to another
    (the same one, for a new redeploy token), wave by wave."""

    deployment: str
    application: str
    from_release: str
    to_release: str
    rollout: Rollout
    waves: tuple[Wave, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "application": self.application,
            "from": self.from_release,
            "to": self.to_release,
            "waves": [{"name": w.name, "devices": list(w.devices)} for w in self.waves],
            "maxInFlight": self.rollout.max_in_flight,
            "maxFailures": self.rollout.max_failures,
            "onFailure": self.rollout.on_failure,
            "paused": self.rollout.paused,
        }


def started(old: Catalog, new: Catalog) -> list[RolloutStart]:
    """The rollouts a commit from `old` to `new` starts: each deployment with a rollout whose
    release or redeploy token changed. A new deployment has no old release to keep, and a
    change of state or a removal applies at once: neither is a rollout."""
    found = []
    for name, entry in sorted(new.deployments.items()):
        spec, before = entry.manifest.spec, old.deployments.get(name)
        if spec.rollout is None or before is None:
            continue
        was = before.manifest.spec
        if was.application != spec.application:
            continue
        if (was.release, was.redeploy) == (spec.release, spec.redeploy):
            continue
        targets = {d.name: d.manifest.metadata.labels for d in new.targets(entry.manifest)}
        plan = waves(spec.rollout, targets)
        found.append(
            RolloutStart(name, spec.application, was.release, spec.release, spec.rollout, plan)
        )
    return found


def stable_order(devices: Iterable[str]) -> list[str]:
    """Devices in the order of a hash of their names: the same on every machine and run,
    unlike Python's own `hash`, and spread evenly whatever the names' pattern."""
    return sorted(devices, key=lambda d: (hashlib.sha256(d.encode()).digest(), d))


def waves(rollout: Rollout | None, targets: Mapping[str, Mapping[str, str]]) -> tuple[Wave, ...]:
    """The targeted devices (name → labels) as waves, in order; a partition of them. A
    percent is of every targeted device, taken from those no earlier wave took; devices no
    wave takes form a last wave, REST."""
    total = len(targets)
    left = stable_order(targets)
    found: list[Wave] = []
    for spec in rollout.waves if rollout is not None else ():
        if spec.selector is not None:
            wanted = spec.selector.match_labels
            taken = [d for d in left if all(targets[d].get(k) == v for k, v in wanted.items())]
        elif spec.percent is not None:
            taken = left[: amount_of(f"{spec.percent}%", total)]
        else:
            taken = left
        chosen = set(taken)
        left = [d for d in left if d not in chosen]
        found.append(Wave(spec.name, tuple(taken)))
    if left or not found:
        found.append(Wave(REST, tuple(left)))
    return tuple(found)


def limits(rollout: Rollout, total: int) -> tuple[int, int]:
    """(devices in flight at most, failures allowed) for `total` targeted devices: in flight
    is at least 1, or the rollout could never move."""
    return max(1, amount_of(rollout.max_in_flight, total)), amount_of(rollout.max_failures, total)


def begin(plan: Sequence[Wave]) -> Step:
    """A new rollout, before its first step: nothing moved, its first wave started."""
    return Step(RolloutState(), events=(_started(plan[0]),))


# A wave is done when each of its devices is in one of these: Failed and Succeeded are only
# ever outcomes of moved devices; Offline ones do not hold it.
_SETTLED: frozenset[Outcome] = frozenset({"Succeeded", "Failed", "Offline"})


def step(
    rollout: Rollout,
    plan: Sequence[Wave],
    outcomes: Mapping[str, Outcome],
    state: RolloutState,
    now: float,
) -> Step:
    """The next step of a rollout. `outcomes` holds every targeted device's; a device it lacks
    is Pending (not moved) or Progressing (moved)."""
    if state.phase == "RolledBack":
        return Step(state)
    targeted = {d for wave in plan for d in wave.devices}
    moved = state.moved & targeted  # a device no longer targeted is no longer the rollout's

    def outcome(device: str) -> Outcome:
        found = outcomes.get(device)
        if found is None:
            return "Progressing" if device in moved else "Pending"
        if device not in moved and found != "Offline":
            return "Pending"
        return found

    in_flight_limit, allowed = limits(rollout, len(targeted))
    # A device that failed stays failed, even offline or back on its old release: only a
    # larger budget (a commit) resumes a halted rollout.
    failed = (state.failed & targeted) | {d for d in moved if outcome(d) == "Failed"}
    events: list[RolloutEvent] = []
    phase = state.phase
    if len(failed) > allowed:
        if phase != "Halted":
            events.append(_halted(sorted(failed), allowed))
        if rollout.on_failure == "Rollback":
            events.append(
                RolloutEvent("rolled-back", None, f"{len(moved)} device(s) given the old release")
            )
            gone = RolloutState("RolledBack", state.wave, state.wave_done_at, frozenset(), failed)
            return Step(gone, revert=tuple(stable_order(moved)), events=tuple(events))
        halted = replace(state, phase="Halted", moved=moved, failed=failed)
        return Step(halted, events=tuple(events))
    if phase == "Halted":
        events.append(RolloutEvent("resumed", None, f"{len(failed)} failure(s), {allowed} allowed"))
        phase = "Progressing"
    if rollout.paused:
        if phase != "Paused":
            events.append(RolloutEvent("paused", None, "paused by the deployment's rollout"))
        paused = replace(state, phase="Paused", moved=moved, failed=failed)
        return Step(paused, events=tuple(events))
    if phase == "Paused":
        events.append(RolloutEvent("resumed", None, "unpaused by the deployment's rollout"))
        phase = "Progressing"

    index, done_at = min(state.wave, len(plan) - 1), state.wave_done_at
    # Advance past every wave that is done (and baked), so an empty wave or a wave of
    # offline devices never holds the rollout.
    while phase != "Complete":
        wave = plan[index]
        if not all(d in failed or outcome(d) in _SETTLED for d in wave.devices):
            break
        if done_at is None:
            done_at = now
            events.append(RolloutEvent("wave-done", wave.name, _counts(wave, outcome)))
        if now < done_at + rollout.bake_seconds:
            break
        if index == len(plan) - 1:
            phase = "Complete"
            events.append(RolloutEvent("complete", None, f"{len(targeted)} device(s)"))
            break
        index, done_at = index + 1, None
        events.append(_started(plan[index]))

    in_flight = sum(1 for d in moved if outcome(d) == "Progressing")
    room = max(0, in_flight_limit - in_flight)
    move: list[str] = []
    for wave in plan[: index + 1]:
        for device in wave.devices:
            if len(move) >= room:
                break
            if device not in moved and outcome(device) == "Pending":
                move.append(device)
    after = RolloutState(phase, index, done_at, moved | frozenset(move), failed)
    return Step(after, move=tuple(move), events=tuple(events))


def _started(wave: Wave) -> RolloutEvent:
    return RolloutEvent("wave-started", wave.name, f"{len(wave.devices)} device(s)")


def _halted(failed: Sequence[str], allowed: int) -> RolloutEvent:
    shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
    return RolloutEvent(
        "halted", None, f"{len(failed)} device(s) failed, {allowed} allowed: {shown}"
    )


def _counts(wave: Wave, outcome: Callable[[str], Outcome]) -> str:
    tally: dict[str, int] = {}
    for device in wave.devices:
        kind = outcome(device)
        tally[kind] = tally.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(tally.items())) or "no device"


# -- a rollout in progress: what the controller keeps, and how it holds devices back ------------

OFFLINE_AFTER = 90.0  # seconds without a report: three of the agent's poll intervals
DEADLINE_MARGIN = 60.0  # a moved device not Ready within its deadline and this: Failed


@dataclass(frozen=True, slots=True)
class Origin:
    """A release as a deployment names it: the version and the redeploy token."""

    release: str
    redeploy: str | None = None


@dataclass(frozen=True, slots=True)
class Active:
    """A rollout the store keeps: from what to what, where it stands, and since when each
    moved device has had the new release (times in seconds since the epoch)."""

    deployment: str
    application: str
    revision: str  # the commit that started it
    started_at: float
    source: Origin  # what devices not moved yet keep
    target: Origin
    state: RolloutState = RolloutState()
    # devices held at another release than `source`: a superseded rollout's unmoved ones
    origins: dict[str, Origin] = field(default_factory=dict)
    moved_at: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # failed device → why
    wave_started_at: float | None = None
    # wave → outcome → devices, at the last step: what `hedgerow rollout status` shows
    progress: dict[str, dict[str, int]] = field(default_factory=dict)

    def origin(self, device: str) -> Origin:
        return self.origins.get(device, self.source)


def held(
    base: Mapping[str, Mapping[str, Any]],
    actives: Iterable[Active],
    digest: Callable[[str, str], str | None],
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    memo: dict[tuple[int, str, str | None], tuple[Any, Any]] | None = None,
) -> dict[str, Mapping[str, Any]]:
    """The desired fleet with each rollout's unmoved devices held at their origin release
    (`base` maps device → application → DesiredDeployment). `digest(application, release)`
    is the release's content digest, None when the repository no longer has it: such a
    device cannot be held, and gets the deployment's release at once. Only the devices held
    are copied: a fleet of 100,000 costs a dictionary copy.

    A rollout steps after every batch of reports, so the result of the last step can be
    passed back: `previous` (the last fleet) and `memo` (held deployments, by the base's one
    and the origin) make an unchanged device's entry the very object it was, which the
    callers compare by identity first, instead of a new, equal one."""
    memo = {} if memo is None else memo
    fleet = dict(base)
    for rollout in actives:
        moved = rollout.state.moved
        for device, wanted in base.items():
            want = wanted.get(rollout.application)
            if want is None or want.deployment != rollout.deployment or device in moved:
                continue
            origin = rollout.origin(device)
            key = (id(want), origin.release, origin.redeploy)
            known = memo.get(key)
            if known is not None and known[0] is want:
                changed = known[1]
            else:
                found = digest(rollout.application, origin.release)
                if found is None:
                    continue
                changed = replace(
                    want, release=origin.release, redeploy=origin.redeploy, digest=found
                )
                memo[key] = (want, changed)
            entry = {**fleet[device], rollout.application: changed}
            last = previous.get(device) if previous is not None else None
            if last is not None and _same(last, entry):
                fleet[device] = last
            else:
                fleet[device] = entry
    return fleet


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same deployments, object for object."""
    return a.keys() == b.keys() and all(a[k] is b[k] for k in a)


def reported_outcome(
    release: str, redeploy: str | None, releases: Iterable[Any], *, running: bool = True
) -> tuple[Outcome, str] | None:
    """What a device's report says of its move to `release`: Failed (the agent reports an
    error for the deployment: it switched back, or cannot pull or start), Succeeded (the
    release Ready; running, from an agent that does not judge readiness), or None (still
    Progressing). `releases` are the report's `ReleaseReport`s of the deployment."""
    for found in releases:
        if found.error:
            reason = found.degraded.reason if found.degraded is not None else found.error
            return "Failed", reason
    for found in releases:
        if (found.release, found.redeploy) != (release, redeploy) or not found.complete:
            continue
        if not running:
            return "Succeeded", "stopped as desired"
        if found.ready is True or (found.ready is None and found.running):
            return "Succeeded", "Ready"
    return None


def judged(
    rollout: Active,
    device: str,
    seen_at: float | None,
    reported: tuple[Outcome, str, float] | None,
    deadline: float,
    now: float,
    offline_after: float = OFFLINE_AFTER,
) -> tuple[Outcome, str]:
    """A targeted device's outcome: Offline after `offline_after` without a report; Pending
    until moved; then what its reports since the move say, and Failed once `deadline`
    seconds (its progress deadline) and DEADLINE_MARGIN have passed without Ready."""
    if seen_at is None or now - seen_at > offline_after:
        return "Offline", "no report for three poll intervals"
    moved_at = rollout.moved_at.get(device)
    if device not in rollout.state.moved or moved_at is None:
        return "Pending", "waiting for its wave"
    if reported is not None and reported[2] >= moved_at:
        return reported[0], reported[1]
    if now > moved_at + deadline + DEADLINE_MARGIN:
        return "Failed", f"not Ready within {deadline:g}s of its move"
    return "Progressing", "moving to the new release"


def progress(
    plan: Sequence[Wave], outcomes: Mapping[str, Outcome], state: RolloutState
) -> dict[str, dict[str, int]]:
    """Devices by wave and outcome after a step: a device moved by it is Progressing, and a
    device that failed stays Failed."""
    found: dict[str, dict[str, int]] = {}
    for wave in plan:
        tally: dict[str, int] = {}
        for device in wave.devices:
            kind = outcomes.get(device, "Pending")
            if device in state.failed:
                kind = "Failed"
            elif device in state.moved and kind == "Pending":
                kind = "Progressing"
            elif device not in state.moved and kind != "Offline":
                kind = "Pending"
            tally[kind] = tally.get(kind, 0) + 1
        found[wave.name] = dict(sorted(tally.items()))
    return found
