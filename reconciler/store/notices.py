"""What replicas tell each other through PostgreSQL's NOTIFY (see `cluster`): pure, so the
store (which sends them in its transactions) needs no driver beyond its own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

APPLIED = "hedgerow_applied"  # payload: the sha applied
OBSERVED = "hedgerow_observed"  # payload: the sender, then devices, a line each
WAKE = "hedgerow_wake"  # payload: the sender
ROLLOUTS = "hedgerow_rollouts"  # payload: the sender; a rollout moved devices
CHANNELS = (APPLIED, OBSERVED, WAKE, ROLLOUTS)
PAYLOAD_BYTES = 7_000  # NOTIFY payloads must stay under 8,000 bytes


def observed_payloads(sender: str, devices: Iterable[str]) -> Iterator[str]:
    """`OBSERVED` payloads for `devices`: the sender's name, then as many devices as fit."""
    lines: list[str] = [sender]
    size = len(sender.encode())
    for device in devices:
        if len(lines) > 1 and size + len(device.encode()) + 1 > PAYLOAD_BYTES:
            yield "\n".join(lines)
            lines, size = [sender], len(sender.encode())
        lines.append(device)
        size += len(device.encode()) + 1
    if len(lines) > 1:
        yield "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification from another replica (or a reconnection: `channel` None, a missed
    notification may have been lost)."""

    channel: str | None
    sender: str = ""
    sha: str = ""
    devices: tuple[str, ...] = ()


def parse(channel: str, payload: str) -> Notice:
    """A notification as a Notice (pure)."""
    if channel == APPLIED:
        return Notice(channel, sha=payload)
    sender, *devices = payload.split("\n")
    return Notice(channel, sender=sender, devices=tuple(devices))
