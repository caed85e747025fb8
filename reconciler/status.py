"""Deployment status: conditions computed from desired, observed and the plan (pure).

Like Kubernetes conditions, each has a type, a status, a machine-readable reason, a message for
people, and the revision it refers to, so a reader can tell stale from current.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reconciler.desired import DesiredDeployment
from reconciler.plan import Action, ObservedRelease

JSON = dict[str, Any]


def condition(kind: str, status: bool, reason: str, message: str, revision: str) -> JSON:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "revision": revision,
    }


def deployment_status(
    device: str,
    want: DesiredDeployment,
    releases: Sequence[ObservedRelease] | None,
    actions: Sequence[Action],
    revision: str,
    *,
    rejected: str | None = None,
    error: str | None = None,
) -> JSON:
    """The status of one deployment on one device.

    `releases` is None when the device has never reported; `rejected` is the latest rejected
    commit when it is newer than `revision`; `error` is the agent's last error for it.
    """
    mine = [a for a in actions if a.application == want.application]
    current = next((r for r in releases or () if r.release == want.release), None)
    running = next((r for r in releases or () if r.running), None)
    if rejected is None:
        synced = condition("Synced", True, "Applied", f"revision {revision[:12]}", revision)
    else:
        synced = condition(
            "Synced",
            False,
            "RevisionRejected",
            f"commit {rejected[:12]} was rejected; revision {revision[:12]} stays in force",
            revision,
        )
    if releases is None:
        ready = condition("Ready", False, "NotReported", "the device has not reported", revision)
    elif mine:
        ready = condition("Ready", False, "Pending", "waiting for the device", revision)
    else:
        reason = "Running" if want.state == "Running" else "Stopped"
        ready = condition("Ready", True, reason, f"release {want.release} {reason}", revision)
    if mine:
        progressing = condition(
            "Progressing",
            True,
            "+".join(a.action.capitalize() for a in mine),
            "; ".join(a.reason for a in mine),
            revision,
        )
    else:
        progressing = condition("Progressing", False, "Settled", "nothing to do", revision)
    if error:
        degraded = condition("Degraded", True, "Error", error, revision)
    else:
        degraded = condition("Degraded", False, "Healthy", "no error reported", revision)
    shown = running or current
    return {
        "deployment": want.deployment,
        "device": device,
        "application": want.application,
        "desiredRelease": want.release,
        "observedRelease": shown.release if shown else None,
        "desiredState": want.state,
        "observedState": None if releases is None else ("Running" if running else "Stopped"),
        "revision": revision,
        "conditions": [synced, ready, progressing, degraded],
    }
