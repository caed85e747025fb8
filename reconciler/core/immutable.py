"""What never changes under its name once applied, and how a change in place is reported.

Releases are compared by content on the devices, credentials and Secrets are looked up by
name, and Docker cannot change a network or a volume in place (a volume holds data): the agent
creates each once and never recreates it. So all five are immutable, and the controller (which
rejects the commit) and the review (which flags it before the merge) report a change with one
wording, at one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from reconciler.manifests.catalog import Catalog
from reconciler.manifests.check import Checked
from reconciler.manifests.model import ImageCredential, Network, Release, Secret, Volume
from reconciler.manifests.problems import Problem

Resource = Volume | Network
ResourceKind = Literal["volume", "network"]  # also their fingerprint kinds in the store


def resources(catalog: Catalog) -> dict[ResourceKind, Mapping[str, Checked[Resource]]]:
    """The volumes and networks of a catalog, by kind, then by name."""
    return {"volume": catalog.volumes, "network": catalog.networks}


def release_changed(entry: Checked[Release]) -> Problem:
    spec = entry.manifest.spec
    return entry.problem(
        ("spec", "version"),
        f"release {spec.application} {spec.version} was changed in place; releases are "
        "immutable once applied: publish a new version instead",
    )


def credential_changed(entry: Checked[ImageCredential]) -> Problem:
    return entry.problem(
        ("spec",),
        f"ImageCredential {entry.name} changed: credentials are immutable; create a new "
        "credential and switch releases to it",
    )


def secret_changed(entry: Checked[Secret]) -> Problem:
    return entry.problem(
        ("spec",),
        f"Secret {entry.name} changed: Secrets are immutable; create a new Secret and switch "
        "releases to it",
    )


def resource_changed(entry: Checked[Resource]) -> Problem:
    """At the name, which is what must change: the data of a volume stays with the old one."""
    manifest = entry.manifest
    return entry.problem(
        ("metadata", "name"),
        f"{manifest.kind} {entry.name} was changed in place; {manifest.plural} are immutable "
        "once applied: create one under a new name and switch releases to it",
    )
