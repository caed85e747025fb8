"""The manifest models and the wire contract agree field by field: a field added to a model
reaches the device, or is listed here as the controller's alone (with why). Without this, the
projection (`msgspec.convert`, which ignores unknown fields) would drop it silently."""

from __future__ import annotations

from typing import Any, get_args, get_origin

import msgspec
import pydantic
import pytest

from reconciler import wire
from reconciler.core.desired import desired_fleet
from reconciler.core.document import wire_deployment
from reconciler.manifests.model import release, simple
from tests.support.repos import MANIFESTS

CREDENTIAL = MANIFESTS / "credentials" / "registry-demo.yaml"

# Model fields that never reach a device, by wire name, with the reason.
CONTROLLER_ONLY = {
    (release.Container, "imageCredential"): (
        "a credential's name never leaves the controller; its secret goes in the document's "
        "registryAuth, keyed by image, and only for images the device lacks"
    ),
    (release.NetworkAttachment, "network"): "the key of the container's `endpoints`",
}
# Wire fields that come from elsewhere than the model's own fields.
WIRE_ONLY = {
    (wire.Volume, "name"): "metadata.name of the Volume",
    (wire.Network, "name"): "metadata.name of the Network",
    (wire.Container, "endpoints"): "the mapping entries of `networks`, by network",
    (wire.Container, "waitFor"): "the conditions of `dependsOn` other than started",
    (wire.Container, "secretEnv"): "the `env` entries that name a Secret's key",
}
# Models whose values reach the device inside another field rather than as a struct.
FLATTENED = {
    release.Dependency: "its condition is the value of `waitFor`, by the container waited for",
    release.EnvSource: "its secretKeyRef is the value of `secretEnv`, by variable",
}
PAIRS: list[tuple[type[pydantic.BaseModel], type[msgspec.Struct]]] = [
    (release.Container, wire.Container),
    (release.VolumeMount, wire.Mount),
    (release.Tmpfs, wire.Tmpfs),
    (release.Cpu, wire.Cpu),
    (release.DeviceMapping, wire.DeviceMapping),
    (release.DeviceRequest, wire.DeviceRequest),
    (release.Healthcheck, wire.Healthcheck),
    (simple.VolumeSpec, wire.Volume),
    (simple.NetworkSpec, wire.Network),
    (simple.IpamPool, wire.IpamPool),
    (release.NetworkAttachment, wire.Endpoint),
    (release.Ulimit, wire.Ulimit),
    (release.Logging, wire.Logging),
    (release.SecretKeyRef, wire.SecretRef),
    (release.SecretFile, wire.SecretFile),
]


