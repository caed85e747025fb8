"""The small kinds: Application, Volume, Network, Device."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reconciler.manifests.model.base import Manifest, Spec


class ApplicationSpec(Spec):
    description: str = ""


class Application(Manifest):
    """A named application; its releases refer to it."""

    plural = "applications"
    kind: Literal["Application"]
    spec: ApplicationSpec = Field(default_factory=ApplicationSpec)


class VolumeSpec(Spec):
    driver: str = Field("local", min_length=1)
    options: dict[str, str] = Field(default_factory=dict)
    deletion_policy: Literal["Retain", "Delete"] = Field(
        "Retain", description="Delete removes the data when no deployment on a device uses it."
    )


class Volume(Manifest):
    plural = "volumes"
    kind: Literal["Volume"]
    spec: VolumeSpec = Field(default_factory=VolumeSpec)


class NetworkSpec(Spec):
    driver: str = Field("bridge", min_length=1)
    options: dict[str, str] = Field(default_factory=dict)
    enable_ipv6: bool = False
    internal: bool = False


class Network(Manifest):
    plural = "networks"
    kind: Literal["Network"]
    spec: NetworkSpec = Field(default_factory=NetworkSpec)


class DeviceSpec(Spec):
    system_model: str = Field(min_length=1, max_length=253)


class Device(Manifest):
    """A device of the fleet; selectors match its metadata.labels."""

    plural = "devices"
    kind: Literal["Device"]
    spec: DeviceSpec
