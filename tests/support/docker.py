"""A real Docker engine, local images and a private registry for tests: no mocks, no internet.

`docker_engine` starts a private dockerd as root (vfs storage, no iptables) in a short temporary
folder and stops it by its pid at the end of the session. `images` imports tiny busybox images
(no registry needed; tagged again for each test) and `registry` runs Debian's `docker-registry`
on 127.0.0.1 with an htpasswd file and pushes a private image to it. Every daemon writes to a
log file, reads /dev/null, and is stopped by the pid recorded at its start, so none can keep
CI's output open. Missing programs fail the tests with the Debian package to install
(`make test` installs them through tests/system-deps.sh); nothing is skipped.

The daemons are the demo's (`reconciler.demo`), so tests and `hedgerow demo` run the same parts
the same way; tests add a docker SDK client to look at the engine as a user would. The fixtures
are registered for every test by `tests/conftest.py`; a test using one is marked `e2e`.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import docker
import pytest

from agent.steps import normalise_image
from reconciler.demo import images as demo_images
from reconciler.demo.daemons import SandboxError, free_port
from reconciler.demo.engine import MANAGED, Engine, start_dockerd
from reconciler.demo.registry import RegistryServer, start_registry

HTTP_PORT = 8080  # what the app images serve /www on
T = TypeVar("T")


def _or_fail(make: Callable[[], T]) -> T:
    try:
        return make()
    except SandboxError as error:
        _fail(error)


def _fail(error: SandboxError) -> NoReturn:
    pytest.fail(str(error), pytrace=False)


@dataclass
class DockerEngine:
    """Our dockerd (`engine`: host, root, process) and a docker SDK client connected to it."""

    engine: Engine
    client: docker.DockerClient

    @property
    def host(self) -> str:
        return self.engine.host

    def stop(self) -> None:
        self.client.close()
        self.engine.stop()

    def remove_managed(self) -> None:
        """Remove every container, network and volume Hedgerow made: a test's clean-up."""
        api, label = self.client.api, {"label": MANAGED}
        for container in api.containers(all=True, filters=label):
            api.remove_container(container["Id"], force=True, v=True)
        for network in api.networks(filters=label):
            api.remove_network(network["Id"])
        for volume in api.volumes(filters=label).get("Volumes") or []:
            api.remove_volume(volume["Name"], force=True)


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> DockerEngine:
    """One private dockerd for the session, stopped (and its folders removed) at its end."""
    engine = _or_fail(start_dockerd)
    started = DockerEngine(engine, docker.DockerClient(base_url=engine.host, timeout=120))
    request.addfinalizer(started.stop)
    return started


# -- images ---------------------------------------------------------------------------------------

# PID 1 ignores SIGTERM without a handler: the trap makes `docker stop` immediate, not 10 s.
SERVE = f'CMD ["sh", "-c", "trap \'exit 0\' TERM; httpd -f -p {HTTP_PORT} -h /www & wait"]'
SLEEP = """CMD ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]"""
FAIL = """CMD ["sh", "-c", "echo starting; exit 3"]"""


@dataclass(frozen=True)
class Images:
    """Local images: `v1`/`v2` serve /www/VERSION ("1"/"2") over HTTP on port 8080, `sleeper`
    only sleeps, `failing` exits with code 3 at once."""

    v1: str = "local/app:1"
    v2: str = "local/app:2"
    sleeper: str = "local/sleeper:1"
    failing: str = "local/fail:1"

    def references(self) -> tuple[str, ...]:
        return (self.v1, self.v2, self.sleeper, self.failing)


def load_images(engine: DockerEngine) -> dict[str, str]:
    """Import the local images into `engine`, by reference → id (a few MB each on vfs).

    An agent removes the image of a release it removes; a created, never started container of
    each (not Hedgerow's) keeps the image itself on the engine, so `tag_again` can tag it again.
    """
    busybox = _or_fail(demo_images.busybox)
    made = Images()
    api = engine.client.api
    ids: dict[str, str] = {}
    for reference, version, cmd in zip(
        made.references(), ("1", "2", "sleeper", "fail"), (SERVE, SERVE, SLEEP, FAIL), strict=True
    ):
        tar = _or_fail(lambda: demo_images.rootfs_tar(busybox, version))  # noqa: B023
        _or_fail(lambda: engine.engine.import_image(reference, tar, cmd))  # noqa: B023
        ids[reference] = api.inspect_image(reference)["Id"]  # type: ignore[no-untyped-call]
        api.create_container(ids[reference], name=f"keeps-image-{version}")
    return ids


def tag_again(engine: DockerEngine, ids: dict[str, str]) -> Images:
    """The local images, each tagged again if an earlier test's agent removed it."""
    api = engine.client.api
    present = {normalise_image(t) for image in api.images() for t in image.get("RepoTags") or []}
    for reference, image_id in ids.items():
        if normalise_image(reference) not in present:  # Podman lists docker.io/local/app:1
            repository, tag = reference.rsplit(":", 1)
            api.tag(image_id, repository, tag)
    return Images()


@pytest.fixture(scope="session")
def local_images(docker_engine: DockerEngine) -> dict[str, str]:
    """The local images, imported once per session, by reference → id."""
    return load_images(docker_engine)


@pytest.fixture
def images(docker_engine: DockerEngine, local_images: dict[str, str]) -> Images:
    """The local images, each tagged again if an earlier test's agent removed it."""
    return tag_again(docker_engine, local_images)


# -- registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """A private registry on loopback holding `image` (tag removed from the engine again)."""

    host: str  # 127.0.0.1:PORT, also the serveraddress of credentials
    username: str
    password: str
    image: str

    def __repr__(self) -> str:  # the password stays out of pytest's failure output
        return f"Registry(host={self.host!r}, username={self.username!r}, image={self.image!r})"


def registry_server(request: pytest.FixtureRequest) -> RegistryServer:
    """`docker-registry` with htpasswd (bcrypt) on 127.0.0.1, stopped at the session's end."""
    root = Path(tempfile.mkdtemp(prefix="hedgerow-registry-"))
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    username, password = "robot", secrets.token_urlsafe(16)
    server = _or_fail(
        lambda: start_registry(root, username, password, free_port(), realm="hedgerow-tests")
    )
    request.addfinalizer(server.stop)
    return server


def push_private(server: RegistryServer, engine: DockerEngine, ids: dict[str, str]) -> Registry:
    """Push the local `v1` image as `private/app:1` through `engine`, and drop its tag there."""
    repository = f"{server.host}/private/app"
    engine.client.api.tag(ids[Images().v1], repository, "1")
    _or_fail(lambda: engine.engine.push(f"{repository}:1", server.auth))
    return Registry(server.host, server.username, server.password, f"{repository}:1")


@pytest.fixture(scope="session")
def registry(
    request: pytest.FixtureRequest, docker_engine: DockerEngine, local_images: dict[str, str]
) -> Registry:
    """`docker-registry` with htpasswd (bcrypt) on 127.0.0.1, holding `private/app:1`."""
    return push_private(registry_server(request), docker_engine, local_images)
