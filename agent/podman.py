"""Podman's Docker-compatible API, where it answers differently from dockerd.

Debian's Podman 4.3 serves the Docker Engine API (`podman system service`), and the agent drives
it as it drives dockerd, through `agent.engine`; what Podman says differently is put in Docker's
terms here, on plain answers (no `docker` import), before the agent reads them:

- Container states: Podman lists `stopping` for a container being stopped or force-removed,
  where Docker still says `running` until its process is gone. Read as "not running", it made
  the agent start a container while `docker rm -f` was removing it, and Podman then kept the
  container's host port bound for good. `stopped` (exited, cleanup pending or a restart policy
  about to restart it) is Docker's `exited`; `configured` and `initialized` are `created`.
- Health: Podman runs healthchecks from systemd timers, and there are none on a device without
  systemd (nor here): the status stays `starting` for ever, and the list's `Status` never carries
  Docker's `(healthy)`. `HealthChecks` runs each check itself through Podman's own API when it is
  due (the container's interval, 30 s by default) and gives the listing Docker's suffix.
- Stopping a crash loop: Podman restarts a crashing container (restart policy) at once, and a
  stop that finds it between two runs (`stopped`) does not end the loop, as dockerd's does: it
  runs again and holds its host port, so the release switched back to cannot bind it.
  `stay_stopped` stops it again until Podman reports it `exited` (cleaned up, no restart due).
- Removal of a namespace's owner: Podman refuses to remove a container others joined
  (`networkMode: container:NAME`) before them, naming them in its error (`dependents`); the
  agent removes those first when they are its own, where dockerd just removes the owner.
- Removal: `docker rm -f` on Podman passes through states dockerd never shows (the container
  exited with 137 for a moment, then gone). A container found exited in its start grace is
  looked at again `REMOVAL_SECONDS` later, and only one still there failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

STATES = {
    "stopping": "running",
    "stopped": "exited",
    "configured": "created",
    "initialized": "created",
}
SUFFIX = {"healthy": " (healthy)", "unhealthy": " (unhealthy)", "starting": " (health: starting)"}
DEFAULT_INTERVAL = 30.0  # seconds, Docker's and Podman's default healthcheck interval
NS = 1e9
REMOVAL_SECONDS = 0.5  # how long a `rm -f` shows an exited container before it is gone


def is_podman(version: Mapping[str, Any]) -> bool:
    """True when an engine's `GET /version` answer is Podman's."""
    return any(
        str(part.get("Name", "")).startswith("Podman") for part in version.get("Components") or []
    )


def docker_state(state: str) -> str:
    """A container state as Docker names it (Docker's own pass through unchanged)."""
    return STATES.get(state, state)


DEPENDENTS = re.compile(r"has dependent containers which must be removed before it: ([0-9a-f,]+)")
SETTLE_SECONDS = 5.0  # beyond the stop's grace period, for a crash loop to end


def dependents(error: str) -> list[str]:
    """The ids of the containers Podman's error says must be removed before the one asked."""
    found = DEPENDENTS.search(error)
    return [part for part in found.group(1).split(",") if part] if found else []


def stay_stopped(
    status: Callable[[], str],
    stop: Callable[[], object],
    grace: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """After a stop: stop again whenever Podman has restarted the container, until its
    `status()` is final (`exited`, never started, or gone: ""). False when it never settled."""
    deadline = clock() + grace + SETTLE_SECONDS
    while clock() < deadline:
        state = status()
        if state in ("", "exited", "created", "configured"):
            return True
        if state == "running":
            stop()
        sleep(0.05)
    return False


class HealthChecks:
    """Runs Podman's healthchecks when due, as Docker's daemon would (see the module).

    `inspect(id)` is the container's inspect answer and `run(id)` runs its healthcheck once
    (Podman's `GET /libpod/containers/{id}/healthcheck`).
    """

    def __init__(
        self,
        inspect: Callable[[str], Mapping[str, Any]],
        run: Callable[[str], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inspect = inspect
        self._run = run
        self._clock = clock
        self._due: dict[str, float] = {}  # container id → when its next check is due

    def listing(self, listed: Mapping[str, Any]) -> dict[str, Any]:
        """A listed container as Docker lists it: its state, and its health in `Status`."""
        state = docker_state(str(listed.get("State", "")))
        status = str(listed.get("Status", ""))
        if state == "running":
            health = self._health(str(listed.get("Id", "")))
            if health in SUFFIX and not status.endswith(")"):
                status += SUFFIX[health]
        return {**listed, "State": state, "Status": status}

    def forget_others(self, ids: set[str]) -> None:
        """Drop what is known of containers no longer listed."""
        for gone in set(self._due) - ids:
            del self._due[gone]

    def next_due(self) -> float | None:
        """Seconds until the next check is due (None: no container has one)."""
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - self._clock())

    def _health(self, container: str) -> str | None:
        info = self._inspect(container)
        check = (info.get("Config") or {}).get("Healthcheck") or {}
        test = check.get("Test") or []
        if not test or test[0] == "NONE":
            self._due.pop(container, None)
            return None
        now = self._clock()
        if now >= self._due.get(container, now):
            self._run(container)
            interval = (check.get("Interval") or 0) / NS or DEFAULT_INTERVAL
            self._due[container] = now + interval
            info = self._inspect(container)
        health = (info.get("State") or {}).get("Health") or {}
        return str(health.get("Status") or "starting")
