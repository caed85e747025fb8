"""A private registry on loopback: Debian's `docker-registry` with one htpasswd (bcrypt) user."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.demo.daemons import (
    READY_SECONDS,
    SandboxError,
    need,
    port_taken,
    start_daemon,
    stop_process,
    tail,
)


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
