"""A Docker engine for the demo: one that answers already, or our own dockerd.

The demo needs a handful of Engine API calls (ping, import, push, list and remove what Hedgerow
made), spoken over HTTP with httpx: the docker SDK stays the agent's alone
(`agent.engine` is the only module that imports it), and the demo works against any engine
speaking the Docker Engine API at `DOCKER_HOST`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import quote

import httpx

from reconciler.demo.daemons import (
    READY_SECONDS,
    SandboxError,
    need,
    start_daemon,
    stop_process,
    tail,
    unmount_below,
)

MANAGED = "hedgerow.managed=true"  # the label the agent puts on everything it creates


def _transport(host: str) -> tuple[httpx.HTTPTransport, str]:
    """An httpx transport and base URL for a DOCKER_HOST (`unix://PATH` or `tcp://HOST:PORT`)."""
    if host.startswith("unix://"):
        return httpx.HTTPTransport(uds=host.removeprefix("unix://")), "http://docker"
    if host.startswith("tcp://"):
        return httpx.HTTPTransport(), "http://" + host.removeprefix("tcp://")
    raise SandboxError(f"DOCKER_HOST={host}: only unix:// and tcp:// engines are supported")


@dataclass
class Engine:
    """A Docker engine at `host` (a DOCKER_HOST URL). `process` is set when we started dockerd
    ourselves (then `root` holds its folders); `stop()` only ever stops what we started."""

    host: str
    root: Path | None = None
    process: Popen[bytes] | None = None
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        transport, base = _transport(self.host)
        # no timeout on reads: an import or a push streams for as long as it needs
        self._http = httpx.Client(
            transport=transport, base_url=base, timeout=httpx.Timeout(10.0, read=None)
        )

    @property
    def log(self) -> Path | None:
        return self.root / "dockerd.log" if self.root else None

    def ping(self) -> bool:
        try:
            return self._http.get("/_ping").status_code == 200
        except httpx.HTTPError:
            return False

    # -- images ------------------------------------------------------------------------------

    def import_image(self, reference: str, tar: bytes, cmd: str) -> None:
        """`docker import` of a root filesystem; `cmd` is a Dockerfile CMD line."""
        repository, tag = reference.rsplit(":", 1)
        params = {"fromSrc": "-", "repo": repository, "tag": tag, "changes": cmd}
        headers = {"Content-Type": "application/x-tar"}
        with self._http.stream(
            "POST", "/images/create", params=params, content=tar, headers=headers
        ) as response:
            _consume(response, f"importing {reference}")

    def push(self, reference: str, auth: dict[str, str]) -> None:
        """Push `reference` with credentials, then drop the local tag so a device must pull it."""
        repository, tag = reference.rsplit(":", 1)
        header = base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()
        with self._http.stream(
            "POST",
            f"/images/{quote(repository, safe='/:')}/push",
            params={"tag": tag},
            headers={"X-Registry-Auth": header},
        ) as response:
            _consume(response, f"pushing {reference}")
        self.remove_image(reference)

    def remove_image(self, reference: str) -> None:
        self._check(self._http.delete(f"/images/{quote(reference, safe='/:')}"), reference)

    # -- what the agent made -----------------------------------------------------------------

    def managed(self) -> dict[str, set[str]]:
        """The containers, networks and volumes that carry Hedgerow's label."""
        filters = {"filters": json.dumps({"label": [MANAGED]})}
        containers = self._json("/containers/json", {**filters, "all": "1"})
        networks = self._json("/networks", filters)
        volumes = self._json("/volumes", filters).get("Volumes") or []
        return {
            "containers": {c["Id"] for c in containers},
            "networks": {n["Id"] for n in networks},
            "volumes": {v["Name"] for v in volumes},
        }

    def remove(self, kind: str, name: str) -> None:
        """Remove a container (with its anonymous volumes), a network or a volume."""
        path, params = {
            "containers": (f"/containers/{name}", {"force": "1", "v": "1"}),
            "networks": (f"/networks/{name}", {}),
            "volumes": (f"/volumes/{name}", {"force": "1"}),
        }[kind]
        self._check(self._http.delete(path, params=params), name)

    def remove_all_containers(self) -> None:
        for container in self._json("/containers/json", {"all": "1"}):
            self.remove("containers", container["Id"])

    def remove_all_networks(self) -> None:
        """Remove the networks no container uses: their bridges would outlive the daemon."""
        self._check(self._http.post("/networks/prune"), "pruning networks")

    # -- life --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Our own dockerd: remove its containers, stop it by pid and remove its folders.
        An engine we found is only disconnected."""
        if self.process is not None:
            with contextlib.suppress(httpx.HTTPError, SandboxError):  # stop it all the same
                self.remove_all_containers()
                self.remove_all_networks()
        self._http.close()
        if self.process is not None:
            stop_process(self.process)
        if self.root is not None:
            unmount_below(self.root)
            shutil.rmtree(self.root, ignore_errors=True)

    def _json(self, path: str, params: dict[str, str]) -> Any:
        response = self._http.get(path, params=params)
        self._check(response, path)
        return response.json()

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code >= 400:
            raise SandboxError(f"the engine refused {what}: {response.text.strip()[:300]}")


def _consume(response: httpx.Response, what: str) -> None:
    """Read an import or push stream to its end: errors come as chunks of a 200 answer."""
    if response.status_code >= 400:
        response.read()
        raise SandboxError(f"{what}: {response.text.strip()[:300]}")
    for chunk in _chunks(response.iter_lines()):
        problem = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        if problem:
            raise SandboxError(f"{what}: {problem}")


def _chunks(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            with contextlib.suppress(ValueError):
                decoded = json.loads(line)
                if isinstance(decoded, dict):
                    yield decoded


def existing_engine() -> Engine | None:
    """The engine DOCKER_HOST (or the default socket) names, if it answers; None if none is set.

    A DOCKER_HOST that does not answer is an error rather than a reason to start another engine:
    the user asked for that one.
    """
    host = os.environ.get("DOCKER_HOST")
    if host is None:
        if not Path("/var/run/docker.sock").exists():
            return None
        host = "unix:///var/run/docker.sock"
    engine = Engine(host)
    if engine.ping():
        return engine
    engine.stop()
    if "DOCKER_HOST" in os.environ:
        raise SandboxError(f"DOCKER_HOST={host} does not answer")
    return None


def start_dockerd(prefix: str = "hd-") -> Engine:
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
        # Docker's default pools hold 31 networks for the whole host and a stopped dockerd keeps
        # its bridges: 10/8 in /24s gives 65,536 (those in use skipped), and stop() prunes ours.
        "--default-address-pool", "base=10.0.0.0/8,size=24",
    ]  # fmt: skip
    engine = Engine(host, root, start_daemon(command, root / "dockerd.log"))
    assert engine.process is not None
    deadline = time.monotonic() + READY_SECONDS
    while not engine.ping():
        if engine.process.poll() is not None:
            failed = tail(root / "dockerd.log")
            code = engine.process.returncode
            engine.stop()
            raise SandboxError(f"dockerd exited with {code}:\n{failed}")
        if time.monotonic() > deadline:
            failed = tail(root / "dockerd.log")
            engine.stop()
            raise SandboxError(f"dockerd not ready after {READY_SECONDS:.0f} s:\n{failed}")
        time.sleep(0.2)
    return engine
