"""The wire contract between the controller and device agents, and nothing else.

Both sides import this module; the agent imports nothing else of `reconciler`, so a device
installs only what it needs. The types are msgspec Structs rather than pydantic models: typed
JSON decoding without pydantic's import cost, which an idle agent would pay in resident memory.
What the controller sends was validated by it: those types are plain. What an agent reports is
bounded here (lengths, numbers, times), so the controller refuses a bad report as it decodes it.
Unknown fields are ignored.
Registry credentials travel only in `DesiredDocument.registry_auth`, keyed by image (never by
the credential's name), and only for images the device has not reported present.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import field

WIRE_VERSION = "v1"

DURATION_PATTERN = r"(?:([0-9]+)(h|ms|m|s|us))+"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]+)(h|ms|m|s|us)")
_NANOSECONDS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3}
MAX_DURATION_NS = 2**63 - 1  # Docker takes durations as int64 nanoseconds


def duration_ns(value: str) -> int:
    """Nanoseconds of a duration written as compose and Docker write them (`30s`, `1m30s`,
    `500ms`, `2h`): whole numbers, each with its unit. Durations travel as written; the
    manifests check them with this, and the agent gives Docker their nanoseconds."""
    if not _DURATION.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a duration: write whole numbers with units h, m, s, ms or us, "
            "such as '30s' or '1m30s'"
        )
    total = sum(int(n) * _NANOSECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    if total > MAX_DURATION_NS:
        raise ValueError(f"duration {value!r} is longer than Docker accepts")
    return total


class Healthcheck(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Docker's healthcheck: `test` as compose writes it, durations as written."""

    test: list[str]
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    start_period: str | None = None


