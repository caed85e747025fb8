"""`hedgerow demo`: the example repository deployed for real to a fleet of four devices, on
this machine.

It runs what a fleet runs — a Docker engine, a private registry with a login, a git repository,
the controller and one agent for each of the four Lyon devices, all on the one engine (each
agent owns only what carries its device's label) — on loopback, with images built from busybox
(no internet needed). The devices pull their private image with the credential the controller
decrypts from `manifests/credentials/registry-demo.yaml` and forwards, so the demo shows the
whole path; then it prints how to commit a staged upgrade and a broken release. Everything
started here is stopped by pid on exit, and the containers it made are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.markup import escape

from reconciler.core.status import ConditionType
from reconciler.demo import daemons, images
from reconciler.demo.daemons import SandboxError
from reconciler.demo.engine import Engine, existing_engine, start_dockerd
from reconciler.demo.registry import RegistryServer, start_registry
from reconciler.errors import HedgerowError
from reconciler.secrets import tokens
from reconciler.store import Store, sqlite_url

# The example credential is encrypted for this login and this registry address.
USERNAME, PASSWORD = "demo", "demo-password-change-me"
REGISTRY_PORT = 5000
TELEMETRY = "hedgerow/telemetry"
TELEMETRY_VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
GATEWAY = "hedgerow.local/gateway:2.3.0"
GATEWAY_PORT = 8080  # the gateway release binds 127.0.0.1:8080
AGE_KEY = "DEMO-ONLY-age-key.txt"
# The devices of the example repository the demo plays, with the deployments they receive:
# the Lyon site, whose telemetry-lyon deployment rolls a new release out canary first.
DEVICES: dict[str, tuple[str, ...]] = {
    "lyon-orin-01": ("gateway-lyon-orin-01", "telemetry-lyon"),
    "lyon-rpi4-01": ("telemetry-lyon",),
    "lyon-rpi4-02": ("telemetry-lyon",),
    "lyon-rpi4-03": ("telemetry-lyon",),
}
OWN_FOLDERS = ("repo", "controller", "agents", "tokens", "registry", "logs")  # in the folder
ROLLOUT = "telemetry-lyon"
UPGRADE_FILE = "deployments/telemetry.yaml"


def upgrade_sed(old: str, new: str) -> str:
    """The sed that moves telemetry-lyon's release from `old` to `new`."""
    return f'/name: {ROLLOUT}$/,/release:/s/release: "{old}"/release: "{new}"/'


def _cmd(script: str) -> str:
    """A Dockerfile CMD running `script` in sh; the trap makes `docker stop` immediate."""
    return "CMD " + json.dumps(["sh", "-c", f"trap 'exit 0' TERM; {script}"])


# Samples forever, printing its role and version; the interval comes from the release's env.
TELEMETRY_CMD = _cmd(
    'while true; do echo "$ROLE $(cat /www/VERSION)"; '
    'sleep "${SAMPLE_INTERVAL_SECONDS:-${UPLOAD_INTERVAL_SECONDS:-10}}" & wait $!; done'
)
# Serves /www read-only (the release makes the root filesystem read-only).
GATEWAY_CMD = _cmd('httpd -f -p "${LISTEN_PORT:-80}" -h /www & wait')


class DemoError(HedgerowError):
    """The demo cannot go on; the message says why."""


