"""The manifest kinds, one pydantic model each; the CRDs are generated from them."""

from __future__ import annotations

from reconciler.manifests.model.base import Manifest, Metadata
from reconciler.manifests.model.credential import ImageCredential
from reconciler.manifests.model.deployment import Deployment
from reconciler.manifests.model.release import Container, Release
from reconciler.manifests.model.secret import Secret
from reconciler.manifests.model.simple import Application, Device, Network, Volume

KINDS: dict[str, type[Manifest]] = {
    model.__name__: model
    for model in (
        Application,
        Release,
        ImageCredential,
        Secret,
        Volume,
        Network,
        Device,
        Deployment,
    )
}

__all__ = [
    "KINDS",
    "Application",
    "Container",
    "Deployment",
    "Device",
    "ImageCredential",
    "Manifest",
    "Metadata",
    "Network",
    "Release",
    "Secret",
    "Volume",
]
