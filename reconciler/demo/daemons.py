"""Daemons on one machine, started and stopped safely: each writes to a log file, reads
/dev/null, runs in its own session (a Ctrl-C meant for the caller does not reach it) and is
stopped by the pid recorded at its start, so none can outlive its owner or keep a CI job's
output open. Everything listens on loopback only. Failures raise `SandboxError` with a message
that says what to install or free. Shared by the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from reconciler.errors import HedgerowError

READY_SECONDS = 30.0


class SandboxError(HedgerowError):
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
