"""What the controller takes of an agent's report beyond its wire types: pure checks.

The wire types bound every value as it is decoded; what they cannot say is checked here, over
the decoded report, before anything is stored: each event time has an offset and is a time the
database can hold once in UTC, and a sequence number names one event, never two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler import wire
from reconciler.errors import HedgerowError

# Event times the store can hold and read back in any session time zone (PostgreSQL answers in
# its own, up to a day away from UTC): a day inside the years 1 to 9999 at either end.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


class InvalidReport(HedgerowError, ValueError):
    """The report cannot be stored as it is (422); the message names the field."""


class SequenceConflict(HedgerowError):
    """A sequence number of the report's journal names another event already (409): storing
    one would drop the other, so neither is."""


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One event of a report, its time in UTC."""

    seq: int
    at: datetime
    kind: str
    message: str
    deployment: str | None

    def content(self) -> tuple[datetime, str, str, str | None]:
        """What an identical retry repeats: the sequence number names this and nothing else."""
        return self.at, self.kind, self.message, self.deployment


def checked_events(report: wire.StatusReport) -> list[AgentEvent]:
    """The report's events in sequence order, each once (an identical repeat is a retry).
    Raises InvalidReport for a bad time and SequenceConflict for a number used twice."""
    found: dict[int, AgentEvent] = {}
    for index, event in enumerate(report.events):
        checked = AgentEvent(
            event.seq,
            utc_time(event.at, f"$.events[{index}].at"),
            event.kind,
            event.message,
            event.deployment,
        )
        first = found.setdefault(event.seq, checked)
        if first.content() != checked.content():
            raise SequenceConflict(
                f"$.events[{index}].seq: the report holds two different events numbered "
                f"{event.seq}; a sequence number names one event"
            )
    return [found[seq] for seq in sorted(found)]


def utc_time(value: str, where: str) -> datetime:
    """An agent's RFC 3339 time in UTC; one without an offset would be ambiguous once stored,
    and one outside EARLIEST..LATEST could not be stored or read back."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidReport(f"{where}: {value!r} is not an RFC 3339 time") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidReport(f"{where}: event time {value!r} has no UTC offset")
    try:
        in_utc = at.astimezone(UTC)
    except OverflowError:  # beyond the years 1 to 9999 once in UTC
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise InvalidReport(
            f"{where}: event time {value!r} is out of range: from {EARLIEST.isoformat()} "
            f"to {LATEST.isoformat()} in UTC"
        )
    return in_utc
