"""Podman for tests: the agent's end-to-end scenarios on a second Docker-API engine.

`podman_engine` starts a private `podman system service` as root (vfs storage, everything under
one short folder in /tmp) and stops it by its pid at the end of the session; it is a
`DockerEngine` like dockerd's, so the harness of `tests.support.e2e` drives it unchanged.
`podman_images` loads the same busybox images, and `podman_registry` pushes the private image
through Podman to a `docker-registry` of its own on 127.0.0.1, which the service was told to
reach over plain HTTP (Podman, unlike dockerd, does not treat loopback registries as insecure,
and reads its registries.conf once). Without `podman`, the tests fail naming the package.
"""

from __future__ import annotations

import docker
import pytest

from reconciler.demo.podman import start_podman
from reconciler.demo.registry import RegistryServer
from tests.support.docker import (
    DockerEngine,
    Images,
    Registry,
    _or_fail,
    load_images,
    push_private,
    registry_server,
    tag_again,
)


@pytest.fixture(scope="session")
def podman_registry_server(request: pytest.FixtureRequest) -> RegistryServer:
    """The registry of the Podman tests: its address must be known before Podman starts."""
    return registry_server(request)


@pytest.fixture(scope="session")
def podman_engine(
    request: pytest.FixtureRequest, podman_registry_server: RegistryServer
) -> DockerEngine:
    """One private Podman service for the session, stopped (its folders removed) at its end."""
    engine = _or_fail(lambda: start_podman(insecure_registries=[podman_registry_server.host]))
    started = DockerEngine(engine, docker.DockerClient(base_url=engine.host, timeout=120))
    request.addfinalizer(started.stop)
    return started


@pytest.fixture(scope="session")
def podman_local_images(podman_engine: DockerEngine) -> dict[str, str]:
    """The local images imported into Podman, by reference → id."""
    return load_images(podman_engine)


@pytest.fixture
def podman_images(podman_engine: DockerEngine, podman_local_images: dict[str, str]) -> Images:
    """The local images on Podman, each tagged again if an earlier test's agent removed it."""
    return tag_again(podman_engine, podman_local_images)


@pytest.fixture(scope="session")
def podman_registry(
    podman_registry_server: RegistryServer,
    podman_engine: DockerEngine,
    podman_local_images: dict[str, str],
) -> Registry:
    """The private registry holding `private/app:1`, pushed through Podman."""
    return push_private(podman_registry_server, podman_engine, podman_local_images)