def model_names(model: type[pydantic.BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def wire_names(struct: type[msgspec.Struct]) -> set[str]:
    return {field.encode_name for field in msgspec.structs.fields(struct)}


@pytest.mark.parametrize(("model", "struct"), PAIRS, ids=lambda t: t.__name__)
def test_every_model_field_is_on_the_wire_or_the_controllers_alone(
    model: type[pydantic.BaseModel], struct: type[msgspec.Struct]
) -> None:
    kept = {name for (kind, name) in CONTROLLER_ONLY if kind is model}
    extra = {name for (kind, name) in WIRE_ONLY if kind is struct}
    assert model_names(model) - kept == wire_names(struct) - extra


def nested_models(model: type[pydantic.BaseModel]) -> set[type[pydantic.BaseModel]]:
    """The models a model's fields hold (in lists, dicts, optionals), recursively."""
    found: set[type[pydantic.BaseModel]] = set()

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            if annotation not in found:
                found.add(annotation)
                for info in annotation.model_fields.values():
                    visit(info.annotation)
        elif get_origin(annotation) is not None:
            for arg in get_args(annotation):
                visit(arg)

    for info in model.model_fields.values():
        visit(info.annotation)
    return found


def test_every_model_inside_a_container_is_paired() -> None:
    paired = {model for model, _ in PAIRS}
    assert nested_models(release.Container) <= paired | set(FLATTENED)


EVERYTHING = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {name: full-1-0-0}
spec:
  application: web
  version: "1.0.0"
  containers:
    - name: base
      image: busybox:1.36
    - name: server
      image: registry.example:5000/web/server:1.0.0@sha256:{digest}
      imageCredential: registry-demo  # the example repository's, encrypted by sops
      hostname: web-1
      env: {MODE: "edge", EMPTY: ""}
      restartPolicy: on-failure
      networkMode: bridge
      networks: [front]
      volumes: [{volume: data, target: /data, readOnly: true}]
      binds: ["/etc/hosts:/etc/hosts-host:ro"]
      portBindings: ["127.0.0.1:8080:80/tcp", "9000-9001:9000-9001/udp"]
      extraHosts: ["db:10.0.0.5"]
      privileged: true
      capAdd: [NET_ADMIN]
      capDrop: [MKNOD]
      cpu: {period: 100000, quota: 50000, realtimePeriod: 1000, realtimeRuntime: 950}
      memory: 512Mi
      memoryReservation: 256Mi
      memorySwap: -1
      memorySwappiness: 10
      deviceMappings:
        - {pathOnHost: /dev/ttyUSB0, pathInContainer: /dev/ttyUSB0, cgroupPermissions: rw}
      deviceRequests:
        - {driver: nvidia, count: -1, capabilities: [[gpu]], options: {a: b}}
        - {driver: nvidia, deviceIds: ["0"]}
      readOnlyRootfs: true
      tmpfs: [{path: /run, options: "size=64m"}]
      storageOpt: {size: 1G}
      dependsOn: [base]
      healthcheck:
        test: [CMD, wget, -q, localhost]
        interval: 30s
        timeout: 5s
        retries: 3
        startPeriod: 1m
      command: [serve, --port, "80"]
      entrypoint: [/bin/run]
      user: "1000:1000"
      workingDir: /srv
      groupAdd: ["2000"]
      maxRetries: 3
      sysctls: {net.core.somaxconn: "1024"}
      securityOpt: ["no-new-privileges:true"]
      shmSize: 67108864
      ulimits: {nofile: {soft: 1024, hard: 2048}}
      init: true
      stopSignal: SIGINT
      stopGracePeriod: 5s
      tty: true
      labels: {org.example.team: edge}
      dns: [192.0.2.53]
      dnsSearch: [example.internal]
      pidMode: host
      ipcMode: shareable
      logging: {driver: local, options: {max-size: 10m}}
      volumeDriver: local
"""
RESOURCES = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Network
metadata: {name: front}
spec: {driver: bridge, options: {com.docker.network.bridge.name: br-front}, enableIpv6: true, internal: true}
---
apiVersion: hedgerow.dev/v1alpha1
kind: Volume
metadata: {name: data}
spec: {driver: local, options: {type: tmpfs}, deletionPolicy: Delete}
"""  # noqa: E501


def every_field(struct: msgspec.Struct) -> dict[str, Any]:
    """A struct as JSON with every field, also those at their default (which the wire omits)."""
    return {
        f.encode_name: msgspec.to_builtins(getattr(struct, f.name))
        for f in msgspec.structs.fields(struct)
    }


def test_every_value_set_in_a_manifest_reaches_the_device(validate_repo: Any) -> None:
    """A container with every field set, projected to the wire: equal to the model's own
    JSON, minus what the controller keeps; likewise its network and volume."""
    digest = "a" * 64
    report = validate_repo(
        {
            "release.yaml": EVERYTHING.replace("{digest}", digest),
            "resources.yaml": RESOURCES,
            "credential.yaml": CREDENTIAL.read_text(),
        }
    )
    assert [p.render() for p in report.errors] == []
    catalog = report.catalog
    (want,) = desired_fleet(catalog)["pi-1"].values()
    manifest = catalog.release("web", "1.0.0")
    assert manifest is not None
    projected = wire_deployment(catalog, want, manifest.manifest)
    containers = manifest.manifest.spec.containers
    assert len(projected.containers) == len(containers) == 2
    for model, container in zip(containers, projected.containers, strict=True):
        expected = model.model_dump(mode="json", by_alias=True, exclude={"image_credential"})
        expected |= {"endpoints": {}, "waitFor": {}, "secretEnv": {}}  # none of those forms
        assert every_field(container) == expected
    resources: list[wire.Network | wire.Volume] = [*projected.networks, *projected.volumes]
    assert [r.name for r in resources] == ["front", "data"]
    for resource in resources:
        kind = "networks" if isinstance(resource, wire.Network) else "volumes"
        spec = getattr(catalog, kind)[resource.name].manifest.spec
        expected = {"name": resource.name, **spec.model_dump(mode="json", by_alias=True)}
        assert msgspec.to_builtins(resource) == expected
