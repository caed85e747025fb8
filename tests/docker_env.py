"""A real Docker engine, local images and a private registry for tests: no mocks, no internet.

`docker_engine` starts a private dockerd as root (vfs storage, no iptables) in a short temporary
folder — unix socket paths are limited to 108 bytes — and stops it by its pid at the end of the
session. `images` imports tiny busybox images (no registry needed) and `registry` runs Debian's
`docker-registry` on 127.0.0.1 with an htpasswd file and pushes a private image to it. Every
daemon writes to a log file, reads /dev/null, and is stopped by the pid recorded at its start,
so none can keep CI's output open. Missing programs fail the tests with the Debian package to
install (`make test` installs them through tests/system-deps.sh); nothing is skipped.

The parts themselves live in `reconciler.sandbox`, shared with `hedgerow demo`; the fixtures here
turn its errors into test failures and tie each daemon's life to the session.

Use the fixtures by importing them into a test module:
`from docker_env import docker_engine, images, registry`.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from reconciler import sandbox
from reconciler.sandbox import DockerEngine, free_port, import_image, rootfs_tar

__all__ = ["DockerEngine", "Images", "Registry", "import_image", "rootfs_tar"]

HTTP_PORT = 8080  # what the app images serve /www on
T = TypeVar("T")


def _fail(error: sandbox.SandboxError) -> NoReturn:
    pytest.fail(str(error), pytrace=False)


def _or_fail(make: Callable[[], T]) -> T:
    try:
        return make()
    except sandbox.SandboxError as error:
        _fail(error)


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> DockerEngine:
    """One private dockerd for the session, stopped (and its folders removed) at its end."""
    engine = _or_fail(sandbox.start_dockerd)
    request.addfinalizer(engine.stop)
    return engine


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


@pytest.fixture(scope="session")
def images(docker_engine: DockerEngine) -> Images:
    """The local images, imported once per session (a few MB each on vfs)."""
    busybox = _or_fail(sandbox.busybox)
    made = Images()
    client = docker_engine.client
    for reference, version, cmd in (
        (made.v1, "1", SERVE),
        (made.v2, "2", SERVE),
        (made.sleeper, "sleeper", SLEEP),
        (made.failing, "fail", FAIL),
    ):
        tar = _or_fail(lambda: rootfs_tar(busybox, version))  # noqa: B023 - called at once
        import_image(client, reference, tar, cmd)
    return made


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


@pytest.fixture(scope="session")
def registry(
    request: pytest.FixtureRequest, docker_engine: DockerEngine, images: Images
) -> Registry:
    """`docker-registry` with htpasswd (bcrypt) on 127.0.0.1, holding `private/app:1`."""
    root = Path(tempfile.mkdtemp(prefix="hedgerow-registry-"))
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    username, password = "robot", secrets.token_urlsafe(16)
    server = _or_fail(
        lambda: sandbox.start_registry(
            root, username, password, free_port(), realm="hedgerow-tests"
        )
    )
    request.addfinalizer(server.stop)
    repository = f"{server.host}/private/app"
    docker_engine.client.api.tag(images.v1, repository, "1")
    _or_fail(lambda: sandbox.push(docker_engine.client, f"{repository}:1", server.auth))
    return Registry(server.host, username, password, f"{repository}:1")
