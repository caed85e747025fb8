"""The whole repository at one revision, and the rules that hold between its documents."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar, cast

from pydantic.alias_generators import to_camel

from reconciler.manifests.check import Checked, suggest
from reconciler.manifests.model import (
    Application,
    Deployment,
    Device,
    ImageCredential,
    Manifest,
    Network,
    Release,
    Secret,
    Volume,
)
from reconciler.manifests.model.imageref import parse_image
from reconciler.manifests.model.release import NetworkAttachment
from reconciler.manifests.problems import FieldPath, Problem, Severity

M = TypeVar("M", bound=Manifest)
DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class Catalog:
    """Valid manifests by kind and name. Built only from documents that passed their own checks."""

    applications: Mapping[str, Checked[Application]] = field(default_factory=dict)
    releases: Mapping[str, Checked[Release]] = field(default_factory=dict)
    credentials: Mapping[str, Checked[ImageCredential]] = field(default_factory=dict)
    secrets: Mapping[str, Checked[Secret]] = field(default_factory=dict)
    volumes: Mapping[str, Checked[Volume]] = field(default_factory=dict)
    networks: Mapping[str, Checked[Network]] = field(default_factory=dict)
    devices: Mapping[str, Checked[Device]] = field(default_factory=dict)
    deployments: Mapping[str, Checked[Deployment]] = field(default_factory=dict)

    @cached_property
    def _by_version(self) -> dict[tuple[str, str], Checked[Release]]:
        index: dict[tuple[str, str], Checked[Release]] = {}
        for release in self.releases.values():
            spec = release.manifest.spec
            index.setdefault((spec.application, spec.version), release)
        return index

    def release(self, application: str, version: str) -> Checked[Release] | None:
        return self._by_version.get((application, version))

    def versions(self, application: str) -> list[str]:
        return sorted(v for a, v in self._by_version if a == application)

    @cached_property
    def _by_file(self) -> dict[str, list[Checked[Manifest]]]:
        index: dict[str, list[Checked[Manifest]]] = {}
        for kind in (self.deployments, self.devices):
            for entry in kind.values():
                index.setdefault(entry.file, []).append(entry)
        return index

    def contents(self) -> dict[str, bytes]:
        """The content of every file that defines a deployment or a device, `pack`ed: equal
        for equal content."""
        return {file: entries[0].packed for file, entries in self._by_file.items()}

    def in_files(self, files: Iterable[str]) -> list[Checked[Manifest]]:
        """Deployments and devices defined in `files`: what a commit touching them may change."""
        return [entry for file in files for entry in self._by_file.get(file, ())]

    @cached_property
    def _by_target(self) -> dict[str, tuple[str, ...]]:
        """Device → the names of the deployments that target it, by name or by selector:
        each selector's devices come from the label index, so this costs the bindings, not
        devices times selectors (2 s at 10,000 devices and 400 selectors). Kept as tuples,
        a list's spare room less a device."""
        by_device: dict[str, list[str]] = {}
        for name, entry in self.deployments.items():
            for device in self.targets(entry.manifest):
                by_device.setdefault(device.name, []).append(name)
        return {device: tuple(names) for device, names in by_device.items()}

    def deployments_of(self, device: str) -> list[Checked[Deployment]]:
        """The deployments that target one device, in name order."""
        return [self.deployments[name] for name in sorted(self._by_target.get(device, ()))]

    def index(self) -> None:
        """Build the lookup indexes now, while the catalog is built, not during planning."""
        for name in ("_by_version", "_by_file", "_by_label", "_by_target"):
            getattr(self, name)

    @cached_property
    def _by_label(self) -> dict[tuple[str, str], set[str]]:
        index: dict[tuple[str, str], set[str]] = {}
        for name, device in self.devices.items():
            for label in device.manifest.metadata.labels.items():
                index.setdefault(label, set()).add(name)
        return index

    def targets(self, deployment: Deployment) -> list[Checked[Device]]:
        """The devices a deployment binds, in name order."""
        spec = deployment.spec
        if spec.device is not None:
            device = self.devices.get(spec.device)
            return [device] if device else []
        if spec.selector is None:
            return []
        sets = [self._by_label.get(label, set()) for label in spec.selector.match_labels.items()]
        names = set.intersection(*sorted(sets, key=len))
        return [self.devices[name] for name in sorted(names)]


# A name no document can have, for `broken`: a broken document of that kind whose name is
# unknown (a credential encrypted whole that could not be decrypted) may be any of them.
ANY_NAME = "*"


