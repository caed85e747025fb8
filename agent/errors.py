"""Failures of engine steps, apart from `agent.engine` so that pure modules can handle them."""

from __future__ import annotations

from agent.steps import StartContainer
from reconciler.errors import HedgerowError


class EngineError(HedgerowError):
    """A step or a read failed; the message names what and why, without secrets."""


class PullError(EngineError):
    """An image could not be downloaded: nothing has been switched yet."""


class DiskSpaceError(PullError):
    """Too little free space where the engine keeps images: a pull could fill the device."""


class ContainerFailed(EngineError):
    """A container exited (or restarted) right after its start: the release does not run."""

    def __init__(self, step: StartContainer, exit_code: int | None, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code


class Stopped(HedgerowError):
    """SIGTERM or SIGINT cut a long poll short: the loop ends without calling it a failure."""
