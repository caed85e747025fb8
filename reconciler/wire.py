"""The wire contract between the controller and device agents, and nothing else.

Both sides import this module; the agent imports nothing else of `reconciler`, so a device
installs only what it needs. Values here were validated by the controller: types are plain.
Registry credentials travel only in `DesiredDocument.registry_auth`, keyed by image (never by
the credential's name), and only for images the device has not reported present.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

WIRE_VERSION = "v1"


class Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, frozen=True
    )


class Mount(Wire):
    volume: str
    target: str


class Tmpfs(Wire):
    path: str
    options: str = ""


class Cpu(Wire):
    period: int | None = None
    quota: int | None = None
    realtime_period: int | None = None
    realtime_runtime: int | None = None


class DeviceMapping(Wire):
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str = "rwm"


class DeviceRequest(Wire):
    driver: str = ""
    count: int | None = None
    device_ids: list[str] = Field(default_factory=list)
    capabilities: list[list[str]] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)


class Container(Wire):
    """One container of a release, as the agent creates it (memory values in bytes)."""

    name: str
    image: str
    hostname: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    restart_policy: str = "unless-stopped"
    network_mode: str = "bridge"
    networks: list[str] = Field(default_factory=list)
    volumes: list[Mount] = Field(default_factory=list)
    binds: list[str] = Field(default_factory=list)
    port_bindings: list[str] = Field(default_factory=list)
    extra_hosts: list[str] = Field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    cpu: Cpu | None = None
    memory: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    memory_swappiness: int | None = None
    device_mappings: list[DeviceMapping] = Field(default_factory=list)
    device_requests: list[DeviceRequest] = Field(default_factory=list)
    read_only_rootfs: bool = False
    tmpfs: list[Tmpfs] = Field(default_factory=list)
    storage_opt: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)


class Volume(Wire):
    name: str
    driver: str = "local"
    options: dict[str, str] = Field(default_factory=dict)
    deletion_policy: Literal["Retain", "Delete"] = "Retain"


class Network(Wire):
    name: str
    driver: str = "bridge"
    options: dict[str, str] = Field(default_factory=dict)
    enable_ipv6: bool = False
    internal: bool = False


class Deployment(Wire):
    """One application on the device: which release, in which state, and all it needs."""

    deployment: str
    application: str
    release: str
    state: Literal["Running", "Stopped"]
    redeploy: str | None = None
    digest: str
    containers: list[Container]
    volumes: list[Volume] = Field(default_factory=list)
    networks: list[Network] = Field(default_factory=list)


class RegistryAuth(Wire):
    """Credentials for pulling one image; never written to disk or logged by the agent."""

    image: str
    serveraddress: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryAuth(image={self.image!r}, serveraddress={self.serveraddress!r}, ...)"

    __str__ = __repr__


class DesiredDocument(Wire):
    """GET /v1/devices/{name}/desired."""

    device: str
    revision: str
    deployments: list[Deployment]
    registry_auth: list[RegistryAuth] = Field(default_factory=list)


class ContainerReport(Wire):
    name: str
    state: str  # Docker's: created, running, exited, ... or "missing"
    image_present: bool
    error: str | None = None


class ReleaseReport(Wire):
    """One release of an application as found on the engine (by its hedgerow.* labels)."""

    application: str
    release: str
    deployment: str
    running: bool
    complete: bool
    redeploy: str | None = None
    digest: str | None = None
    error: str | None = None
    containers: list[ContainerReport] = Field(default_factory=list)


EventKind = Literal["starting", "started", "stopping", "stopped", "updating", "deleting", "error"]


class Event(Wire):
    seq: int = Field(ge=1, description="Numbered by the agent; a retried report repeats them.")
    at: str  # RFC 3339
    kind: EventKind
    message: str
    deployment: str | None = None


class StatusReport(Wire):
    """PUT /v1/devices/{name}/status."""

    device: str
    revision: str | None = None  # the desired revision the agent last applied
    releases: list[ReleaseReport] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)  # image references present on the engine
    events: list[Event] = Field(default_factory=list)
