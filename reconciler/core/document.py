"""The projection of a device's desired document: the revision in force, folded into exactly
what one device must receive (pure). Registry credentials go only with the images that need
them and the device has not reported present; a credential's name never leaves the controller.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass

import msgspec

from reconciler import wire
from reconciler.core.desired import DesiredDeployment
from reconciler.errors import HedgerowError
from reconciler.manifests.catalog import Catalog
from reconciler.manifests.credentials import Credential
from reconciler.manifests.model import Release
from reconciler.manifests.model.imageref import parse_image
from reconciler.manifests.model.release import Container
from reconciler.manifests.validate import Report
from reconciler.secrets.secret import Secret

Fleet = Mapping[str, Mapping[str, DesiredDeployment]]


class DocumentUnavailable(HedgerowError):
    """A device's document cannot be served yet (the controller is starting and the stored
    document would need pull credentials it has not decrypted yet): retry shortly."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A device's document as the store keeps it, so a restarted controller serves it before
    its revision is validated again: without any credential (no secret is ever stored), with
    the images whose pulls need one. Served as it is while the device has all of them."""

    revision: str
    body: bytes  # canonical JSON of the document with no registry credentials
    credential_images: tuple[str, ...]
    needs_secrets: bool = False  # its containers use Secret values, never stored

    def serves(self, present: Set[str]) -> bool:
        """Whether this body is the whole document for a device holding `present` images:
        never when it needs Secret values, which only a decrypted revision has."""
        return not self.needs_secrets and all(i in present for i in self.credential_images)


def canonical_json(document: wire.DesiredDocument) -> bytes:
    """Sorted keys, no spaces: equal documents are equal bytes, so the ETag is stable."""
    return msgspec.json.encode(msgspec.to_builtins(document), order="sorted")


def etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


def stored_document(applied: Applied, device: str, revision: str) -> StoredDocument:
    """What the store keeps of `device`'s document at `revision` (pure): no credential, no
    Secret value."""
    images = tuple(sorted(pull_credentials(applied, device)))
    document = desired_document(applied, device, frozenset(images), revision)
    kept = msgspec.structs.replace(document, secrets=[])
    refs = bool(secret_refs(applied, device))
    return StoredDocument(revision, canonical_json(kept), images, refs)


# the deployment's name in a shared part, cut out: no name can hold a NUL
_NAMELESS = "\x00"
_PLACEHOLDER = msgspec.json.encode(_NAMELESS)


# a deployment's part but for its name
_Shape = tuple[str, str, str, str | None, str, tuple[int, int]]


def _shape(want: DesiredDeployment) -> _Shape:
    return want.application, want.release, want.state, want.redeploy, want.digest, want.readiness


class Projection:
    """The documents of one revision, built from parts shared across devices.

    A device's canonical document is `{"deployments":[...],"device":...,"registryAuth":[...],
    "revision":...}` (keys sorted), and each deployment's part depends on the deployment alone
    (its release, state, redeploy token and content digest): a selector deployment running on
    10,000 devices is encoded once, and its bytes are shared. A device's document is then a
    join of a few shared byte strings, equal byte for byte to `canonical_json` of
    `desired_document`, which the tests check. Releases, volumes and networks are immutable
    once applied, so a part stays valid from one revision to the next (`carry`).
    """

    def __init__(self, applied: Applied, parts: Mapping[_Shape, tuple[bytes, bytes]] | None = None):
        self.applied = applied
        self._parts: dict[_Shape, tuple[bytes, bytes]] = dict(parts or {})
        self._refs: dict[_Shape, SecretRefs] = {}  # the Secret keys of each part

    def __len__(self) -> int:
        """How many parts are encoded: one per release, state and redeploy token in use."""
        return len(self._parts)

    def carry(self, applied: Applied) -> Projection:
        """The projection of the next revision, keeping the parts it still uses."""
        wanted = {_shape(w) for device in applied.fleet.values() for w in device.values()}
        return Projection(applied, {w: b for w, b in self._parts.items() if w in wanted})

    def part(self, want: DesiredDeployment) -> bytes:
        """A deployment's part of a document. Parts are kept per release, state and redeploy
        token, around the deployment's name: 10,000 per-device deployments of one release
        share two byte strings, not 10,000 copies of its containers."""
        shape = _shape(want)
        found = self._parts.get(shape)
        if found is None:
            catalog = self.applied.report.catalog
            release = catalog.release(want.application, want.release)
            assert release is not None  # an applied revision resolves every release
            unnamed = dataclasses.replace(want, deployment=_NAMELESS)
            deployment = wire_deployment(catalog, unnamed, release.manifest)
            encoded = msgspec.json.encode(msgspec.to_builtins(deployment), order="sorted")
            head, _, tail = encoded.partition(_PLACEHOLDER)
            found = self._parts[shape] = (head, tail)
        return b"".join((found[0], msgspec.json.encode(want.deployment), found[1]))

    def secret_refs(self, device: str) -> list[tuple[str, str]]:
        """`secret_refs` of `device`, read once per release and state, as the parts are: a
        document is built on every answer to a poll."""

        def of(want: DesiredDeployment) -> SecretRefs:
            shape = _shape(want)
            found = self._refs.get(shape)
            if found is None:
                found = self._refs[shape] = release_refs(self.applied.report.catalog, want)
            return found

        return secret_refs(self.applied, device, of)

    def body(self, device: str, present: Set[str], revision: str, *, values: bool = True) -> bytes:
        """`device`'s document: credentials only for images it does not hold, and the values
        of the Secrets its containers use (`values`: False for the body kept in the store)."""
        wanted = sorted(self.applied.fleet.get(device, {}).values(), key=lambda d: d.deployment)
        auth = [
            msgspec.json.encode(
                {
                    "image": image,
                    "password": credential.password.reveal(),
                    "serveraddress": credential.registry
                    or parse_image(image).domain
                    or "docker.io",
                    "username": credential.username.reveal(),
                }
            )
            for image, credential in sorted(pull_credentials(self.applied, device).items())
            if image not in present
        ]
        return b"".join(
            (
                b'{"deployments":[',
                b",".join(self.part(want) for want in wanted),
                b'],"device":',
                msgspec.json.encode(device),
                b',"registryAuth":[',
                b",".join(auth),
                b'],"revision":',
                msgspec.json.encode(revision),
                b',"secrets":[',
                b",".join(
                    msgspec.json.encode({"key": key, "secret": name, "value": value.reveal()})
                    for name, key, value in (
                        secret_values(self.applied, self.secret_refs(device)) if values else ()
                    )
                ),
                b"]}",
            )
        )

    def stored(self, device: str, revision: str) -> StoredDocument:
        """What the store keeps of `device`'s document: no credential, and which images
        would need one."""
        images = tuple(sorted(pull_credentials(self.applied, device)))
        body = self.body(device, frozenset(images), revision, values=False)
        return StoredDocument(revision, body, images, bool(self.secret_refs(device)))


@dataclass(frozen=True)
class Applied:
    """The revision in force: its commit, its validated manifests and what each device runs."""

    sha: str
    report: Report
    fleet: Fleet


def desired_document(
    applied: Applied, device: str, present: Set[str], revision: str
) -> wire.DesiredDocument:
    """The wire document of one device at the applied revision (pure); `present` are the images
    the device reported, which need no credentials; `revision` is the one the document names."""
    catalog = applied.report.catalog
    deployments = []
    for want in sorted(applied.fleet.get(device, {}).values(), key=lambda d: d.deployment):
        release = catalog.release(want.application, want.release)
        assert release is not None  # an applied revision resolves every deployment's release
        deployments.append(wire_deployment(catalog, want, release.manifest))
    auth = [
        wire.RegistryAuth(
            image=image,
            serveraddress=credential.registry or parse_image(image).domain or "docker.io",
            username=credential.username.reveal(),
            password=credential.password.reveal(),
        )
        for image, credential in sorted(pull_credentials(applied, device).items())
        if image not in present
    ]
    secrets = [
        wire.SecretValue(secret=name, key=key, value=value.reveal())
        for name, key, value in secret_values(applied, secret_refs(applied, device))
    ]
    return wire.DesiredDocument(
        device=device,
        revision=revision,
        deployments=deployments,
        registry_auth=auth,
        secrets=secrets,
    )


SecretRefs = tuple[tuple[str, str], ...]  # (Secret, key) pairs


def release_refs(catalog: Catalog, want: DesiredDeployment) -> SecretRefs:
    """The (Secret, key) pairs a deployment's containers use: its release's alone."""
    release = catalog.release(want.application, want.release)
    containers = release.manifest.spec.containers if release else ()
    return tuple({(secret, key) for c in containers for _, secret, key in c.secret_refs})


def secret_refs(
    applied: Applied, device: str, of: Callable[[DesiredDeployment], SecretRefs] | None = None
) -> list[tuple[str, str]]:
    """The (Secret, key) pairs the device's containers use, sorted, each once; `of` gives a
    deployment's (a Projection's memo; default: read from the release)."""
    catalog = applied.report.catalog
    wants = applied.fleet.get(device, {}).values()
    found = of or (lambda want: release_refs(catalog, want))
    return sorted({ref for want in wants for ref in found(want)})


def secret_values(
    applied: Applied, refs: Iterable[tuple[str, str]]
) -> list[tuple[str, str, Secret]]:
    """The decrypted values of `refs`; those the controller could not decrypt (no age key)
    are left out, and the agent reports the containers needing them as blocked."""
    found = applied.report.secrets
    return [(name, key, found[name][key]) for name, key in refs if key in found.get(name, {})]


def pull_credentials(applied: Applied, device: str) -> dict[str, Credential]:
    """Image → decrypted credential for the device's containers that name one. Without an age
    key the controller has no decrypted credential, and the image is pulled anonymously."""
    found: dict[str, Credential] = {}
    catalog, credentials = applied.report.catalog, applied.report.credentials
    for want in sorted(applied.fleet.get(device, {}).values(), key=lambda d: d.deployment):
        release = catalog.release(want.application, want.release)
        for container in release.manifest.spec.containers if release else ():
            name = container.image_credential
            credential = credentials.get(name) if name is not None else None
            if credential is not None:
                found.setdefault(container.image, credential)
    return found


def wire_container(container: Container) -> wire.Container:
    """A release's container as the agent takes it: the credential's name stays here, network
    names and dependencies in the lists older agents read, with what they do not know apart
    (`endpoints`, `waitFor`), and ulimits written as a number given as soft and hard."""
    dumped = container.model_dump(mode="json", by_alias=True, exclude={"image_credential"})
    dumped["env"] = {k: v for k, v in container.env.items() if isinstance(v, str)}
    dumped["secretEnv"] = {
        k: v.secret_key_ref.model_dump(mode="json")
        for k, v in container.env.items()
        if not isinstance(v, str)
    }
    dumped["secrets"] = [
        {"secret": f.secret, "key": f.key, "target": f.path, "mode": f.mode}
        for f in container.secrets
    ]
    dumped["networks"] = container.network_names
    dumped["endpoints"] = {
        n.network: n.model_dump(mode="json", by_alias=True, exclude={"network"})
        for n in container.networks
        if not isinstance(n, str)
    }
    dumped["dependsOn"] = list(container.dependencies)
    dumped["waitFor"] = {n: c for n, c in container.dependencies.items() if c != "started"}
    dumped["ulimits"] = {
        name: {"soft": limit, "hard": limit} if isinstance(limit, int) else limit
        for name, limit in dumped["ulimits"].items()
    }
    # values equal to the defaults are left to msgspec, which omits its own defaults only
    return msgspec.convert(
        {k: v for k, v in dumped.items() if _CONTAINER_DEFAULTS.get(k, _NONE) != v},
        wire.Container,
    )


_NONE = object()
_CONTAINER_DEFAULTS = {
    f.encode_name: f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
    for f in msgspec.structs.fields(wire.Container)
    if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
}


def wire_deployment(catalog: Catalog, want: DesiredDeployment, release: Release) -> wire.Deployment:
    containers = release.spec.containers
    ready = wire.Readiness(
        min_ready_seconds=want.readiness[0], progress_deadline_seconds=want.readiness[1]
    )
    volumes = sorted({mount.volume for c in containers for mount in c.volumes})
    networks = sorted({network for c in containers for network in c.network_names})
    return wire.Deployment(
        deployment=want.deployment,
        application=want.application,
        release=want.release,
        state=want.state,
        redeploy=want.redeploy,
        digest=want.digest,
        containers=[wire_container(c) for c in containers],
        volumes=[
            msgspec.convert(
                {"name": name, **catalog.volumes[name].manifest.spec.model_dump(by_alias=True)},
                wire.Volume,
            )
            for name in volumes
        ],
        networks=[
            msgspec.convert(
                {"name": name, **catalog.networks[name].manifest.spec.model_dump(by_alias=True)},
                wire.Network,
            )
            for name in networks
        ],
        readiness=None if ready == wire.DEFAULT_READINESS else ready,
    )
