"""The fleet's devices as people look at them: admitted (a Device manifest of the applied
revision names them) or Pending (enrolled, not admitted yet), with what they said of
themselves and when they were last heard from. Pure: the CLI and the operator API build the
same rows from what the store holds."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from reconciler import wire
from reconciler.core.enrollment import EnrolledDevice

FactsRow = tuple[wire.Facts | None, datetime | None, datetime | None]  # facts, reported, polled


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device: str
    admitted: bool
    enrollment: str | None = None  # the enrollment token it joined with; None: a hand-made token
    system_model: str | None = None  # as it reported at enrollment
    labels: Mapping[str, str] = field(default_factory=dict)  # its enrollment token's
    enrolled_at: datetime | None = None
    facts: wire.Facts | None = None
    facts_at: datetime | None = None
    reported_at: datetime | None = None  # its last status report
    polled_at: datetime | None = None  # its last poll, to within about a minute

    @property
    def pending(self) -> bool:
        return not self.admitted

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "condition": "Pending" if self.pending else "Admitted",
            "enrollment": self.enrollment,
            "systemModel": self.system_model,
            "labels": dict(self.labels),
            "enrolledAt": iso(self.enrolled_at),
            "facts": None if self.facts is None else msgspec.to_builtins(self.facts),
            "factsAt": iso(self.facts_at),
            "lastReport": iso(self.reported_at),
            "lastPoll": iso(self.polled_at),
        }


def inventory(
    admitted: Collection[str],
    enrolled: Mapping[str, EnrolledDevice],
    facts: Mapping[str, FactsRow],
    reported: Mapping[str, datetime],
) -> list[DeviceInfo]:
    """Every device of the applied revision and every enrolled one, by name."""
    rows = []
    for name in sorted(set(admitted).union(enrolled)):
        joined = enrolled.get(name)
        known, facts_at, polled_at = facts.get(name, (None, None, None))
        rows.append(
            DeviceInfo(
                device=name,
                admitted=name in admitted,
                enrollment=joined.enrollment if joined else None,
                system_model=joined.system_model if joined else None,
                labels=dict(joined.labels) if joined else {},
                enrolled_at=joined.at if joined else None,
                facts=known,
                facts_at=facts_at,
                reported_at=reported.get(name),
                polled_at=polled_at,
            )
        )
    return rows


def iso(at: datetime | None) -> str | None:
    """A time as JSON shows it (RFC 3339), or None."""
    return None if at is None else at.isoformat()


def human_bytes(count: object) -> str:
    """Bytes for people (`1.5 GiB`); `-` for a fact the device did not report."""
    if not isinstance(count, int) or isinstance(count, bool):
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
