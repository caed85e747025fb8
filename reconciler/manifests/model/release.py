"""Release and its containers: everything a device needs to run one version of an application."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag
from pydantic.alias_generators import to_camel

from reconciler.manifests.model.base import Finding, Manifest, Spec
from reconciler.manifests.model.fields import (
    LATER,
    AbsolutePath,
    Bind,
    Bytes,
    Capability,
    CgroupPermissions,
    Command,
    ContainerLabel,
    DnsLabel,
    Duration,
    EnvName,
    ExtraHost,
    Group,
    Hostname,
    ImageRef,
    IpAddress,
    Ipv4Address,
    Ipv6Address,
    Memory,
    MemorySwap,
    Model,
    PortBinding,
    SiblingMode,
    Signal,
    SysctlKey,
    UlimitName,
    User,
    Version,
    Word,
)
from reconciler.manifests.problems import render_path
from reconciler.wire import duration_ns


class VolumeMount(Model):
    volume: DnsLabel = Field(description="Name of a Volume.")
    target: AbsolutePath
    read_only: Annotated[bool, LATER] = Field(False, description="compose's ':ro'.")


class NetworkAttachment(Model):
    """A network joined with a fixed address or more names than the container's own."""

    network: DnsLabel = Field(description="Name of a Network.")
    ipv4_address: Ipv4Address | None = Field(None, description="Within the Network's ipam.")
    ipv6_address: Ipv6Address | None = None
    aliases: list[DnsLabel] = Field(default_factory=list)


class Dependency(Model):
    condition: Literal["started", "healthy", "completedSuccessfully"] = Field(
        "started",
        description="started: once it runs; healthy: once its healthcheck passes; "
        "completedSuccessfully: once it has exited with 0 (a one-shot job).",
    )


class SecretKeyRef(Model):
    secret: DnsLabel = Field(description="Name of a Secret.")
    key: str = Field(min_length=1, description="One of its data keys.")


class EnvSource(Model):
    secret_key_ref: SecretKeyRef


class SecretFile(Model):
    """A Secret's value as a file: written by the agent to a tmpfs, bind-mounted read-only."""

    secret: DnsLabel = Field(description="Name of a Secret.")
    key: str = Field(min_length=1, description="One of its data keys.")
    target: AbsolutePath | None = Field(None, description="Default: /run/secrets/KEY.")
    mode: int = Field(0o400, ge=0, le=0o777, description="File mode; YAML 0400 is octal.")

    @property
    def path(self) -> str:
        return self.target or f"/run/secrets/{self.key}"


class Ulimit(Model):
    soft: int = Field(ge=-1)
    hard: int = Field(ge=-1)


class Logging(Model):
    driver: str = Field(min_length=1, description="Docker's log driver: local, json-file, ...")
    options: dict[str, Annotated[str, Word]] = Field(default_factory=dict)


def _as_name_or_mapping(value: Any) -> str:
    return "union:mapping" if isinstance(value, dict | Model) else "union:name"


def _as_list_or_mapping(value: Any) -> str:
    return "union:mapping" if isinstance(value, dict) else "union:list"


def _as_string_or_mapping(value: Any) -> str:
    """A mapping (or its model, when dumped) is the other form; anything else is a string, or
    gets the error a string gets."""
    return "union:mapping" if isinstance(value, dict | Model) else "union:string"


def _as_number_or_mapping(value: Any) -> str:
    return "union:mapping" if isinstance(value, dict | Model) else "union:number"


