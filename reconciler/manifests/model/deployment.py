"""Deployment: which release of an application runs on which devices, running or stopped, how
a device proves the release Ready, and how a new release rolls out over the devices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field

from reconciler.manifests.model.base import Finding, Manifest, Spec
from reconciler.manifests.model.fields import (
    LATER,
    Amount,
    DnsLabel,
    Labels,
    Model,
    Version,
)


class Selector(Model):
    match_labels: Labels = Field(min_length=1)


class Readiness(Model):
    """When a device counts its release Ready, and when it gives up and switches back."""

    min_ready_seconds: int = Field(
        10, ge=0, description="How long every container must stay running and healthy."
    )
    progress_deadline_seconds: int = Field(
        300, ge=1, description="Not Ready this long after a switch: switch back, Degraded."
    )


class Wave(Model):
    """Devices moved together: by selector, by percent (a stable hash of names), or all left."""

    name: DnsLabel
    selector: Selector | None = None
    percent: int | None = Field(None, ge=1, le=100, description="Of all targeted devices.")


class Rollout(Model):
    """How a new release moves: wave by wave, maxInFlight at once, halting past maxFailures."""

    waves: list[Wave] = Field(
        default_factory=list, description="In order; none means one wave of every device."
    )
    max_in_flight: Amount = Field("10%", description="A number or a percentage; at least 1.")
    max_failures: Amount = Field(0, description="Of all targeted devices, before it halts.")
    bake_seconds: int = Field(0, ge=0, description="Wait after a wave is Ready, before the next.")
    on_failure: Literal["Halt", "Rollback"] = "Halt"
    paused: bool = False

    def findings(self) -> Iterator[Finding]:
        seen: dict[str, int] = {}
        for i, wave in enumerate(self.waves):
            if wave.name in seen:
                yield ("waves", i, "name"), f"wave {wave.name!r} is waves[{seen[wave.name]}] too"
            seen.setdefault(wave.name, i)
            if wave.selector is not None and wave.percent is not None:
                yield ("waves", i, "percent"), "set a selector or a percent, not both"
            if wave.selector is None and wave.percent is None and i != len(self.waves) - 1:
                yield (
                    ("waves", i),
                    f"wave {wave.name!r} takes every device left (no selector, no percent), "
                    "so it must be the last",
                )


class DeploymentSpec(Spec):
    application: DnsLabel
    release: Version = Field(description="A version of the application's releases.")
    device: DnsLabel | None = Field(None, description="One device, or use selector.")
    selector: Selector | None = Field(None, description="Devices whose labels all match.")
    state: Literal["Running", "Stopped"] = "Running"
    redeploy: str | None = Field(None, description="Change it to ask for a redeploy.")
    readiness: Annotated[Readiness, LATER] = Field(default_factory=Readiness)
    rollout: Annotated[Rollout | None, LATER] = Field(
        None, description="Without it, a new release goes to every device at once."
    )

    def findings(self) -> Iterator[Finding]:
        if (self.device is None) == (self.selector is None):
            yield ("device",), "set exactly one target: either device or selector"
        if self.rollout is not None:
            for path, message in self.rollout.findings():
                yield ("rollout", *path), message


class Deployment(Manifest):
    plural = "deployments"
    kind: Literal["Deployment"]
    spec: DeploymentSpec
