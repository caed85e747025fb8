"""Real parts on one machine without internet: a Docker engine, busybox images, a private registry,
and the manifests of a one-container fleet.

Shared by `hedgerow demo`, the tests and the benchmarks, so all run the same daemons the same way.
Every daemon writes to a log file, reads /dev/null, runs in its own session (a Ctrl-C meant for
the caller does not reach it) and is stopped by the pid recorded at its start, so none can outlive
its owner or keep a CI job's output open. Everything listens on loopback only. Failures raise
`SandboxError` with a message that says what to install or free.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "httpd")
READY_SECONDS = 30.0


class SandboxError(Exception):
    """A part could not be set up; the message says why and what to do about it."""


def need(program: str, package: str) -> str:
    """The path of `program`, or a `SandboxError` naming the Debian package that provides it."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        raise SandboxError(
            f"`{program}` not found: install Debian's `{package}` package "
            f"(apt-get install {package}; `make demo` and `make test` do it via "
            "tests/system-deps.sh)"
        )
    return found


def stop_process(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM to the pid we started, wait up to `grace` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_daemon(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a daemon with stdin from /dev/null and its output in `log`, in a new session."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=env,
        )


def unmount_below(root: Path) -> None:
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


def tail(path: Path, size: int = 4000) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when `host:port` cannot be bound because someone listens there.

    SO_REUSEADDR, as servers set it: connections of a stopped server in TIME_WAIT do not count.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


# -- engine ---------------------------------------------------------------------------------------


@dataclass
class DockerEngine:
    """A Docker engine: `host` is the DOCKER_HOST URL, `client` a connected SDK client.

    `process` is set when we started dockerd ourselves (then `root` holds its folders); `stop()`
    only ever stops what we started.
    """

    root: Path | None
    host: str
    client: docker.DockerClient
    process: subprocess.Popen[bytes] | None = None
    _clients: list[docker.DockerClient] = field(default_factory=list, repr=False)

    @property
    def log(self) -> Path | None:
        return self.root / "dockerd.log" if self.root else None

    def stop(self) -> None:
        """Remove every container of our own dockerd, stop it and remove its folders."""
        if self.process is None:
            self.client.close()
            return
        _abandon(self.process, self.root, self._clients or [self.client])


def _abandon(
    process: subprocess.Popen[bytes], root: Path | None, clients: list[docker.DockerClient]
) -> None:
    """Remove every container of our dockerd, stop it by pid and remove its folders."""
    for client in clients:
        with contextlib.suppress(Exception):  # no engine left to ask: stop it all the same
            for container in client.api.containers(all=True, quiet=True):
                client.api.remove_container(container["Id"], force=True, v=True)
        client.close()
    stop_process(process)
    if root is not None:
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def existing_engine() -> DockerEngine | None:
    """The engine DOCKER_HOST (or the default socket) names, if it answers; None if none is set.

    A DOCKER_HOST that does not answer is an error rather than a reason to start another engine:
    the user asked for that one.
    """
    host = os.environ.get("DOCKER_HOST")
    if host is None:
        if not Path("/var/run/docker.sock").exists():
            return None
        host = "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=host, timeout=120)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        if "DOCKER_HOST" in os.environ:
            raise SandboxError(f"DOCKER_HOST={host} does not answer: {exc}") from None
        return None
    return DockerEngine(None, host, client)


def start_dockerd(prefix: str = "hd-") -> DockerEngine:
    """Our own dockerd as root (vfs storage, no iptables) in a short folder under /tmp.

    Unix socket paths are limited to 108 bytes, hence /tmp and a short prefix.
    """
    dockerd = need("dockerd", "docker.io")
    if os.geteuid() != 0:
        raise SandboxError(
            "no Docker engine answers (DOCKER_HOST or /var/run/docker.sock), and starting one "
            "needs root: run as root (sudo), or set DOCKER_HOST to a running engine"
        )
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
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
    process = start_daemon(command, root / "dockerd.log")
    clients: list[docker.DockerClient] = []  # connected once the socket answers
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            failed = tail(root / "dockerd.log")
            _abandon(process, root, clients)
            raise SandboxError(f"dockerd exited with {process.returncode}:\n{failed}")
        with contextlib.suppress(docker.errors.DockerException, OSError):
            client = docker.DockerClient(base_url=host, timeout=120)
            clients.append(client)
            if client.ping():
                return DockerEngine(root, host, client, process, clients)
        if time.monotonic() > deadline:
            failed = tail(root / "dockerd.log")
            _abandon(process, root, clients)
            raise SandboxError(f"dockerd not ready after {READY_SECONDS:.0f} s:\n{failed}")
        time.sleep(0.2)


# -- images ---------------------------------------------------------------------------------------


def busybox() -> Path:
    """The static busybox binary that is the images' only program."""
    for path in BUSYBOX_PATHS:
        if path.is_file():
            return path
    raise SandboxError(
        "busybox not found in /bin or /usr/bin: install Debian's `busybox-static` package "
        "(apt-get install busybox-static; tests/system-deps.sh does it)"
    )


def rootfs_tar(binary_path: Path, version: str) -> bytes:
    """A root filesystem of one static busybox, its applets as symlinks, and /www/VERSION."""
    buffer = io.BytesIO()
    binary = binary_path.read_bytes()
    if not binary.startswith(b"\x7fELF") or b"ld-linux" in binary[:4096]:
        raise SandboxError(
            f"{binary_path} is not a static binary, and an image has no libc: install Debian's "
            "`busybox-static` package (it replaces `busybox`)"
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


def import_image(client: docker.DockerClient, reference: str, tar: bytes, cmd: str) -> None:
    """`docker import` of a root filesystem; `cmd` is a Dockerfile CMD line, the image's command."""
    repository, tag = reference.rsplit(":", 1)
    client.api.import_image_from_data(tar, repository=repository, tag=tag, changes=[cmd])


def consume(stream: Iterator[dict[str, Any]], what: str) -> None:
    """Read a push/pull stream to its end; the SDK does not raise on its error chunks."""
    for chunk in stream:
        problem = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        if problem:
            raise SandboxError(f"{what}: {problem}")


def push(client: docker.DockerClient, reference: str, auth: dict[str, str]) -> None:
    """Push `reference` with credentials, then drop the local tag so a device must pull it."""
    repository, tag = reference.rsplit(":", 1)
    consume(
        client.api.push(repository, tag, stream=True, decode=True, auth_config=auth),
        f"pushing {reference}",
    )
    client.api.remove_image(reference)


# -- registry -------------------------------------------------------------------------------------


@dataclass
class RegistryServer:
    """Debian's `docker-registry` on 127.0.0.1 with one htpasswd (bcrypt) user."""

    root: Path
    host: str  # 127.0.0.1:PORT, also the serveraddress of credentials
    username: str
    password: str = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def log(self) -> Path:
        return self.root / "registry.log"

    @property
    def auth(self) -> dict[str, str]:
        """The SDK's auth_config for this registry."""
        return {"username": self.username, "password": self.password, "serveraddress": self.host}

    def stop(self) -> None:
        stop_process(self.process, grace=5)


def start_registry(
    root: Path, username: str, password: str, port: int, realm: str = "hedgerow"
) -> RegistryServer:
    """Run `docker-registry` in `root` (config, htpasswd, storage, log) until it asks for auth."""
    program = need("docker-registry", "docker-registry")
    htpasswd = need("htpasswd", "apache2-utils")
    if port_taken(port):
        raise SandboxError(f"127.0.0.1:{port} is already in use: stop what listens there")
    root.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [htpasswd, "-Bbn", username, password],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise SandboxError(f"htpasswd failed: {made.stderr}")
    (root / "htpasswd").write_text(made.stdout)
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: info}\n"
        f"storage: {{filesystem: {{rootdirectory: {root}/storage}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"auth: {{htpasswd: {{realm: {realm}, path: {root}/htpasswd}}}}\n"
    )
    process = start_daemon([program, "serve", str(root / "config.yml")], root / "registry.log")
    server = RegistryServer(root, f"127.0.0.1:{port}", username, password, process)
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            raise SandboxError(f"docker-registry exited:\n{tail(server.log)}")
        try:
            urllib.request.urlopen(f"http://{server.host}/v2/", timeout=2)
        except urllib.error.HTTPError as answer:
            if answer.code == 401:  # up, and asking for credentials
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise SandboxError(f"docker-registry not ready:\n{tail(server.log)}")
        time.sleep(0.1)


def fleet_manifests(
    version: str = "1.0.0",
    image: str = "local/app:1",
    *,
    port: int | None = None,
    state: str = "Running",
) -> dict[str, str]:
    """One application with one release of one container on a network, one device (`pi-1`)
    and its deployment, as files (dedented text) of a repository; `port` publishes 8080 on
    127.0.0.1."""
    ports = f'\n    portBindings: ["127.0.0.1:{port}:8080"]' if port is not None else ""
    dashed = version.replace(".", "-")
    return {
        "app.yaml": "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: web}\n",
        f"releases/{version}.yaml": f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: web-{dashed}}}
spec:
  application: web
  version: "{version}"
  containers:
  - name: server
    image: {image}
    networks: [front]
    env: {{VERSION: "{version}"}}{ports}
""",
        "network.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Network\nmetadata: {name: front}\n"
        ),
        "device.yaml": """\
apiVersion: hedgerow.dev/v1alpha1
kind: Device
metadata: {name: pi-1}
spec: {systemModel: rpi4}
""",
        "deployment.yaml": f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: web-pi-1}}
spec: {{application: web, release: "{version}", device: pi-1, state: {state}}}
""",
    }