# Either form, as compose takes it; errors name the field, not the form tried (see check.py).
NetworkEntry = Annotated[
    Annotated[DnsLabel, Tag("union:name")] | Annotated[NetworkAttachment, Tag("union:mapping")],
    Discriminator(_as_name_or_mapping),
]
DependsOn = Annotated[
    Annotated[list[DnsLabel], Tag("union:list")]
    | Annotated[dict[DnsLabel, Dependency], Tag("union:mapping")],
    Discriminator(_as_list_or_mapping),
]
EnvValue = Annotated[
    Annotated[str, Tag("union:string")] | Annotated[EnvSource, Tag("union:mapping")],
    Discriminator(_as_string_or_mapping),
]
UlimitValue = Annotated[
    Annotated[int, Tag("union:number")] | Annotated[Ulimit, Tag("union:mapping")],
    Discriminator(_as_number_or_mapping),
]


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
    """One image and everything needed to run it, as compose describes a service; what is not
    set is the image's (its command, user, working directory) or Docker's default."""

    name: DnsLabel
    image: ImageRef = Field(description="Docker image reference, used verbatim.")
    image_credential: DnsLabel | None = Field(None, description="Name of an ImageCredential.")
    hostname: Hostname | None = None
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict, description="A string, or {secretKeyRef: {secret, key}}."
    )
    restart_policy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    network_mode: str = Field("bridge", min_length=1)
    networks: list[NetworkEntry] = Field(
        default_factory=list,
        description="Names of Networks, or {network, ipv4Address, ipv6Address, aliases}.",
    )
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
    depends_on: DependsOn = Field(
        default_factory=list,
        description="Containers started first: a list (started), or name: {condition}.",
    )
    healthcheck: Annotated[Healthcheck | None, LATER] = None
    command: Annotated[Command | None, LATER] = Field(
        None, description="Replaces the image's CMD; a string is split into words as compose does."
    )
    entrypoint: Annotated[Command | None, LATER] = Field(
        None, description="Replaces the image's ENTRYPOINT; a string is split as compose does."
    )
    user: Annotated[User | None, LATER] = Field(None, description="uid[:gid] or name[:group].")
    working_dir: Annotated[AbsolutePath | None, LATER] = None
    group_add: Annotated[list[Group], LATER] = Field(default_factory=list)
    max_retries: Annotated[int | None, LATER] = Field(
        None, ge=0, description="With restartPolicy on-failure: how many restarts at most."
    )
    sysctls: Annotated[dict[SysctlKey, Word], LATER] = Field(default_factory=dict)
    security_opt: Annotated[list[str], LATER] = Field(default_factory=list)
    shm_size: Annotated[Bytes | None, LATER] = Field(None, description="Size of /dev/shm.")
    ulimits: Annotated[dict[UlimitName, UlimitValue], LATER] = Field(
        default_factory=dict, description="A number (soft and hard), or {soft, hard}."
    )
    init: Annotated[bool | None, LATER] = Field(None, description="Run an init as PID 1.")
    stop_signal: Annotated[Signal | None, LATER] = None
    stop_grace_period: Annotated[Duration | None, LATER] = Field(
        None, description="Between the stop signal and SIGKILL (Docker's default: 10s)."
    )
    tty: Annotated[bool, LATER] = False
    labels: Annotated[dict[ContainerLabel, str], LATER] = Field(
        default_factory=dict, description="Docker labels; the prefix hedgerow. is reserved."
    )
    dns: Annotated[list[IpAddress], LATER] = Field(default_factory=list)
    dns_search: Annotated[list[Hostname], LATER] = Field(default_factory=list)
    pid_mode: Annotated[SiblingMode | None, LATER] = Field(
        None, description="host, or container:NAME (a container of this release)."
    )
    ipc_mode: Annotated[SiblingMode | None, LATER] = Field(
        None, description="none, private, shareable, host, or container:NAME."
    )
    logging: Annotated[Logging | None, LATER] = Field(
        None, description="On flash storage, prefer the local driver with a max-size."
    )
    volume_driver: Annotated[str | None, LATER] = Field(None, min_length=1)
    secrets: Annotated[list[SecretFile], LATER] = Field(
        default_factory=list, description="Secret values as read-only files, never on disk."
    )

    @property
    def secret_refs(self) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
        """(path in the manifest, secret, key) of each Secret value this container uses."""
        for name, value in self.env.items():
            if not isinstance(value, str):
                ref = value.secret_key_ref
                yield ("env", name, "secretKeyRef"), ref.secret, ref.key
        for i, file in enumerate(self.secrets):
            yield ("secrets", i), file.secret, file.key

    @property
    def network_names(self) -> list[str]:
        return [n if isinstance(n, str) else n.network for n in self.networks]

    @property
    def dependencies(self) -> dict[str, str]:
        """Each container this one needs first, with the condition to wait for."""
        if isinstance(self.depends_on, list):
            return dict.fromkeys(self.depends_on, "started")
        return {name: d.condition for name, d in self.depends_on.items()}

    def dependency_paths(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """(path in the manifest, name) of each dependency, for findings at its line."""
        if isinstance(self.depends_on, list):
            for i, name in enumerate(self.depends_on):
                yield ("dependsOn", i), name
        else:
            for name in self.depends_on:
                yield ("dependsOn", name), name

    def siblings(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """(path, name) of each container whose namespace this one joins (`container:NAME`):
        a container of the release by its name there, or another on the device."""
        for field in ("network_mode", "pid_mode", "ipc_mode"):
            mode = getattr(self, field)
            if mode is not None and mode.startswith("container:"):
                yield (to_camel(field),), mode.removeprefix("container:")

    def findings(self) -> Iterator[Finding]:
        yield from _unique_mounts(self)
        if self.healthcheck is not None:
            for path, message in self.healthcheck.findings():
                yield ("healthcheck", *path), message
        yield from _unique(self.network_names, "networks", "network")
        if self.max_retries is not None and self.restart_policy != "on-failure":
            yield ("maxRetries",), "maxRetries goes with restartPolicy on-failure"
        for name, limit in self.ulimits.items():
            if isinstance(limit, Ulimit) and limit.soft > limit.hard >= 0:
                yield ("ulimits", name, "soft"), f"ulimit {name}: soft must not exceed hard"
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
    mounts += [(("secrets", i, "target"), f.path) for i, f in enumerate(container.secrets)]
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
        known = ", ".join(sorted(names))
        for i, container in enumerate(self.containers):
            for path, dep in container.dependency_paths():
                if dep == container.name:
                    yield ("containers", i, *path), "a container cannot depend on itself"
                elif dep not in names:
                    yield (
                        ("containers", i, *path),
                        (
                            f"no container {dep!r} in this release; dependsOn names containers "
                            f"of the same release ({known})"
                        ),
                    )
            for path, sibling in container.siblings():
                if sibling == container.name:
                    yield ("containers", i, *path), "a container cannot join its own namespace"
        by_name = {c.name: c for c in self.containers}
        for i, container in enumerate(self.containers):
            for path, dep in container.dependency_paths():
                one_shot = container.dependencies[dep] == "completedSuccessfully"
                policy = by_name[dep].restart_policy if dep in by_name else "no"
                if one_shot and policy not in ("no", "on-failure"):
                    yield (
                        ("containers", i, *path),
                        f"{dep!r} must run to completion, but its restartPolicy {policy!r} "
                        "restarts it when it exits: give it restartPolicy 'no' or 'on-failure'",
                    )
        cycle = _find_cycle({c.name: list(c.dependencies) for c in self.containers})
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