def build_catalog(
    checked: Iterable[Checked[Manifest]], broken: Set[tuple[str, str]] = frozenset()
) -> tuple[Catalog, list[Problem]]:
    """Index manifests by kind and name, then apply every rule across documents.

    `broken` names (kind, name) of documents that failed their own checks: references to them
    are not reported again, so one mistake gives one error. (kind, `ANY_NAME`) stands for
    every name of the kind.
    """
    by_kind: dict[str, dict[str, Checked[Manifest]]] = {}
    problems: list[Problem] = []
    for entry in checked:
        names = by_kind.setdefault(entry.manifest.kind, {})
        first = names.get(entry.name)
        if first is not None:
            problems.append(
                entry.problem(
                    ("metadata", "name"),
                    f"{entry.manifest.kind} {entry.name!r} is already defined at "
                    f"{_where(first)}; names are unique per kind",
                )
            )
            continue
        names[entry.name] = entry

    def kind(name: str, model: type[M]) -> dict[str, Checked[M]]:
        return cast(dict[str, Checked[M]], by_kind.get(name, {}))

    catalog = Catalog(
        applications=kind("Application", Application),
        releases=kind("Release", Release),
        credentials=kind("ImageCredential", ImageCredential),
        secrets=kind("Secret", Secret),
        volumes=kind("Volume", Volume),
        networks=kind("Network", Network),
        devices=kind("Device", Device),
        deployments=kind("Deployment", Deployment),
    )
    catalog.index()
    problems.extend(_release_problems(catalog, broken))
    problems.extend(_deployment_problems(catalog, broken))
    return catalog, problems


def _where(entry: Checked[Manifest]) -> str:
    line, _ = entry.document.locate(())
    return f"{entry.document.file}:{line}"


def _missing(what: str, name: str, options: Iterable[str]) -> str:
    options = sorted(options)
    hint = suggest(name, options) or (
        f"; defined: {', '.join(options[:10])}" if options else f"; no {what} is defined"
    )
    return f"{what} {name!r} is not defined{hint}"


def _release_problems(catalog: Catalog, broken: Set[tuple[str, str]]) -> Iterator[Problem]:
    seen: dict[tuple[str, str], Checked[Release]] = {}
    for release in catalog.releases.values():
        spec = release.manifest.spec
        if _absent(spec.application, catalog.applications, "Application", broken):
            yield release.problem(
                ("spec", "application"),
                _missing("Application", spec.application, catalog.applications),
            )
        key = (spec.application, spec.version)
        if key in seen:
            yield release.problem(
                ("spec", "version"),
                f"version {spec.version} of {spec.application!r} is already released by "
                f"{seen[key].name!r} at {_where(seen[key])}; publish a new version instead",
            )
        else:
            seen[key] = release
        for i, container in enumerate(spec.containers):
            at = ("spec", "containers", i)
            name = container.image_credential
            if name is not None:
                credential = catalog.credentials.get(name)
                if any(("ImageCredential", n) in broken for n in (name, ANY_NAME)):
                    pass
                elif credential is None:
                    yield release.problem(
                        (*at, "imageCredential"),
                        _missing("ImageCredential", name, catalog.credentials),
                    )
                elif not _registry_matches(credential.manifest.spec.registry, container.image):
                    yield release.problem(
                        (*at, "imageCredential"),
                        f"ImageCredential {name!r} is for registry "
                        f"{credential.manifest.spec.registry!r}, not this image's registry",
                        Severity.WARNING,
                    )
            for path, secret, data_key in container.secret_refs:
                yield from _secret_problems(
                    release, (*at, *path), secret, data_key, catalog, broken
                )
            for j, mount in enumerate(container.volumes):
                if _absent(mount.volume, catalog.volumes, "Volume", broken):
                    yield release.problem(
                        (*at, "volumes", j, "volume"),
                        _missing("Volume", mount.volume, catalog.volumes),
                    )
            for j, entry in enumerate(container.networks):
                yield from _network_problems(release, (*at, "networks", j), entry, catalog, broken)


def _secret_problems(
    release: Checked[Release],
    at: FieldPath,
    secret: str,
    key: str,
    catalog: Catalog,
    broken: Set[tuple[str, str]],
) -> Iterator[Problem]:
    """A Secret a container uses must exist and hold the key (keys are readable in git)."""
    if _absent(secret, catalog.secrets, "Secret", broken):
        yield release.problem(at, _missing("Secret", secret, catalog.secrets))
    elif secret in catalog.secrets:
        keys = sorted(catalog.secrets[secret].manifest.spec.data)
        if key not in keys:
            hint = suggest(key, keys) or f"; its keys: {', '.join(keys)}"
            yield release.problem(at, f"Secret {secret!r} has no key {key!r}{hint}")


