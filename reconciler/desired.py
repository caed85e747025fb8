"""What each device should run at one revision: the catalog folded per device (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from reconciler.catalog import Catalog
from reconciler.model import Release

State = Literal["Running", "Stopped"]


@dataclass(frozen=True, slots=True)
class DesiredDeployment:
    """One application on one device: which release, in which state."""

    deployment: str
    application: str
    release: str
    state: State
    redeploy: str | None
    digest: str  # of the release's content: an in-place change is visible as a new digest


DesiredDevice = Mapping[str, DesiredDeployment]  # by application
DesiredFleet = Mapping[str, DesiredDevice]  # by device


def release_digest(release: Release) -> str:
    """A stable digest of a release's spec, for immutability checks and drift."""
    canonical = json.dumps(
        release.spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def desired_fleet(catalog: Catalog) -> dict[str, dict[str, DesiredDeployment]]:
    """Every device of the catalog, with the deployments that target it (possibly none)."""
    fleet: dict[str, dict[str, DesiredDeployment]] = {name: {} for name in catalog.devices}
    digests: dict[str, str] = {}
    for name, entry in sorted(catalog.deployments.items()):
        spec = entry.manifest.spec
        release = catalog.release(spec.application, spec.release)
        if release is None:
            continue
        digest = digests.get(release.name)
        if digest is None:
            digest = digests[release.name] = release_digest(release.manifest)
        desired = DesiredDeployment(
            name, spec.application, spec.release, spec.state, spec.redeploy, digest
        )
        for device in catalog.targets(entry.manifest):
            fleet[device.name].setdefault(spec.application, desired)
    return fleet
