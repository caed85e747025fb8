"""Release and its containers: everything a device needs to run one version of an application."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field
from pydantic.alias_generators import to_camel

from reconciler.manifests.model.base import Finding, Manifest, Spec
from reconciler.manifests.model.fields import (
    LATER,
    AbsolutePath,
    Bind,
    Capability,
    CgroupPermissions,
    DnsLabel,
    Duration,
    EnvName,
    ExtraHost,
    Hostname,
    ImageRef,
    Memory,
    MemorySwap,
    Model,
    PortBinding,
    Version,
)
from reconciler.manifests.problems import render_path
from reconciler.wire import duration_ns


class VolumeMount(Model):
    volume: DnsLabel = Field(description="Name of a Volume.")
    target: AbsolutePath


class Tmpfs(Model):
    path: AbsolutePath
    options: str = ""


class Cpu(Model):
    period: int | None = Field(None, ge=1000, le=1_000_000, description="CFS period, µs.")
    quota: int | None = Field(None, ge=1000, description="CFS quota, µs per period.")
    realtime_period: int | None = Field(None, ge=0)
    realtime_runtime: int | None = Field(None, ge=0)


class DeviceMapping(Model):
    path_on_host: AbsolutePath
    path_in_container: AbsolutePath
    cgroup_permissions: CgroupPermissions = "rwm"


class DeviceRequest(Model):
    driver: str = ""
    count: int | None = Field(None, ge=-1, description="-1 for all devices.")
    device_ids: list[str] = Field(default_factory=list)
    capabilities: list[list[str]] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)


class Healthcheck(Model):
    """Docker's healthcheck, as compose writes it; a release is Ready once every one passes."""

    test: list[str] = Field(
        min_length=1,
        description='["CMD", arg, ...], ["CMD-SHELL", "command"] or ["NONE"] (no check).',
    )
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = Field(None, ge=0)
    start_period: Duration | None = Field(
        None, description="Failures in this time after start do not count."
    )

    def findings(self) -> Iterator[Finding]:
        kind, arguments = self.test[0], self.test[1:]
        if kind == "CMD" and not arguments:
            yield ("test",), 'a "CMD" test needs the command after it: ["CMD", "curl", "-f", ...]'
        elif kind == "CMD-SHELL" and len(arguments) != 1:
            yield ("test",), 'a "CMD-SHELL" test takes one shell command: ["CMD-SHELL", "..."]'
        elif kind == "NONE" and arguments:
            yield ("test",), 'a "NONE" test takes nothing after it'
        elif kind not in ("CMD", "CMD-SHELL", "NONE"):
            yield ("test", 0), f'{kind!r} is not "CMD", "CMD-SHELL" or "NONE"'
        for field in ("interval", "timeout", "start_period"):
            value = getattr(self, field)
            if value is not None and duration_ns(value) == 0:
                yield (to_camel(field),), f"{to_camel(field)} must be longer than 0s"


_DEFAULT_NETWORK_MODES = ("bridge", "default")


