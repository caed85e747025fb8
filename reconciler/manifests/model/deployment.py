"""Deployment: which release of an application runs on which devices, running or stopped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from reconciler.manifests.model.base import Finding, Manifest, Spec
from reconciler.manifests.model.fields import DnsLabel, Labels, Model, Version


class Selector(Model):
    match_labels: Labels = Field(min_length=1)


class DeploymentSpec(Spec):
    application: DnsLabel
    release: Version = Field(description="A version of the application's releases.")
    device: DnsLabel | None = Field(None, description="One device, or use selector.")
    selector: Selector | None = Field(None, description="Devices whose labels all match.")
    state: Literal["Running", "Stopped"] = "Running"
    redeploy: str | None = Field(None, description="Change it to ask for a redeploy.")

    def findings(self) -> Iterator[Finding]:
        if (self.device is None) == (self.selector is None):
            yield ("device",), "set exactly one target: either device or selector"


class Deployment(Manifest):
    plural = "deployments"
    kind: Literal["Deployment"]
    spec: DeploymentSpec
