"""Deployment status: conditions computed from desired, observed and the plan (pure).

Like Kubernetes conditions, each has a type, a status, a machine-readable reason, a message for
people, and the revision it refers to, so a reader can tell stale from current. They are typed
values (msgspec Structs, so the store and the API encode them without a hand-written mapping);
code asks `status.condition(ConditionType.READY)`, never a dict by string key.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal

import msgspec

from reconciler.core.desired import DesiredDeployment, State
from reconciler.core.plan import Action, ObservedRelease


class ConditionType(StrEnum):
    SYNCED = "Synced"  # the applied revision is the branch's last valid commit
    READY = "Ready"  # the device runs the desired release in the desired state
    PROGRESSING = "Progressing"  # actions are pending on the device
    DEGRADED = "Degraded"  # the agent reported an error for the deployment


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    type: ConditionType
    status: Literal["True", "False"]  # Kubernetes' spelling, as tools expect
    reason: str
    message: str
    revision: str

    @property
    def true(self) -> bool:
        return self.status == "True"


class DeploymentStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The status of one deployment on one device."""

    deployment: str
    device: str
    application: str
    desired_release: str
    observed_release: str | None
    desired_state: State
    observed_state: State | None  # None: the device has never reported
    revision: str
    conditions: tuple[Condition, ...]

    def condition(self, kind: ConditionType) -> Condition:
        for found in self.conditions:
            if found.type is kind:
                return found
        raise KeyError(kind.value)

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = msgspec.to_builtins(self)
        return encoded

    @classmethod
    def from_json(cls, value: Any) -> DeploymentStatus:
        """Decode what `to_json` gave; raises msgspec.ValidationError on anything else."""
        return msgspec.convert(value, cls)


def condition(
    kind: ConditionType, status: bool, reason: str, message: str, revision: str
) -> Condition:
    return Condition(
        type=kind,
        status="True" if status else "False",
        reason=reason,
        message=message,
        revision=revision,
    )


def deployment_status(
    device: str,
    want: DesiredDeployment,
    releases: Sequence[ObservedRelease] | None,
    actions: Sequence[Action],
    revision: str,
    *,
    rejected: str | None = None,
    error: str | None = None,
) -> DeploymentStatus:
    """The status of one deployment on one device.

    `releases` is None when the device has never reported; `rejected` is the latest rejected
    commit when it is newer than `revision`; `error` is the agent's last error for it.
    """
    mine = [a for a in actions if a.application == want.application]
    current = next((r for r in releases or () if r.release == want.release), None)
    running = next((r for r in releases or () if r.running), None)
    if rejected is None:
        synced = condition(
            ConditionType.SYNCED, True, "Applied", f"revision {revision[:12]}", revision
        )
    else:
        synced = condition(
            ConditionType.SYNCED,
            False,
            "RevisionRejected",
            f"commit {rejected[:12]} was rejected; revision {revision[:12]} stays in force",
            revision,
        )
    if releases is None:
        ready = condition(
            ConditionType.READY, False, "NotReported", "the device has not reported", revision
        )
    elif mine:
        ready = condition(ConditionType.READY, False, "Pending", "waiting for the device", revision)
    else:
        reason = "Running" if want.state == "Running" else "Stopped"
        ready = condition(
            ConditionType.READY, True, reason, f"release {want.release} {reason}", revision
        )
    if mine:
        progressing = condition(
            ConditionType.PROGRESSING,
            True,
            "+".join(a.action.capitalize() for a in mine),
            "; ".join(a.reason for a in mine),
            revision,
        )
    else:
        progressing = condition(
            ConditionType.PROGRESSING, False, "Settled", "nothing to do", revision
        )
    if error:
        degraded = condition(ConditionType.DEGRADED, True, "Error", error, revision)
    else:
        degraded = condition(
            ConditionType.DEGRADED, False, "Healthy", "no error reported", revision
        )
    shown = running or current
    return DeploymentStatus(
        deployment=want.deployment,
        device=device,
        application=want.application,
        desired_release=want.release,
        observed_release=shown.release if shown else None,
        desired_state=want.state,
        observed_state=None if releases is None else ("Running" if running else "Stopped"),
        revision=revision,
        conditions=(synced, ready, progressing, degraded),
    )
