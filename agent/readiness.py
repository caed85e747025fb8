"""When a release counts as Ready on the device, and when the agent gives up on it.

A release is Ready once every container is running, and healthy where it has a healthcheck,
continuously for the deployment's `minReadySeconds`. After a switch (an upgrade or a redeploy
that started new containers) the agent keeps where it came from (`Switch`); a release not Ready
within `progressDeadlineSeconds` of the switch is Failed, and the agent switches back to it.
Pure: the agent's loop feeds it the engine's containers and the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Literal

import msgspec

from agent.steps import ContainerState
from reconciler.wire import Readiness

Verdict = Literal["Ready", "Waiting", "Failed"]
RESTARTS = 3  # restarts since the switch, before it is Ready, that fail it at once


class Switch(msgspec.Struct, frozen=True, kw_only=True):
    """A switch not yet judged Ready: the ids of the application's containers that ran before
    it (what a switch back starts again) and when it happened (wall clock, seconds)."""

    up: tuple[str, ...]
    at: float


def blocking(
    containers: Iterable[ContainerState], expected: int, jobs: Set[str] = frozenset()
) -> ContainerState | None:
    """The first container (in dependency order) keeping the release from being Ready now,
    or None when none does. Fewer containers than `expected`: one is missing, and the first
    found stands for it (a container removed by hand is recreated at the next pass). A
    one-shot job (named in `jobs`) counts once it has exited with 0."""
    found = sorted(containers, key=lambda c: (c.order, c.name))
    for container in found:
        if container.container in jobs and container.completed:
            continue
        if container.state != "running" or container.health in ("starting", "unhealthy"):
            return container
    if len(found) < expected:
        return found[0] if found else None
    return None


def ok_since(previous: float | None, ok: bool, now: float) -> float | None:
    """Since when the release has been running and healthy without a break (None: it is not)."""
    if not ok:
        return None
    return now if previous is None else previous


def verdict(
    since: float | None, switched: float | None, readiness: Readiness, now: float
) -> Verdict:
    """Ready after `minReadySeconds` of `since`; Failed once `progressDeadlineSeconds` have
    passed since the switch without that; else Waiting. Without a switch nothing fails here:
    there is nowhere to go back to (a first deploy, or after Ready)."""
    if since is not None and now - since >= readiness.min_ready_seconds:
        return "Ready"
    if switched is not None and now - switched >= readiness.progress_deadline_seconds:
        return "Failed"
    return "Waiting"


def next_look(
    since: float | None, switched: float | None, readiness: Readiness, now: float
) -> float | None:
    """Seconds until `verdict` could change with no event from the engine (None: only an
    event can change it)."""
    times = []
    if since is not None:
        times.append(since + readiness.min_ready_seconds)
    if switched is not None:
        times.append(switched + readiness.progress_deadline_seconds)
    return max(0.0, min(times) - now) if times else None


def health_of(status: str) -> str | None:
    """Docker's health in a listed container's `Status` ("Up 5 seconds (healthy)"): healthy,
    unhealthy, starting, or None without a healthcheck."""
    if status.endswith("(healthy)"):
        return "healthy"
    if status.endswith("(unhealthy)"):
        return "unhealthy"
    if status.endswith("(health: starting)"):
        return "starting"
    return None


def restarted(
    base: Mapping[str, int], last: Mapping[str, int], counts: Mapping[str, int]
) -> tuple[bool, str | None, int]:
    """Docker's restart counts of a release's containers (`counts`), against those at the
    first look (`base`) and the last one (`last`): whether one restarted since the last look
    (its release was not running all along, whatever the passes saw), the container that
    restarted most since the first look, and how many restarts that was in all."""
    since_last = any(n > last.get(name, n) for name, n in counts.items())
    grown = {name: n - base.get(name, n) for name, n in counts.items()}
    worst = max(grown, key=lambda name: (grown[name], name), default=None)
    total = sum(max(0, g) for g in grown.values())
    return since_last, worst if total else None, total