class Mount(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    volume: str
    target: str
    read_only: bool = False


class Endpoint(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """How a container joins one network beyond its name: a fixed address, more aliases."""

    ipv4_address: str | None = None
    ipv6_address: str | None = None
    aliases: list[str] = field(default_factory=list)


class Ulimit(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    soft: int
    hard: int


class SecretRef(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A Secret's value by name: the value travels apart, in `DesiredDocument.secrets`."""

    secret: str
    key: str


class SecretFile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A Secret's value as a read-only file at `target`, written by the agent to a tmpfs."""

    secret: str
    key: str
    target: str
    mode: int = 0o400


class Logging(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    driver: str
    options: dict[str, str] = field(default_factory=dict)


class Tmpfs(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    path: str
    options: str = ""


class Cpu(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    period: int | None = None
    quota: int | None = None
    realtime_period: int | None = None
    realtime_runtime: int | None = None


class DeviceMapping(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str = "rwm"


class DeviceRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    driver: str = ""
    count: int | None = None
    device_ids: list[str] = field(default_factory=list)
    capabilities: list[list[str]] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)


class Container(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """One container of a release, as the agent creates it (memory values in bytes). Fields at
    their default are left out of the JSON: a document carries what its releases set.

    `networks` names the networks (as older agents read them); `endpoints` adds, per network,
    what joining it takes beyond the name. `dependsOn` names what starts first; `waitFor` the
    dependencies to wait for beyond their start (healthy, completedSuccessfully)."""

    name: str
    image: str
    hostname: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart_policy: str = "unless-stopped"
    network_mode: str = "bridge"
    networks: list[str] = field(default_factory=list)
    volumes: list[Mount] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    port_bindings: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    cpu: Cpu | None = None
    memory: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    memory_swappiness: int | None = None
    device_mappings: list[DeviceMapping] = field(default_factory=list)
    device_requests: list[DeviceRequest] = field(default_factory=list)
    read_only_rootfs: bool = False
    tmpfs: list[Tmpfs] = field(default_factory=list)
    storage_opt: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    healthcheck: Healthcheck | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    wait_for: dict[str, Literal["healthy", "completedSuccessfully"]] = field(default_factory=dict)
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    user: str | None = None
    working_dir: str | None = None
    group_add: list[str] = field(default_factory=list)
    max_retries: int | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    security_opt: list[str] = field(default_factory=list)
    shm_size: int | None = None
    ulimits: dict[str, Ulimit] = field(default_factory=dict)
    init: bool | None = None
    stop_signal: str | None = None
    stop_grace_period: str | None = None  # a duration, as written
    tty: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    pid_mode: str | None = None
    ipc_mode: str | None = None
    logging: Logging | None = None
    volume_driver: str | None = None
    secret_env: dict[str, SecretRef] = field(default_factory=dict)  # beside `env`
    secrets: list[SecretFile] = field(default_factory=list)


class Volume(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    driver: str = "local"
    options: dict[str, str] = field(default_factory=dict)
    deletion_policy: Literal["Retain", "Delete"] = "Retain"


class IpamPool(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    subnet: str
    gateway: str | None = None
    ip_range: str | None = None


class Network(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    driver: str = "bridge"
    options: dict[str, str] = field(default_factory=dict)
    enable_ipv6: bool = False
    internal: bool = False
    ipam: list[IpamPool] = field(default_factory=list)


class Readiness(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """When the device counts a release Ready, and when it gives up on it and switches back."""

    min_ready_seconds: int = 10  # every container running, and healthy if checked, this long
    progress_deadline_seconds: int = 300  # not Ready this long after a switch: switch back


DEFAULT_READINESS = Readiness()


class Deployment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One application on the device: which release, in which state, and all it needs.
    `readiness` is absent (None) when it is the default, so documents that do not set it
    keep their bytes."""

    deployment: str
    application: str
    release: str
    state: Literal["Running", "Stopped"]
    redeploy: str | None = None
    digest: str
    containers: list[Container]
    volumes: list[Volume] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
    readiness: Readiness | None = None

    @property
    def ready_after(self) -> Readiness:
        return self.readiness or DEFAULT_READINESS


class RegistryAuth(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Credentials for pulling one image; never written to disk or logged by the agent."""

    image: str
    serveraddress: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryAuth(image={self.image!r}, serveraddress={self.serveraddress!r}, ...)"

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """msgspec gives Structs a rich repr of every field: rich must not print the password."""
        return [("image", self.image), ("serveraddress", self.serveraddress)]


class SecretValue(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One value of a Secret the device's containers use; never written to disk or logged by
    the agent, and its repr hides it."""

    secret: str
    key: str
    value: str

    def __repr__(self) -> str:
        return f"SecretValue(secret={self.secret!r}, key={self.key!r}, ...)"

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("secret", self.secret), ("key", self.key)]


class DesiredDocument(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """GET /v1/devices/{name}/desired. `secrets` holds the values of every Secret key its
    containers use, and only those."""

    device: str
    revision: str
    deployments: list[Deployment]
    registry_auth: list[RegistryAuth] = field(default_factory=list)
    secrets: list[SecretValue] = field(default_factory=list)


# -- what an agent reports: every number, time, string and list bounded --------------------------
# A report is decoded before anything else looks at it, so its bounds are its first defence: a
# value outside them is refused with 422 naming its JSON path, never stored or half-stored.

MAX_EVENTS = 500  # per report: an agent sends its oldest first and the rest in the next report
MAX_RELEASES = 1_000  # releases found on one engine
MAX_CONTAINERS = 1_000  # containers of one release
MAX_IMAGES = 4_096  # image references present on one engine
MAX_SHORT = 1_024  # names, versions, references, states, digests, revisions
MAX_TEXT = 8_192  # event messages and errors, in characters: the agent clips longer ones
MAX_SEQ = 2**63 - 1  # a signed 64-bit integer, as both databases store it
# The agent keeps the events of one report under this many bytes of JSON, well below the
# controller's cap on a report's body.
REPORT_EVENT_BYTES = 512 * 1024
_NO_NUL = r"^[^\x00]*$"  # PostgreSQL's text cannot hold U+0000
# RFC 3339, as datetime.fromisoformat reads it; the offset is checked apart, with its own message
_RFC3339 = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$"

Short = Annotated[str, msgspec.Meta(max_length=MAX_SHORT, pattern=_NO_NUL)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT, pattern=_NO_NUL)]
Epoch = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Za-z0-9_-]{8,64}$",
        description="The agent's journal: a random id made when the journal is created. "
        "Sequence numbers count within it; a new one means the journal started again.",
    ),
]
Timestamp = Annotated[
    str, msgspec.Meta(max_length=40, pattern=_RFC3339, description="RFC 3339, with its offset.")
]


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text` fitted to a bounded wire string: no NUL, at most `limit` characters. The agent
    clips what it did not write itself (engine errors), so no report of its own is refused."""
    text = text.replace("\x00", "\ufffd")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


MAX_LOG_LINES = 20  # of a failing container's log, in a Degraded report
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class ContainerReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: Short
    state: Short  # Docker's: created, running, exited, ... or "missing"
    image_present: bool
    error: Text | None = None
    health: Short | None = None  # Docker's: starting, healthy, unhealthy; None: no healthcheck
    restarts: Count | None = None  # Docker's RestartCount


class Degraded(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Why the agent gave up on a release and switched back: for the operator, not for a plan."""

    reason: Text
    container: Short | None = None  # the failing container's name in the release
    health: Text | None = None  # its last healthcheck output
    log: Annotated[list[Text], msgspec.Meta(max_length=MAX_LOG_LINES)] = field(
        default_factory=list
    )  # its last log lines, oldest first


class ReleaseReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One release of an application as found on the engine (by its hedgerow.* labels)."""

    application: Short
    release: Short
    deployment: Short
    running: bool
    complete: bool
    redeploy: Text | None = None
    digest: Short | None = None
    error: Text | None = None
    containers: Annotated[list[ContainerReport], msgspec.Meta(max_length=MAX_CONTAINERS)] = field(
        default_factory=list
    )
    # True once every container has run (healthy, where checked) for the deployment's
    # minReadySeconds; None from an agent that does not judge readiness (running is then all)
    ready: bool | None = None
    degraded: Degraded | None = None  # set with `error` when the agent switched back from it


EventKind = Literal["starting", "started", "stopping", "stopped", "updating", "deleting", "error"]
Seq = Annotated[
    int,
    msgspec.Meta(
        ge=1, le=MAX_SEQ, description="Numbered by the agent; a retried report repeats them."
    ),
]


class Event(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    seq: Seq
    at: Timestamp
    kind: EventKind
    message: Text
    deployment: Short | None = None


Bytes = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
DnsLabel = Annotated[
    str,
    msgspec.Meta(
        max_length=63,
        pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A DNS label (RFC 1123), as a Device's metadata.name.",
    ),
]


class Facts(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """What a device is, as its agent sees it: sent at enrollment and in every report, for
    people (`hedgerow status --device`, the dashboard), never for a plan. `disk_free_bytes`
    is rounded down by the agent (see `agent.facts`), so a report's facts change rarely."""

    architecture: Short | None = None  # `uname -m`: x86_64, aarch64, armv7l
    os: Short | None = None  # PRETTY_NAME of /etc/os-release
    kernel: Short | None = None  # `uname -r`
    engine: Short | None = None  # docker, podman
    engine_version: Short | None = None
    memory_bytes: Bytes | None = None
    disk_bytes: Bytes | None = None  # of the filesystem holding the engine's data
    disk_free_bytes: Bytes | None = None


class EnrollRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """POST /v1/enroll, with an enrollment token: a device asks to join under `device`."""

    device: DnsLabel
    system_model: Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=_NO_NUL)]
    facts: Facts = field(default_factory=Facts)


class Enrolled(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The answer to an enrollment: the device's own token, shown this once. The agent keeps
    it (0600) and never sends the enrollment token again."""

    device: str
    token: str

    def __repr__(self) -> str:
        return f"Enrolled(device={self.device!r}, ...)"

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("device", self.device)]


class StatusReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """PUT /v1/devices/{name}/status."""

    device: Short
    revision: Short | None = None  # the desired revision the agent last applied
    releases: Annotated[list[ReleaseReport], msgspec.Meta(max_length=MAX_RELEASES)] = field(
        default_factory=list
    )
    # image references present on the engine
    images: Annotated[list[Short], msgspec.Meta(max_length=MAX_IMAGES)] = field(
        default_factory=list
    )
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS)] = field(
        default_factory=list
    )
    epoch: Epoch | None = None  # None from agents older than journal epochs
    facts: Facts | None = None  # None from agents older than facts
