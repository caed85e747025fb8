"""A device's first start with only an enrollment token: it asks the controller for its own
device token (`POST /v1/enroll`), keeps it in its data folder (0600, with the name it enrolled
under), and from then on uses only that token; the enrollment token is not read again."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.client import ControllerClient, ControllerUnreachable, EnrollmentRefused, backoff
from reconciler.errors import HedgerowError
from reconciler.logs import get_logger
from reconciler.wire import EnrollRequest

log = get_logger("hedgerow.agent")
TOKEN_FILE = "device-token"
NAME_FILE = "device-name"


class NoToken(HedgerowError):
    """Neither a device token nor an enrollment token to start with."""


@dataclass(frozen=True, slots=True)
class Identity:
    device: str
    token: str

    def __repr__(self) -> str:
        return f"Identity(device={self.device!r}, ...)"


def saved(data_dir: Path) -> Identity | None:
    """The identity an enrollment saved, if any."""
    try:
        token = (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
        device = (data_dir / NAME_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return Identity(device, token) if token and device else None


def save(data_dir: Path, identity: Identity) -> None:
    """Keep an enrolled identity: each file written whole (renamed into place), readable by
    its owner alone, the token last so a half-saved identity is never taken for one."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(data_dir / NAME_FILE, identity.device)
    _write_private(data_dir / TOKEN_FILE, identity.token)


def _write_private(path: Path, text: str) -> None:
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{text}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staged, path)
    finally:
        Path(staged).unlink(missing_ok=True)


def enroll(
    client: ControllerClient,
    request: EnrollRequest,
    stopping: Callable[[], bool],
    interval: float,
    sleep: Callable[[float], object],
    rng: random.Random | None = None,
) -> Identity | None:
    """Enroll, trying again until it works or the agent stops (None): a controller that
    cannot be reached is asked again after a backoff; a refusal (an unknown, revoked or used
    up token, a name taken) is logged and asked again at the poll interval, for an operator
    may mend it; a rate limit is waited out."""
    rng = rng or random.Random()
    failures = 0
    while not stopping():
        try:
            enrolled = client.enroll(request)
        except EnrollmentRefused as refused:
            log.error("enrollment refused", device=request.device, error=str(refused))
            wait = refused.retry_after if refused.status == 429 else None
            sleep(wait if wait is not None else interval)
            continue
        except ControllerUnreachable as exc:
            failures += 1
            log.warning("enrollment failed, trying again", error=str(exc), attempts=failures)
            sleep(backoff(failures, interval, rng))
            continue
        log.info("enrolled", device=enrolled.device)
        return Identity(enrolled.device, enrolled.token)
    return None
