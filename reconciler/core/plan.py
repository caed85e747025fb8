"""The plan: desired, observed → ordered actions per device. Pure, and the most tested module.

Semantics (per device, per application):
- nothing on the device: `deploy` (create), then `start` when the state is Running;
- another release present: `upgrade` (download, then switch); the old release stays, stopped;
- the desired release present but another running: `upgrade` back to it (a switch);
- `redeploy` when asked (a new `redeploy` token), on drift (a container or resource of the
  release is missing) or when the release content differs from what was deployed;
- otherwise `start` or `stop` to reach the desired state;
- an application with no deployment any more: `delete` (every release of it on the device).
Deletes come first, so that resources such as host ports are freed before others are deployed.
`apply` gives the observed state that a successful plan leads to; planning again from it yields
no action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from reconciler.core.desired import DesiredDeployment, DesiredDevice

ActionKind = Literal["deploy", "start", "stop", "upgrade", "redeploy", "delete"]


@dataclass(frozen=True, slots=True)
class ObservedRelease:
    """A release of an application as a device's agent reports it."""

    application: str
    release: str
    deployment: str
    running: bool
    complete: bool = True  # every container, network and volume of the release exists
    redeploy: str | None = None  # the token it was last deployed with
    digest: str | None = None  # the release content it was deployed from, if known


ObservedDevice = Mapping[str, Sequence[ObservedRelease]]  # by application


@dataclass(frozen=True, slots=True)
class Action:
    action: ActionKind
    deployment: str
    application: str
    from_release: str | None
    to_release: str | None
    reason: str

    def to_json(self) -> dict[str, str | None]:
        return {
            "action": self.action,
            "deployment": self.deployment,
            "application": self.application,
            "from": self.from_release,
            "to": self.to_release,
            "reason": self.reason,
        }


def converged(desired: DesiredDevice) -> dict[str, list[ObservedRelease]]:
    """What a device reports once it runs `desired` exactly (the preview's starting point)."""
    return {
        app: [
            ObservedRelease(
                want.application,
                want.release,
                want.deployment,
                running=want.state == "Running",
                redeploy=want.redeploy,
                digest=want.digest,
            )
        ]
        for app, want in desired.items()
    }


def plan_device(desired: DesiredDevice, observed: ObservedDevice) -> list[Action]:
    """The actions that take one device from `observed` to `desired`, in the order to run them."""
    actions: list[Action] = []
    for application in sorted(set(observed) - set(desired)):
        releases = observed[application]
        if releases:
            current = _active(releases)
            actions.append(
                Action(
                    "delete",
                    current.deployment,
                    application,
                    current.release,
                    None,
                    "deployment removed from git",
                )
            )
    for application in sorted(desired):
        actions.extend(_plan_application(desired[application], observed.get(application, ())))
    return actions


def _plan_application(want: DesiredDeployment, releases: Sequence[ObservedRelease]) -> list[Action]:
    def act(kind: ActionKind, old: str | None, reason: str) -> Action:
        return Action(kind, want.deployment, want.application, old, want.release, reason)

    if not releases:
        deploy = act("deploy", None, "new deployment")
        if want.state == "Running":
            return [deploy, act("start", None, "desired state is Running")]
        return [deploy]
    same = next((r for r in releases if r.release == want.release), None)
    if same is None:
        old = _active(releases).release
        return [act("upgrade", old, f"release changed from {old} to {want.release}")]
    other = next((r for r in releases if r.release != want.release and r.running), None)
    if other is not None:
        return [act("upgrade", other.release, f"switch back from {other.release}")]
    if not same.complete:
        return [act("redeploy", same.release, "drift: part of the release is missing")]
    if same.redeploy != want.redeploy:
        return [act("redeploy", same.release, "redeploy requested")]
    if same.digest is not None and same.digest != want.digest:
        return [act("redeploy", same.release, "release content differs from the device")]
    if want.state == "Running" and not same.running:
        return [act("start", same.release, "desired state is Running")]
    if want.state == "Stopped" and same.running:
        return [act("stop", same.release, "desired state is Stopped")]
    return []


def _active(releases: Sequence[ObservedRelease]) -> ObservedRelease:
    """The release that stands for the application: the running one, else the last reported."""
    return next((r for r in releases if r.running), releases[-1])


def apply(
    desired: DesiredDevice, observed: ObservedDevice, actions: Sequence[Action]
) -> dict[str, list[ObservedRelease]]:
    """The observed state after every action succeeded: the model the agent must implement."""
    state = {app: list(releases) for app, releases in observed.items()}
    for action in actions:
        app = action.application
        if action.action == "delete":
            state.pop(app, None)
            continue
        want = desired[app]
        fresh = ObservedRelease(
            app, want.release, want.deployment, False, True, want.redeploy, want.digest
        )
        releases = state.setdefault(app, [])
        if action.action in ("deploy", "redeploy", "upgrade"):
            # deploy only creates; upgrade and redeploy also switch to the desired state
            running = action.action != "deploy" and want.state == "Running"
            others = [replace(r, running=False) for r in releases if r.release != want.release]
            state[app] = [*others, replace(fresh, running=running)]
        elif action.action in ("start", "stop"):
            state[app] = [
                replace(r, running=action.action == "start") if r.release == want.release else r
                for r in releases
            ]
    return state
