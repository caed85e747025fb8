"""What each device should run at one revision: the catalog folded per device (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.manifests.catalog import Catalog
from reconciler.manifests.check import Checked
from reconciler.manifests.model import Deployment, Manifest
from reconciler.manifests.model.fields import fingerprint_json

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
    # (minReadySeconds, progressDeadlineSeconds) of the deployment's readiness
    readiness: tuple[int, int] = (10, 300)


DesiredDevice = Mapping[str, DesiredDeployment]  # by application
DesiredFleet = Mapping[str, DesiredDevice]  # by device


def spec_json(manifest: Manifest) -> dict[str, Any]:
    """A manifest's spec as `spec_digest` sees it, so a new digest always shows a field (a
    field added since leaves the digests of specs that do not use it as they were)."""
    return fingerprint_json(manifest.spec)


def spec_digest(manifest: Manifest) -> str:
    """A stable digest of a manifest's spec, for immutability checks (and drift, of releases)."""
    canonical = json.dumps(spec_json(manifest), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def desired_fleet(catalog: Catalog) -> dict[str, dict[str, DesiredDeployment]]:
    """Every device of the catalog, with the deployments that target it (possibly none)."""
    fleet: dict[str, dict[str, DesiredDeployment]] = {name: {} for name in catalog.devices}
    digests: dict[str, str] = {}
    for _, entry in sorted(catalog.deployments.items()):
        desired = _desired(catalog, entry, digests)
        if desired is None:
            continue
        for device in catalog.targets(entry.manifest):
            fleet[device.name].setdefault(desired.application, desired)
    return fleet


def _desired(
    catalog: Catalog, entry: Checked[Deployment], digests: dict[str, str]
) -> DesiredDeployment | None:
    spec = entry.manifest.spec
    release = catalog.release(spec.application, spec.release)
    if release is None:
        return None
    digest = digests.get(release.name)
    if digest is None:
        digest = digests[release.name] = spec_digest(release.manifest)
    ready = spec.readiness
    return DesiredDeployment(
        entry.name,
        spec.application,
        spec.release,
        spec.state,
        spec.redeploy,
        digest,
        (ready.min_ready_seconds, ready.progress_deadline_seconds),
    )


def changed_files(old: Catalog, new: Catalog) -> set[str]:
    """Files of deployments and devices whose content differs between two revisions."""
    before, after = old.contents(), new.contents()
    return {f for f in before.keys() | after.keys() if before.get(f) != after.get(f)}


def affected_devices(old: Catalog, new: Catalog, changed_files: Iterable[str]) -> set[str]:
    """Devices whose desired state may differ after a commit that changed `changed_files`.

    Only deployments and devices defined in those files can change what a device runs
    (releases are immutable once applied), so a re-plan costs what the commit touched.
    """
    files = set(changed_files)
    affected: set[str] = set()
    for catalog in (old, new):
        for entry in catalog.in_files(files):
            manifest = entry.manifest
            if isinstance(manifest, Deployment):
                affected.update(device.name for device in catalog.targets(manifest))
            else:
                affected.add(entry.name)
    return affected


def refresh_fleet(
    fleet: DesiredFleet, catalog: Catalog, devices: Iterable[str]
) -> dict[str, DesiredDevice]:
    """`fleet` with the desired state of `devices` recomputed from `catalog`; equal to
    `desired_fleet(catalog)` whenever `devices` covers every device that changed."""
    updated = dict(fleet)
    digests: dict[str, str] = {}
    for device in devices:
        if device not in catalog.devices:
            updated.pop(device, None)
            continue
        wanted: dict[str, DesiredDeployment] = {}
        for entry in catalog.deployments_of(device):
            desired = _desired(catalog, entry, digests)
            if desired is not None:
                wanted.setdefault(desired.application, desired)
        updated[device] = wanted
    return updated
