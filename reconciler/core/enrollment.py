"""Enrollment, the GitOps way: a shared token lets a device join by itself, and a commit
admits it.

A device that presents an enrollment token gets its own device token; until a Device manifest
with its name is in the applied revision it is Pending (it polls and gets an empty document).
Everything here is pure: the decision (`refusal`), the token's state, the labels an operator
types, and the Device manifest to commit (`device_manifest`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import yaml

from reconciler.errors import HedgerowError
from reconciler.manifests.model.fields import check_label_key, check_label_value

TokenState = Literal["active", "expired", "revoked", "used"]
API_VERSION = "hedgerow.dev/v1alpha1"


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    """A shared token as stored (its hash aside): who may join with it, and how often."""

    name: str
    labels: Mapping[str, str]
    created_at: datetime
    expires_at: datetime | None = None
    max_uses: int | None = None
    uses: int = 0
    allow_reenroll: bool = False
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used"
        return "active"


@dataclass(frozen=True, slots=True)
class EnrolledDevice:
    """A device that joined with an enrollment token: what it said of itself, and the
    token's labels, for the Device manifest an operator commits. (Its facts are stored apart,
    with every device's: `Store.device_facts`.)"""

    device: str
    enrollment: str  # the enrollment token's name
    system_model: str
    labels: Mapping[str, str]
    at: datetime


class EnrollmentRefused(HedgerowError):
    """An enrollment the controller refuses: `status` is the HTTP status it answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_REFUSALS: dict[TokenState, str] = {
    "revoked": "this enrollment token was revoked",
    "expired": "this enrollment token has expired",
    "used": "this enrollment token has been used as many times as it allows",
}


def refusal(token: EnrollmentToken, *, name_taken: bool, now: datetime) -> EnrollmentRefused | None:
    """Why `token` may not enroll a device under a name (`name_taken`: a device token exists
    for it already), or None: it may, replacing the old token when the name is taken."""
    state = token.state(now)
    if state != "active":
        return EnrollmentRefused(403, _REFUSALS[state])
    if name_taken and not token.allow_reenroll:
        return EnrollmentRefused(
            409,
            "a device with this name is enrolled already; enroll a re-imaged device with a "
            "token made with --allow-reenroll",
        )
    return None


def pending(enrolled: Collection[str], admitted: Collection[str]) -> list[str]:
    """Enrolled devices no Device manifest of the applied revision names, sorted."""
    return sorted(set(enrolled).difference(admitted))


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` as Kubernetes labels; ValueError naming the first bad one."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"label {item!r} is not key=value")
        check_label_key(key)
        check_label_value(value)
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value
    return labels


_TTL_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """`30m`, `72h` or `7d`: how long an enrollment token is good for."""
    number, unit = text[:-1], text[-1:]
    if unit not in _TTL_UNITS or not number.isdigit() or int(number) == 0:
        raise ValueError(f"{text!r} is not a duration such as 30m, 72h or 7d")
    return timedelta(seconds=int(number) * _TTL_UNITS[unit])


def device_manifest(device: EnrolledDevice) -> str:
    """The Device manifest that admits `device`: its name, the system model it reported, and
    its enrollment token's labels."""
    metadata: dict[str, Any] = {"name": device.device}
    if device.labels:
        metadata["labels"] = dict(sorted(device.labels.items()))
    document = {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": metadata,
        "spec": {"systemModel": device.system_model},
    }
    header = (
        f"# Enrolled {device.at:%Y-%m-%d %H:%M:%S}Z with enrollment token {device.enrollment}.\n"
        "# Commit this file to admit the device.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)