@dataclass
class Demo:
    """What the demo started, so that `stop()` can undo exactly that."""

    folder: Path
    console: Console
    show_status: Callable[[Path], None]  # prints the status of a controller's data folder
    engine: Engine | None = None
    registry: RegistryServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    managed_before: dict[str, set[str]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """`hedgerow ARGS` as a daemon logging to logs/NAME.log."""
        command = [sys.executable, "-m", "reconciler", *args]
        self.processes[name] = daemons.start_daemon(command, self.logs / f"{name}.log", env)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise DemoError(f"the {name} exited with {process.returncode}")

    def show_logs(self) -> None:
        paths = [self.logs / f"{name}.log" for name in self.processes]
        if self.registry is not None:
            paths.append(self.registry.log)
        if self.engine is not None and self.engine.log is not None:
            paths.append(self.engine.log)
        for path in paths:
            self.console.rule(str(path))
            self.console.print(daemons.tail(path, 3000), markup=False, highlight=False)

    def stop(self) -> None:
        """Agents first (they would recreate containers), then the controller, containers,
        registry and engine; each by the pid or id recorded when we made it."""
        agents = [name for name in self.processes if name.startswith("agent-")]
        for name in [*agents, "controller"]:
            if name in self.processes:
                daemons.stop_process(self.processes[name])
        if self.engine is not None:
            with contextlib.suppress(Exception):  # a dead engine has nothing left to remove
                self._remove_ours()
        if self.registry is not None:
            self.registry.stop()
        if self.engine is not None:
            self.engine.stop()

    def _remove_ours(self) -> None:
        """Remove what the agent created during the demo, never what was there before."""
        assert self.engine is not None
        now = self.engine.managed()
        for kind in ("containers", "networks", "volumes"):  # containers first: they use the rest
            for name in now[kind] - self.managed_before.get(kind, set()):
                self.engine.remove(kind, name)
        if self.engine.process is None:  # our own engine goes away whole anyway
            for image in self.images:
                with contextlib.suppress(SandboxError):
                    self.engine.remove_image(image)


def run(
    manifests: Path,
    folder: Path | None,
    registry_port: int,
    once: bool,
    timeout: float,
    refresh: float,
    console: Console,
    show_status: Callable[[Path], None],
) -> int:
    """The whole demo; returns the exit status. Ctrl-C or SIGTERM ends it cleanly.
    `show_status(data_dir)` prints the controller's status (the `hedgerow status` table)."""
    key = manifests / AGE_KEY
    if not (manifests / "deployments").is_dir() or not key.is_file():
        console.print(f"[red]error:[/] {manifests} is not the example repository (no {AGE_KEY})")
        return 2
    folder = (folder or Path(tempfile.mkdtemp(prefix="hedgerow-demo-"))).resolve()
    demo = Demo(folder, console, show_status)
    for stale in OWN_FOLDERS:  # a previous demo's state would confuse this one
        shutil.rmtree(folder / stale, ignore_errors=True)
    demo.logs.mkdir(parents=True, exist_ok=True)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell starting us in the background leaves it ignored.
    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(demo, manifests.resolve(), registry_port, once, timeout, refresh)
    except (DemoError, SandboxError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        demo.show_logs()
        return 1
    except KeyboardInterrupt:
        console.print("\nstopping the demo")
        return 0
    finally:
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.print(f"stopped everything the demo started; logs and repository in {folder}")


def _run(
    demo: Demo,
    manifests: Path,
    registry_port: int,
    once: bool,
    timeout: float,
    refresh: float,
) -> int:
    console = demo.console
    if daemons.port_taken(registry_port):
        raise DemoError(
            f"127.0.0.1:{registry_port} is already in use; the example credential "
            f"(credentials/registry-demo.yaml) is for the registry 127.0.0.1:{REGISTRY_PORT}: "
            "stop what listens there and run the demo again"
        )
    if daemons.port_taken(GATEWAY_PORT):
        raise DemoError(
            f"127.0.0.1:{GATEWAY_PORT} is in use, and lyon-orin-01 runs the example's gateway "
            "there: stop what listens there and run the demo again"
        )

    console.print(f"[bold]hedgerow demo[/] in {demo.folder}")
    engine = existing_engine()
    if engine is None:
        console.print("starting a private dockerd (vfs storage, no iptables)")
        engine = start_dockerd(prefix="hdemo-")
    else:
        console.print(f"using the Docker engine at {engine.host}")
    demo.engine = engine
    demo.managed_before = engine.managed()

    demo.registry = start_registry(
        demo.folder / "registry", USERNAME, PASSWORD, registry_port, realm="hedgerow-demo"
    )
    host = demo.registry.host
    console.print(f"private registry on {host} (htpasswd user {USERNAME})")
    busybox = images.busybox()
    for version in TELEMETRY_VERSIONS:
        reference = f"{host}/{TELEMETRY}:{version}"
        engine.import_image(reference, images.rootfs_tar(busybox, version), TELEMETRY_CMD)
        engine.push(reference, demo.registry.auth)
        demo.images.append(reference)
        console.print(f"pushed {reference} (removed locally: the agent must pull it)")
    engine.import_image(GATEWAY, images.rootfs_tar(busybox, "2.3.0"), GATEWAY_CMD)
    demo.images.append(GATEWAY)
    console.print(f"imported {GATEWAY} locally")
    pushed = demo.registry.log.stat().st_size  # pulls are logged after this offset

    repo = demo.folder / "repo"
    _make_repository(manifests, repo)
    data, port = demo.folder / "controller", daemons.free_port()
    url = f"http://127.0.0.1:{port}"
    demo.start(
        "controller",
        ["controller", "--repo", str(repo), "--data-dir", str(data), "--watch",
         "--listen", f"127.0.0.1:{port}", "--age-key-file", str(manifests / AGE_KEY)],
    )  # fmt: skip
    _wait(demo, lambda: _applied(url), "the controller to apply the repository", 60)
    console.print(f"controller on {url} follows {repo} (main)")

    with Store.open(sqlite_url(data)) as store:
        secrets = {device: tokens.issue() for device in DEVICES}
        at = datetime.now(UTC)
        for device, secret in secrets.items():
            store.put_token(device, tokens.hash_token(secret), at)
        viewer = tokens.issue()  # the dashboard's login, read-only
        store.create_viewer_token("demo", tokens.hash_token(viewer), at)
    (demo.folder / "tokens").mkdir(mode=0o700)
    login = demo.folder / "tokens" / "dashboard"
    login.write_text(viewer + "\n")
    login.chmod(0o600)
    console.print(f"dashboard on {url}/ : log in with the viewer token {viewer} ({login})")
    for device, secret in secrets.items():
        token = demo.folder / "tokens" / device
        token.write_text(secret)
        token.chmod(0o600)
        demo.start(
            f"agent-{device}",
            ["agent", "--controller", url, "--device", device, "--token-file", str(token),
             "--data-dir", str(demo.folder / "agents" / device), "--poll-interval", "2s"],
            {**os.environ, "DOCKER_HOST": engine.host},
        )  # fmt: skip
    console.print(
        f"an agent for each of {', '.join(DEVICES)}, all on the one engine (the example's "
        "other devices have no agent here: they stay NotReported)"
    )

    deadline = time.monotonic() + timeout
    while not all(_ready(data, device) for device in DEVICES):
        demo.check_alive()
        if time.monotonic() > deadline:
            demo.show_status(data)
            late = [device for device in DEVICES if not _ready(data, device)]
            raise DemoError(f"{', '.join(late)} not Ready after {timeout:.0f} s")
        demo.show_status(data)
        time.sleep(refresh)
    demo.show_status(data)
    for device, deployments in DEVICES.items():
        console.print(f"[green]{device} is Ready[/]: {', '.join(deployments)}")
    for pulled in _pulls(demo.registry.log, pushed):
        console.print(f"the agents pulled {host}/{pulled} as user {USERNAME}, via the controller")
    console.print(_NEXT.format(
        repo=repo, file=UPGRADE_FILE, data=data, rollout=ROLLOUT,
        upgrade=upgrade_sed("1.0.0", "1.1.0"), broken=upgrade_sed("1.1.0", "1.2.0"),
    ), markup=False)  # fmt: skip
    if once:
        return 0
    console.print("Ctrl-C stops the demo and everything it started.")
    while True:
        time.sleep(refresh)
        demo.check_alive()
        demo.show_status(data)


_NEXT = """
A staged upgrade: move {rollout} from 1.0.0 to 1.1.0 and commit it:

    cd {repo}
    sed -i '{upgrade}' {file}
    git commit -am "telemetry 1.1.0 in Lyon"

The canary lyon-rpi4-01 moves first, then the three others one at a time, each once the one
before has been Ready for 5 s. Follow it with:

    hedgerow rollout status --data-dir {data}

A broken release: once 1.1.0 is everywhere, commit 1.2.0, whose healthcheck never passes:

    sed -i '{broken}' {file}
    git commit -am "telemetry 1.2.0 in Lyon"

The canary is never Ready: within 45 s it switches itself back to 1.1.0 and reports Degraded,
and the rollout halts after the canary (no other device moves) and rolls it back.
Status: hedgerow status --data-dir {data}   Events: hedgerow events --data-dir {data}"""


def _git(repo: Path, *args: str) -> None:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed: {done.stderr.strip()}")


def _make_repository(manifests: Path, repo: Path) -> None:
    """A fresh git repository holding a copy of the example, with a local identity to commit."""
    shutil.copytree(manifests, repo)
    _git(repo, "init", "--quiet", "--initial-branch", "main")
    _git(repo, "config", "user.name", "Hedgerow demo")
    _git(repo, "config", "user.email", "demo@hedgerow.invalid")
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "--message", "The example repository")


def _wait(demo: Demo, check: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        demo.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.3)


def _applied(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).json()["revision"] is not None
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def _ready(data: Path, device: str) -> bool:
    """Every deployment the device should run reports Ready=True."""
    with Store.open(sqlite_url(data)) as store:
        found = {s.deployment: s.status for s in store.statuses(device=device)}
    return all(
        name in found and found[name].condition(ConditionType.READY).true
        for name in DEVICES[device]
    )


# docker-registry logs "authorized request" only once the htpasswd login succeeded.
PULL = re.compile(
    r'msg="authorized request".* http\.request\.method=(?:GET|HEAD) .*'
    r"http\.request\.uri=/v2/(?P<name>\S+)/manifests/(?P<tag>\S+)"
)


def _pulls(log: Path, offset: int) -> Iterator[str]:
    """Image references fetched with the login (USERNAME) after `offset` in the registry's log."""
    with open(log, "rb") as text:
        text.seek(offset)
        lines = text.read().decode(errors="replace").splitlines()
    seen: set[str] = set()
    for line in lines:
        match = PULL.search(line)
        if match:
            reference = f"{match['name']}:{match['tag']}"
            if reference not in seen:
                seen.add(reference)
                yield reference
