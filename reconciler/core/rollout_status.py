"""A rollout's record as the store keeps it, and as operators see it (pure): `hedgerow rollout
status`, `hedgerow status`, the operator API and the metrics all show these."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from reconciler.core.rollout import OUTCOMES, Active


def encode(record: Active) -> dict[str, Any]:
    encoded: dict[str, Any] = msgspec.to_builtins(record)
    return encoded


def decode(value: Any) -> Active:
    """A stored record; raises msgspec.ValidationError on anything else."""
    return msgspec.convert(value, Active)


def decoded(records: Mapping[str, Any]) -> list[Active]:
    """The store's records (`Store.rollouts`), by deployment."""
    return [decode(record) for _, record in sorted(records.items())]


def counts(record: Active) -> dict[str, int]:
    """Devices by outcome, over every wave."""
    total: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    for tally in record.progress.values():
        for outcome, n in tally.items():
            total[outcome] = total.get(outcome, 0) + n
    return total


def current_wave(record: Active) -> str | None:
    names = list(record.progress)
    return names[record.state.wave] if record.state.wave < len(names) else None


def _time(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat()


def rollout_json(record: Active) -> dict[str, Any]:
    return {
        "deployment": record.deployment,
        "application": record.application,
        "from": record.source.release,
        "to": record.target.release,
        "revision": record.revision,
        "state": record.state.phase,
        "wave": current_wave(record),
        "waveStartedAt": _time(record.wave_started_at),
        "startedAt": _time(record.started_at),
        "devices": counts(record),
        "waves": [{"name": name, "devices": tally} for name, tally in record.progress.items()],
        "failed": [
            {"device": device, "reason": record.reasons.get(device, "")}
            for device in sorted(record.state.failed)
        ],
    }


def summary(record: Active) -> str:
    """One line: `hedgerow status` shows one per rollout in progress."""
    tally = ", ".join(f"{n} {kind}" for kind, n in counts(record).items() if n)
    wave = current_wave(record)
    at = f" wave {wave}" if wave else ""
    return (
        f"rollout {record.deployment}: {record.source.release} -> {record.target.release} "
        f"{record.state.phase}{at}; {tally or 'no device'}"
    )
