"""What the store hands back and takes: plain immutable records, no SQLAlchemy in sight."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from reconciler import wire
from reconciler.core.status import DeploymentStatus

JSONObject = dict[str, Any]
FingerprintKind = Literal["credential", "release", "volume", "network", "secret"]
FINGERPRINT_KINDS: tuple[str, ...] = get_args(FingerprintKind)


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    """One git revision the controller tried: valid or not, with its findings."""

    sha: str
    valid: bool
    at: datetime  # of the last attempt
    errors: list[JSONObject]
    applied_at: datetime | None
    message: str | None = None  # the commit's subject line, where the source gives it


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The status of one deployment on one device, as the core computed it."""

    deployment: str
    device: str
    status: DeploymentStatus


@dataclass(frozen=True, slots=True)
class EventIn:
    """An event to append; the store gives it an id."""

    at: datetime
    device: str | None  # None for events of a revision as a whole (a rejected commit)
    kind: str  # deploy, rejected, started, error, ...
    message: str
    deployment: str | None = None
    revision: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event; `agent_seq` is set for events a device's agent reported, and
    `agent_epoch` names the agent's journal (None for agents older than journal epochs)."""

    id: int
    at: datetime
    device: str | None
    kind: str
    message: str
    deployment: str | None
    revision: str | None
    agent_seq: int | None
    agent_epoch: str | None = None

    def to_json(self) -> JSONObject:
        """As `hedgerow events -o json`, the operator API and the dashboard show it."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "device": self.device,
            "deployment": self.deployment,
            "event": self.kind,
            "message": self.message,
            "revision": self.revision,
        }


@dataclass(frozen=True, slots=True)
class StoredReport:
    """One agent report to store: its observed state (None when unchanged: only its events
    are appended) and its events, numbered within its journal's epoch."""

    observed: wire.StatusReport | None
    device: str
    epoch: str | None
    events: Sequence[tuple[int, EventIn]]
    reset: EventIn | None  # recorded when this is the first report of a new journal
    facts: wire.Facts | None = None  # None when unchanged: not written again


@dataclass(frozen=True, slots=True)
class PlannedDevice:
    """One device's plan to store: its deployments' statuses (the others are pruned), the
    events of its new actions, and the generation of its reasons to be planned that the plan
    saw (cleared with it; None when it had none)."""

    device: str
    statuses: Sequence[DeploymentStatus]
    events: Sequence[EventIn]
    generation: int | None