def _network_problems(
    release: Checked[Release],
    at: FieldPath,
    entry: str | NetworkAttachment,
    catalog: Catalog,
    broken: Set[tuple[str, str]],
) -> Iterator[Problem]:
    """A network a container joins must exist, and a fixed address must be in its subnets."""
    name = entry if isinstance(entry, str) else entry.network
    if _absent(name, catalog.networks, "Network", broken):
        yield release.problem(at, _missing("Network", name, catalog.networks))
    elif name in catalog.networks and not isinstance(entry, str):
        network = catalog.networks[name].manifest.spec
        for field in ("ipv4_address", "ipv6_address"):
            address = getattr(entry, field)
            if address is not None and not network.contains(address):
                subnets = ", ".join(p.subnet for p in network.ipam) or "it has no ipam"
                yield release.problem(
                    (*at, to_camel(field)),
                    f"{address} is outside every subnet of Network {name!r} ({subnets})",
                )


def _absent(
    name: str, defined: Mapping[str, object], kind: str, broken: Set[tuple[str, str]]
) -> bool:
    return name not in defined and (kind, name) not in broken


def _registry_matches(registry: str | None, image: str) -> bool:
    if registry is None:
        return True
    domain = parse_image(image).domain
    if domain is None:
        return registry in DOCKER_HUB
    return domain == registry or (domain in DOCKER_HUB and registry in DOCKER_HUB)


def _deployment_problems(catalog: Catalog, broken: Set[tuple[str, str]]) -> Iterator[Problem]:
    owner: dict[tuple[str, str], Checked[Deployment]] = {}
    for deployment in catalog.deployments.values():
        spec = deployment.manifest.spec
        if spec.application not in catalog.applications:
            if ("Application", spec.application) not in broken:
                yield deployment.problem(
                    ("spec", "application"),
                    _missing("Application", spec.application, catalog.applications),
                )
            continue
        release = catalog.release(spec.application, spec.release)
        if release is None and ("Release@", f"{spec.application}@{spec.release}") not in broken:
            versions = catalog.versions(spec.application)
            yield deployment.problem(
                ("spec", "release"),
                f"{spec.application!r} has no release {spec.release}"
                + (f"; released versions: {', '.join(versions)}" if versions else ""),
            )
        if spec.device is not None and spec.device not in catalog.devices:
            if ("Device", spec.device) not in broken:
                yield deployment.problem(
                    ("spec", "device"), _missing("Device", spec.device, catalog.devices)
                )
            continue
        targets = catalog.targets(deployment.manifest)
        if not targets and spec.selector is not None:
            yield deployment.problem(
                ("spec", "selector", "matchLabels"),
                "selector matches no device; it deploys nothing until a device has these labels",
                Severity.WARNING,
            )
        yield from _empty_waves(deployment, targets)
        target_field = ("spec", "device") if spec.device is not None else ("spec", "selector")
        models = release.manifest.spec.supported_system_models if release else []
        for device in targets:
            model = device.manifest.spec.system_model
            if models and model not in models:
                yield deployment.problem(
                    target_field,
                    f"device {device.name!r} is a {model!r}, which release {spec.release} of "
                    f"{spec.application!r} does not support (supported: {', '.join(models)})",
                )
            key = (device.name, spec.application)
            other = owner.get(key)
            if other is not None:
                yield deployment.problem(
                    target_field,
                    f"device {device.name!r} already runs {spec.application!r} through "
                    f"Deployment {other.name!r} at {_where(other)}; a device runs one release "
                    "of an application (change that deployment's release to upgrade)",
                )
            else:
                owner[key] = deployment


def _empty_waves(
    deployment: Checked[Deployment], targets: list[Checked[Device]]
) -> Iterator[Problem]:
    """A rollout wave whose selector matches none of the deployment's devices moves nothing:
    likely a typo in a label, so it is said before the merge."""
    rollout = deployment.manifest.spec.rollout
    if rollout is None or not targets:
        return
    for i, wave in enumerate(rollout.waves):
        if wave.selector is None:
            continue
        wanted = wave.selector.match_labels.items()
        if not any(wanted <= t.manifest.metadata.labels.items() for t in targets):
            yield deployment.problem(
                ("spec", "rollout", "waves", i, "selector", "matchLabels"),
                f"wave {wave.name!r} matches none of the {len(targets)} device(s) this "
                "deployment targets; it will move none",
                Severity.WARNING,
            )
