"""Shared parts of the benchmarks: a git repository of manifests, a controller process, a device
token, a private dockerd and local images, each started and stopped by its own pid.

Run the benchmarks from the repository's root as modules (`python -m bench.polls`), as
`make bench` does: they share the tests' fleet builder (`tests.support.fleet`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import httpx

from reconciler.demo.daemons import SandboxError, free_port
from reconciler.demo.engine import Engine, start_dockerd
from reconciler.demo.images import busybox, rootfs_tar
from reconciler.server.webhook import sign

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"bench-webhook-secret"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Hedgerow Bench",
    "GIT_AUTHOR_EMAIL": "bench@hedgerow.invalid",
    "GIT_COMMITTER_NAME": "Hedgerow Bench",
    "GIT_COMMITTER_EMAIL": "bench@hedgerow.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def commit(repo: Path, message: str, files: Mapping[str, str]) -> str:
    """Write `files` (dedented) into the repository, commit everything; the new sha."""
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(root: Path, files: Mapping[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    commit(root, "initial", files)
    return root


def wait(check: Callable[[], bool], seconds: float, what: str, step: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 20) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def revision(url: str) -> str | None:
    try:
        value = httpx.get(f"{url}/healthz", timeout=1).json().get("revision")
    except httpx.HTTPError:
        return None
    return str(value) if value else None


@dataclass
class Controller:
    url: str
    data: Path
    process: subprocess.Popen[bytes]
    log: Path

    def token(self, device: str) -> str:
        """Issue a device token with the CLI, as operators do."""
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "device", "token", device,
             "--data-dir", str(self.data)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return result.stdout.strip()

    def push(self, repo: Path, message: str, files: Mapping[str, str]) -> str:
        """Commit, then POST the signed webhook; the new sha."""
        sha = commit(repo, message, files)
        self.hook(sha)
        return sha

    def hook(self, sha: str) -> None:
        body = f'{{"after": "{sha}"}}'.encode()
        headers = {"X-Hub-Signature-256": sign(SECRET, body)}
        response = httpx.post(f"{self.url}/v1/hooks/git", content=body, headers=headers)
        response.raise_for_status()


@contextlib.contextmanager
def controller(
    repo: Path, work: Path, *flags: str, ready_within: float = 30
) -> Iterator[Controller]:
    """`hedgerow controller` following `repo`, stopped with SIGINT by its pid at the end."""
    port = free_port()
    data = work / f"controller-{port}"
    secret = work / "webhook-secret"
    secret.write_bytes(SECRET)
    log_path = work / f"controller-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "controller", "--repo", str(repo),
             "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
             "--webhook-secret-file", str(secret), "--interval", "3600", *flags],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: revision(url) is not None, ready_within, f"the controller ({log_path})", 0.1)
        yield Controller(url, data, process, log_path)
    finally:
        stop(process, signal.SIGINT)


# -- a private dockerd and local images, the demo's parts (reconciler.demo) ----------------

SLEEP_CMD = """CMD ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]"""


def engine_unavailable() -> str | None:
    """Why a private dockerd cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting a private dockerd needs root"
    if shutil.which("dockerd") is None:
        return "dockerd not found (Debian's docker.io)"
    try:
        busybox()
    except SandboxError as error:
        return str(error)
    return None


@contextlib.contextmanager
def dockerd() -> Iterator[Engine]:
    """A private dockerd (vfs, no iptables) in a short temporary folder, stopped by its pid."""
    engine = start_dockerd("hb-")
    try:
        yield engine
    finally:
        engine.stop()


def busybox_image(engine: Engine, reference: str, cmd: str = SLEEP_CMD) -> None:
    """Import a one-binary busybox image as `reference`."""
    engine.import_image(reference, rootfs_tar(busybox(), "1"), cmd)


def agent_venv(folder: Path) -> Path:
    """The agent installed alone into a new virtual environment, as a device installs it
    (`pip install hedgerow`, no extra); the path of its `hedgerow-agent`."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run(
        [str(folder / "bin" / "pip"), "install", "--quiet", str(ROOT)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return folder / "bin" / "hedgerow-agent"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], seconds: float, share: float = 0.1) -> float:
    """Wait until each process uses under `share` of a core over a second (its backlog is
    done); the seconds waited. Watching CPU time costs the processes nothing."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        before = [cpu_seconds(pid) for pid in pids]
        time.sleep(1)
        if all(cpu_seconds(p) - b < share for p, b in zip(pids, before, strict=True)):
            return time.monotonic() - start
    raise TimeoutError(f"still busy after {seconds:.0f} s")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
