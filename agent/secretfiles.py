"""Secret values as files: written to a folder on a tmpfs the agent owns, one folder per
container, bind-mounted read-only into it. Never on the device's disk: a folder that is not on
a tmpfs (or ramfs) is refused, and a reboot empties it (the agent writes the files again, once
the controller has sent the values again).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from agent.errors import EngineError

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def filesystem_of(path: Path, mountinfo: str | None = None) -> str | None:
    """The filesystem type of the mount holding `path` (the longest mount point above it),
    from /proc/self/mountinfo; None when it cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = str(path.resolve())
    best, kind = "", None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        point = fields[4].replace("\\040", " ")
        fstype = fields[fields.index("-") + 1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


class SecretFiles:
    """The folder of every container's Secret files (`root`, on a tmpfs)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        kind = filesystem_of(root)
        if kind not in MEMORY_FILESYSTEMS:
            raise EngineError(
                f"{root} is on {kind or 'an unknown filesystem'}, not a tmpfs: Secret files are "
                "never written to disk; give --secrets-dir a folder on a tmpfs (such as /run on "
                "systemd, or /dev/shm)"
            )
        os.chmod(root, 0o700)
        self.root = root

    def write(self, container: str, files: list[tuple[str, str, int]]) -> str:
        """Write `files` (name, value, mode) into a new folder for `container`; its name, to
        label the container with (a redeploy's new container never shares it)."""
        folder = f"{container}-{secrets.token_hex(4)}"
        path = self.root / folder
        path.mkdir(mode=0o700)
        try:
            os.chmod(path, 0o755)  # traversable: each file's own mode decides who reads it
            for name, value, mode in files:
                fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "w", encoding="utf-8") as stream:
                    stream.write(value)
                os.chmod(path / name, mode)  # exactly, whatever the umask
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return folder

    def path(self, folder: str, name: str) -> Path:
        return self.root / folder / name

    def present(self) -> frozenset[str]:
        """The folders written since the tmpfs was last emptied (a reboot)."""
        try:
            return frozenset(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        except OSError:
            return frozenset()

    def remove(self, folder: str) -> None:
        if folder and "/" not in folder and folder not in (".", ".."):
            shutil.rmtree(self.root / folder, ignore_errors=True)
