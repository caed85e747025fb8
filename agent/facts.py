"""What this device is, for people (`wire.Facts`): asked of the engine, which describes the
host it runs on even when the agent runs in a container, and of the filesystem holding the
engine's data. Sent at enrollment and in every report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler import wire

FREE_DISK_STEP = 64 * 1024 * 1024  # free disk is reported rounded down to this
ENGINE_EVERY = 600.0  # seconds between two questions to the engine: what it says changes rarely


def facts_of(
    info: Mapping[str, Any], version: Mapping[str, Any], disk: tuple[int, int] | None
) -> wire.Facts:
    """Facts from the engine's `/info` and `/version` answers and the disk's (total, free)
    bytes. Free disk is rounded down to FREE_DISK_STEP, so a report's facts change rarely."""
    components = version.get("Components") or []
    names = " ".join(str(c.get("Name", "")) for c in components if isinstance(c, Mapping))
    engine = "podman" if "podman" in names.lower() else "docker"
    memory = info.get("MemTotal")
    return wire.Facts(
        architecture=_text(info.get("Architecture")),
        os=_text(info.get("OperatingSystem")),
        kernel=_text(info.get("KernelVersion")),
        engine=engine,
        engine_version=_text(version.get("Version")),
        memory_bytes=memory if isinstance(memory, int) and memory >= 0 else None,
        disk_bytes=disk[0] if disk else None,
        disk_free_bytes=disk[1] // FREE_DISK_STEP * FREE_DISK_STEP if disk else None,
    )


def _text(value: object) -> str | None:
    return wire.clip(str(value), wire.MAX_SHORT) if value else None


def disk_of(paths: list[str]) -> tuple[int, int] | None:
    """(total, free) bytes of the first of `paths` visible from here."""
    for path in paths:
        try:
            stat = os.statvfs(path)
        except OSError:
            continue
        return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    return None


class FactsProbe:
    """This device's facts, asking the engine at most every ENGINE_EVERY seconds; an engine
    that does not answer leaves the last answer in force."""

    def __init__(
        self,
        describe: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]],
        data_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.describe = describe
        self.data_dir = data_dir
        self.clock = clock
        self._engine: tuple[Mapping[str, Any], Mapping[str, Any]] = ({}, {})
        self._asked: float | None = None

    def __call__(self) -> wire.Facts:
        now = self.clock()
        if self._asked is None or now - self._asked >= ENGINE_EVERY:
            try:
                self._engine = self.describe()
                self._asked = now
            except Exception:
                self._asked = now
        info, version = self._engine
        root = str(info.get("DockerRootDir") or "")
        return facts_of(info, version, disk_of([p for p in (root, str(self.data_dir)) if p]))
