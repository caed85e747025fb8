"""Who this device is, when it enrolls itself: its name (the hostname, made a DNS label) and
its system model (the device tree's model string, or the DMI product name)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from reconciler.errors import HedgerowError

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_OTHER = re.compile(r"[^a-z0-9-]+")
# Where Linux shows the model: the device tree on boards (Raspberry Pi, Jetson), DMI on PCs.
MODEL_FILES = (
    "proc/device-tree/model",
    "sys/firmware/devicetree/base/model",
    "sys/class/dmi/id/product_name",
)


class IdentityError(HedgerowError, ValueError):
    """This device's name or model cannot be told: the message says which flag to pass."""


def device_name(hostname: str) -> str:
    """`hostname` as a Device name (RFC 1123 label): its first label, lower case, with runs
    of other characters made one `-`. IdentityError when nothing of it is left, or more than
    63 characters (cut, it could name another device)."""
    first = hostname.strip().split(".", 1)[0].lower()
    name = _OTHER.sub("-", first).strip("-")
    if not name or len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise IdentityError(
            f"the hostname {hostname!r} cannot be made a device name (a DNS label of at most "
            "63 characters: a-z, 0-9 and -): pass --device NAME"
        )
    return name


def check_name(name: str) -> None:
    """IdentityError unless `name` is a Device name as given (--device): not normalised."""
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise IdentityError(
            f"--device {name!r} is not a device name: a DNS label of at most 63 characters "
            "(a-z, 0-9 and -)"
        )


def this_device_name() -> str:
    return device_name(socket.gethostname())


def system_model(root: Path = Path("/")) -> str:
    """The model string Linux shows (device tree, then DMI); IdentityError when none."""
    for relative in MODEL_FILES:
        try:
            raw = (root / relative).read_bytes()
        except OSError:
            continue
        model = raw.replace(b"\x00", b" ").decode("utf-8", "replace").strip()
        if model and model.lower() not in ("none", "default string", "to be filled by o.e.m."):
            return model[:253]
    raise IdentityError(
        "this device's system model cannot be read from the device tree or DMI: pass "
        "--system-model MODEL"
    )