class Container(Model):
    """One image and everything needed to run it; the image's own command is used."""

    name: DnsLabel
    image: ImageRef = Field(description="Docker image reference, used verbatim.")
    image_credential: DnsLabel | None = Field(None, description="Name of an ImageCredential.")
    hostname: Hostname | None = None
    env: dict[EnvName, str] = Field(default_factory=dict)
    restart_policy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    network_mode: str = Field("bridge", min_length=1)
    networks: list[DnsLabel] = Field(default_factory=list)
    volumes: list[VolumeMount] = Field(default_factory=list)
    binds: list[Bind] = Field(default_factory=list)
    port_bindings: list[PortBinding] = Field(default_factory=list)
    extra_hosts: list[ExtraHost] = Field(default_factory=list)
    privileged: bool = False
    cap_add: list[Capability] = Field(default_factory=list)
    cap_drop: list[Capability] = Field(default_factory=list)
    cpu: Cpu | None = None
    memory: Memory | None = None
    memory_reservation: Memory | None = None
    memory_swap: MemorySwap | None = None
    memory_swappiness: int | None = Field(None, ge=0, le=100)
    device_mappings: list[DeviceMapping] = Field(default_factory=list)
    device_requests: list[DeviceRequest] = Field(default_factory=list)
    read_only_rootfs: bool = False
    tmpfs: list[Tmpfs] = Field(default_factory=list)
    storage_opt: dict[str, str] = Field(default_factory=dict)
    depends_on: list[DnsLabel] = Field(default_factory=list)
    healthcheck: Annotated[Healthcheck | None, LATER] = None

    def findings(self) -> Iterator[Finding]:
        yield from _unique_mounts(self)
        if self.healthcheck is not None:
            for path, message in self.healthcheck.findings():
                yield ("healthcheck", *path), message
        yield from _unique(self.networks, "networks", "network")
        cpu = self.cpu
        if cpu is not None and (cpu.period is None) != (cpu.quota is None):
            missing = "quota" if cpu.quota is None else "period"
            yield ("cpu", missing), "set both cpu.period and cpu.quota, or neither"
        if (
            cpu is not None
            and cpu.realtime_period is not None
            and cpu.realtime_runtime is not None
            and cpu.realtime_runtime > cpu.realtime_period
        ):
            yield ("cpu", "realtimeRuntime"), "realtimeRuntime must not exceed realtimePeriod"
        reservation, memory = self.memory_reservation, self.memory
        if reservation is not None and memory is not None and reservation > memory:
            yield ("memoryReservation",), "memoryReservation must not exceed memory"
        if self.memory_swap is not None:
            if self.memory is None:
                yield ("memorySwap",), "memorySwap needs memory to be set too"
            elif self.memory_swap != -1 and self.memory_swap < self.memory:
                yield ("memorySwap",), "memorySwap must be at least memory (or -1 for unlimited)"
        for i, request in enumerate(self.device_requests):
            if request.count is not None and request.device_ids:
                yield ("deviceRequests", i, "count"), "set count or deviceIds, not both"
        mode = self.network_mode
        if mode not in _DEFAULT_NETWORK_MODES and (mode in ("host", "none") or ":" in mode):
            if self.networks:
                yield ("networks",), f"networkMode {mode!r} cannot be combined with networks"
            if self.port_bindings:
                yield ("portBindings",), f"networkMode {mode!r} cannot publish ports"


def _unique(values: list[str], field: str, what: str) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            yield (field, i), f"{what} {value!r} is listed twice"
        seen.add(value)


def _unique_mounts(container: Container) -> Iterator[Finding]:
    """Docker refuses two mounts on one path: volumes, binds and tmpfs share the namespace."""
    seen: dict[str, str] = {}
    mounts: list[tuple[tuple[str | int, ...], str]]
    mounts = [(("volumes", i, "target"), v.target) for i, v in enumerate(container.volumes)]
    mounts += [(("binds", i), b.split(":")[1]) for i, b in enumerate(container.binds)]
    mounts += [(("tmpfs", i, "path"), t.path) for i, t in enumerate(container.tmpfs)]
    for path, target in mounts:
        where = render_path(path[:2])
        key = target.rstrip("/") or "/"
        if key in seen:
            yield path, f"mount target {target!r} is already used by {seen[key]}"
        else:
            seen[key] = where


class ReleaseSpec(Spec):
    application: DnsLabel = Field(description="Name of the Application.")
    version: Version = Field(description="Semantic Versioning 2.0.0; unique per application.")
    supported_system_models: list[str] = Field(
        default_factory=list, description="Device system models; empty means any."
    )
    containers: list[Container] = Field(min_length=1)

    def findings(self) -> Iterator[Finding]:
        names: dict[str, int] = {}
        for i, container in enumerate(self.containers):
            if container.name in names:
                yield (
                    ("containers", i, "name"),
                    (
                        f"container name {container.name!r} is already used by containers"
                        f"[{names[container.name]}]"
                    ),
                )
            names.setdefault(container.name, i)
            for path, message in container.findings():
                yield ("containers", i, *path), message
        for i, container in enumerate(self.containers):
            for j, dep in enumerate(container.depends_on):
                if dep == container.name:
                    yield ("containers", i, "dependsOn", j), "a container cannot depend on itself"
                elif dep not in names:
                    yield (
                        ("containers", i, "dependsOn", j),
                        (
                            f"no container {dep!r} in this release; dependsOn names containers "
                            f"of the same release ({', '.join(sorted(names))})"
                        ),
                    )
        cycle = _find_cycle({c.name: c.depends_on for c in self.containers})
        if cycle:
            i = names[cycle[0]]
            yield ("containers", i, "dependsOn"), "dependsOn has a cycle: " + " -> ".join(cycle)


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if dep == node or dep not in graph:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


class Release(Manifest):
    """One version of an application: its containers and the system models it supports."""

    plural = "releases"
    kind: Literal["Release"]
    spec: ReleaseSpec
