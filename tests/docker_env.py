"""A real Docker engine, local images and a private registry for tests: no mocks, no internet.

`docker_engine` starts a private dockerd as root (vfs storage, no iptables) in a short temporary
folder — unix socket paths are limited to 108 bytes — and stops it by its pid at the end of the
session. `images` imports tiny busybox images (no registry needed) and `registry` runs Debian's
`docker-registry` on 127.0.0.1 with an htpasswd file and pushes a private image to it. Every
daemon writes to a log file, reads /dev/null, and is stopped by the pid recorded at its start,
so none can keep CI's output open. Missing programs fail the tests with the Debian package to
install (`make test` installs them through tests/system-deps.sh); nothing is skipped.

Use the fixtures by importing them into a test module:
`from docker_env import docker_engine, images, registry`.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "httpd")
HTTP_PORT = 8080  # what the app images serve /www on
READY_SECONDS = 30.0


def _need(program: str, package: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            f"`{program}` not found: install Debian's `{package}` package "
            f"(apt-get install {package}; `make test` does it via tests/system-deps.sh)",
            pytrace=False,
        )
    return found


def _stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM to the pid we started, wait up to `grace` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _unmount_below(root: Path) -> None:
    """Mounts a killed daemon left under `root` (container shm, netns) block its removal."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    for point in sorted(points, key=len, reverse=True):
        if point == str(root) or point.startswith(f"{root}/"):
            subprocess.run(
                ["umount", "-l", point], stdin=subprocess.DEVNULL, capture_output=True, check=False
            )


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


@dataclass
class DockerEngine:
    """A running dockerd: `host` is the DOCKER_HOST URL, `client` a connected SDK client."""

    root: Path
    host: str
    client: docker.DockerClient
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"


def _start_dockerd(request: pytest.FixtureRequest) -> DockerEngine:
    dockerd = _need("dockerd", "docker.io")
    if os.geteuid() != 0:
        pytest.fail("the engine tests start their own dockerd, which needs root", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp"))
    host = f"unix://{root}/docker.sock"
    command = [
        dockerd,
        "--data-root", f"{root}/data",
        "--host", host,
        "--exec-root", f"{root}/exec",
        "--pidfile", f"{root}/dockerd.pid",
        "--storage-driver", "vfs",
        "--iptables=false",
    ]  # fmt: skip
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    clients: list[docker.DockerClient] = []  # connected once the socket answers

    def stop() -> None:
        for client in clients:
            with contextlib.suppress(Exception):  # no engine left to ask: stop it all the same
                for container in client.api.containers(all=True, quiet=True):
                    client.api.remove_container(container["Id"], force=True, v=True)
            client.close()
        _stop(process)
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(stop)
    log_path = root / "dockerd.log"
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"dockerd exited with {process.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(docker.errors.DockerException, OSError):
            client = docker.DockerClient(base_url=host, timeout=120)
            clients.append(client)
            if client.ping():
                return DockerEngine(root, host, client, process)
        if time.monotonic() > deadline:
            pytest.fail(f"dockerd not ready after {READY_SECONDS:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> DockerEngine:
    """One private dockerd for the session, stopped (and its folders removed) at its end."""
    return _start_dockerd(request)


# -- images ---------------------------------------------------------------------------------------


def _busybox() -> Path:
    for path in BUSYBOX_PATHS:
        if path.is_file():
            return path
    pytest.fail(
        "busybox not found in /bin or /usr/bin: install Debian's `busybox-static` package "
        "(apt-get install busybox-static; `make test` does it via tests/system-deps.sh)",
        pytrace=False,
    )


def rootfs_tar(busybox: Path, version: str) -> bytes:
    """A root filesystem of one static busybox, its applets as symlinks, and /www/VERSION."""
    buffer = io.BytesIO()
    binary = busybox.read_bytes()
    if not binary.startswith(b"\x7fELF") or b"ld-linux" in binary[:4096]:
        pytest.fail(
            f"{busybox} is not a static binary, and an image has no libc: install Debian's "
            "`busybox-static` package (it replaces `busybox`)",
            pytrace=False,
        )

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
        archive.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder, mode in (("bin", 0o755), ("www", 0o755), ("data", 0o755), ("tmp", 0o1777)):
            add(folder, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("www/VERSION", tarfile.REGTYPE, 0o644, f"{version}\n".encode())
    return buffer.getvalue()


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


def import_image(client: docker.DockerClient, reference: str, tar: bytes, cmd: str) -> None:
    repository, tag = reference.rsplit(":", 1)
    client.api.import_image_from_data(tar, repository=repository, tag=tag, changes=[cmd])


@pytest.fixture(scope="session")
def images(docker_engine: DockerEngine) -> Images:
    """The local images, imported once per session (a few MB each on vfs)."""
    busybox = _busybox()
    made = Images()
    client = docker_engine.client
    import_image(client, made.v1, rootfs_tar(busybox, "1"), SERVE)
    import_image(client, made.v2, rootfs_tar(busybox, "2"), SERVE)
    import_image(client, made.sleeper, rootfs_tar(busybox, "sleeper"), SLEEP)
    import_image(client, made.failing, rootfs_tar(busybox, "fail"), FAIL)
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _consume(stream: Iterator[dict[str, Any]], what: str) -> None:
    for chunk in stream:
        problem = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        if problem:
            pytest.fail(f"{what}: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def registry(
    request: pytest.FixtureRequest, docker_engine: DockerEngine, images: Images
) -> Registry:
    """`docker-registry` with htpasswd (bcrypt) on 127.0.0.1, holding `private/app:1`."""
    program = _need("docker-registry", "docker-registry")
    htpasswd = _need("htpasswd", "apache2-utils")
    root = Path(tempfile.mkdtemp(prefix="hedgerow-registry-"))
    username, password = "robot", secrets.token_urlsafe(16)
    made = subprocess.run(
        [htpasswd, "-Bbn", username, password],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.fail(f"htpasswd failed: {made.stderr}", pytrace=False)
    (root / "htpasswd").write_text(made.stdout)
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: info}\n"
        f"storage: {{filesystem: {{rootdirectory: {root}/storage}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"auth: {{htpasswd: {{realm: hedgerow-tests, path: {root}/htpasswd}}}}\n"
    )
    with open(root / "registry.log", "wb") as log:
        process = subprocess.Popen(
            [program, "serve", str(root / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def stop() -> None:
        _stop(process, grace=5)
        shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(stop)
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited:\n{_tail(root / 'registry.log')}", pytrace=False)
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
        except urllib.error.HTTPError as answer:
            if answer.code == 401:  # up, and asking for credentials
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"docker-registry not ready:\n{_tail(root / 'registry.log')}")
        time.sleep(0.1)

    client = docker_engine.client
    repository = f"{host}/private/app"
    client.api.tag(images.v1, repository, "1")
    auth = {"username": username, "password": password, "serveraddress": host}
    _consume(
        client.api.push(repository, "1", stream=True, decode=True, auth_config=auth),
        f"pushing {repository}:1",
    )
    client.api.remove_image(f"{repository}:1")  # only the tag: the agent must pull it
    return Registry(host, username, password, f"{repository}:1")
