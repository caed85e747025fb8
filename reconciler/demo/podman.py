"""A private Podman service speaking the Docker Engine API, for tests: the agent's other engine.

Debian's `podman` 4.3 serves the Docker-compatible API with `podman system service`; the agent
reaches it with `DOCKER_HOST=unix://…/podman.sock`, as it reaches dockerd. Everything Podman would
otherwise keep machine-wide is under one short folder: storage (`--root`, vfs), run state
(`--runroot`), its temporary folder and events log, and its network definitions (netavark's
default is /etc/containers/networks), so no two services and no later run see each other's.

Two files beside it make it work here: a `containers.conf` lowering Podman's default ulimits
below this machine's hard limits (containers fail to start with `error setting rlimit` without
it), and a `registries.conf` naming the registries to reach over plain HTTP: unlike dockerd,
Podman does not treat 127.0.0.0/8 as insecure, and reads the file once, so a test registry's
`127.0.0.1:PORT` must be known when the service starts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from reconciler.demo.daemons import (
    READY_SECONDS,
    SandboxError,
    need,
    start_daemon,
    tail,
)
from reconciler.demo.engine import Engine, _chunks


class PodmanEngine(Engine):
    """The Podman service we started (`root` holds all of it), seen as a Docker engine."""

    @property
    def log(self) -> Path | None:
        return self.root / "podman.log" if self.root else None

    def import_image(self, reference: str, tar: bytes, cmd: str) -> None:
        """`docker import`, then a tag: Podman's `POST /images/create?fromSrc=-` ignores
        `repo` and `tag` (it names the image `docker.io/REPO:latest`), so the id it reports is
        tagged as asked afterwards."""
        repository, tag = reference.rsplit(":", 1)
        params = {"fromSrc": "-", "repo": repository, "tag": tag, "changes": cmd}
        headers = {"Content-Type": "application/x-tar"}
        image_id = ""
        with self._http.stream(
            "POST", "/images/create", params=params, content=tar, headers=headers
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise SandboxError(f"importing {reference}: {response.text.strip()[:300]}")
            for chunk in _chunks(response.iter_lines()):
                problem = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
                if problem:
                    raise SandboxError(f"importing {reference}: {problem}")
                image_id = str(chunk.get("id") or image_id)
        if not image_id:
            raise SandboxError(f"importing {reference}: Podman reported no image id")
        tagged = self._http.post(f"/images/{image_id}/tag", params={"repo": repository, "tag": tag})
        self._check(tagged, f"tagging {image_id} as {reference}")
        if tag != "latest":  # the name Podman gave it, which a second import would take over
            self.remove_image(f"{repository}:latest")


def containers_conf(root: Path) -> str:
    """Podman's settings for a private service under `root` (see the module)."""
    return (
        "[containers]\n"
        # Podman's defaults are above the hard limits here (nofile 20,000): no container starts
        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        "[network]\n"
        f"network_config_dir = {json.dumps(str(root / 'networks'))}\n"
        "[engine]\n"
        f"tmp_dir = {json.dumps(str(root / 'tmp'))}\n"
        'events_logger = "file"\n'
    )


def registries_conf(insecure: Sequence[str]) -> str:
    """A registries.conf (v2) allowing plain HTTP to `insecure` (`HOST:PORT` each)."""
    return "".join(
        f"[[registry]]\nlocation = {json.dumps(host)}\ninsecure = true\n\n" for host in insecure
    )


def start_podman(prefix: str = "hp-", insecure_registries: Sequence[str] = ()) -> PodmanEngine:
    """Our own `podman system service` as root, on a socket in a short folder under /tmp, ready
    when it answers `_ping`; `insecure_registries` (`127.0.0.1:PORT`) are pulled from over HTTP.

    Unix socket paths are limited to 108 bytes, hence /tmp and a short prefix.
    """
    podman = need("podman", "podman")
    if os.geteuid() != 0:
        raise SandboxError("starting a Podman service with its own storage needs root (sudo)")
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    for folder in ("networks", "tmp"):
        (root / folder).mkdir()
    (root / "containers.conf").write_text(containers_conf(root))
    (root / "registries.conf").write_text(registries_conf(insecure_registries))
    host = f"unix://{root}/podman.sock"
    command = [
        podman,
        "--storage-driver", "vfs",
        "--root", f"{root}/root",
        "--runroot", f"{root}/run",
        "system", "service", "--time", "0", host,
    ]  # fmt: skip
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
    }
    engine = PodmanEngine(host, root, start_daemon(command, root / "podman.log", env))
    assert engine.process is not None
    deadline = time.monotonic() + READY_SECONDS
    while not engine.ping():
        if engine.process.poll() is not None:
            failed = tail(root / "podman.log")
            code = engine.process.returncode
            engine.stop()
            raise SandboxError(f"podman system service exited with {code}:\n{failed}")
        if time.monotonic() > deadline:
            failed = tail(root / "podman.log")
            engine.stop()
            raise SandboxError(f"podman not ready after {READY_SECONDS:.0f} s:\n{failed}")
        time.sleep(0.1)
    return engine
