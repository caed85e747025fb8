"""The small kinds: Application, Volume, Network, Device."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field

from reconciler.manifests.model.base import Finding, Manifest, Spec
from reconciler.manifests.model.fields import LATER, IpAddress, Model, Subnet


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


class IpamPool(Model):
    subnet: Subnet
    gateway: IpAddress | None = None
    ip_range: Subnet | None = Field(None, description="Where Docker picks addresses from.")

    def findings(self) -> Iterator[Finding]:
        subnet = ipaddress.ip_network(self.subnet)
        if self.gateway is not None and ipaddress.ip_address(self.gateway) not in subnet:
            yield ("gateway",), f"gateway {self.gateway} is outside the subnet {self.subnet}"
        if self.ip_range is not None:
            pool = ipaddress.ip_network(self.ip_range)
            if pool.version != subnet.version or not pool.subnet_of(subnet):  # type: ignore[arg-type]
                yield ("ipRange",), f"ipRange {self.ip_range} is outside the subnet {self.subnet}"


class NetworkSpec(Spec):
    driver: str = Field("bridge", min_length=1, description="Any driver: bridge, macvlan, ...")
    options: dict[str, str] = Field(default_factory=dict)
    enable_ipv6: bool = False
    internal: bool = False
    ipam: Annotated[list[IpamPool], LATER] = Field(
        default_factory=list, description="Subnets, for containers with a fixed address."
    )

    def findings(self) -> Iterator[Finding]:
        for i, pool in enumerate(self.ipam):
            for path, message in pool.findings():
                yield ("ipam", i, *path), message

    def contains(self, address: str) -> bool:
        """Whether `address` is in one of the subnets."""
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(pool.subnet) for pool in self.ipam)


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
