"""Docker image references, checked against the distribution reference grammar and kept verbatim.

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [ domain "/" ] path-component { "/" path-component }
    domain    := host [ ":" port ]        host := domain-name | IPv4 | "[" IPv6 "]"

A reference is never normalised: `ubuntu` and `docker.io/library/ubuntu:latest` are two images.
The parser works by splitting, not by one large regex, so it stays linear on any input and can say
which part is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_NAME = 255
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?")
_IPV6 = re.compile(r"\[[a-fA-F0-9:]+\]")
_PORT = re.compile(r"[0-9]+")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGESTS = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}


@dataclass(frozen=True, slots=True)
class ImageReference:
    """The parts of a reference, for display and for the agent's pull; `raw` is what was written."""

    raw: str
    domain: str | None
    path: str
    tag: str | None
    digest: str | None


def parse_image(raw: str) -> ImageReference:
    """Split and check `raw`; raise ValueError with a message that says what to fix."""
    if not raw:
        raise ValueError("image reference is empty")
    if raw != raw.strip():
        raise ValueError("image reference has leading or trailing whitespace")
    name, _, digest = raw.partition("@")
    if "@" in raw:
        _check_digest(digest)
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag: str | None = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(
                f"tag {tag!r} is invalid: up to 128 letters, digits, '_', '.' or '-', "
                "not starting with '.' or '-'"
            )
    if not name:
        raise ValueError("image reference has no repository name")
    if len(name) > MAX_NAME:
        raise ValueError(f"repository name is {len(name)} characters; at most {MAX_NAME}")
    domain, path = _split_domain(name)
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise ValueError(_path_message(component))
    return ImageReference(raw, domain, path, tag, digest or None)


def check_registry(host: str) -> None:
    """A registry address: the domain part of a reference (`host[:port]`, no scheme, no path)."""
    if "://" in host or "/" in host:
        raise ValueError(f"registry {host!r} must be a host[:port] without scheme or path")
    if not _is_domain(host):
        raise ValueError(f"registry {host!r} is not a valid host[:port]")


def _split_domain(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    if not sep:
        return None, name
    if _PATH_COMPONENT.fullmatch(first):
        # Either reading is valid; Docker's own split treats `a.b`, `a:1` and `localhost` as hosts.
        return (first, rest) if ("." in first or first == "localhost") else (None, name)
    if not _is_domain(first):
        if first.lower() == first or any(c in first for c in ":[]"):
            raise ValueError(f"registry host {first!r} is invalid")
        raise ValueError(_path_message(first))
    return first, rest


def _is_domain(text: str) -> bool:
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if not _IPV6.fullmatch(host):
            return False
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
    else:
        host, sep, after = text.partition(":")
        if sep:
            port = after
        if not all(_DOMAIN_COMPONENT.fullmatch(c) for c in host.split(".")):
            return False
    return port is None or bool(_PORT.fullmatch(port))


def _check_digest(digest: str) -> None:
    algorithm, _, value = digest.partition(":")
    pattern = _DIGESTS.get(algorithm)
    if pattern is None or not pattern.fullmatch(value):
        raise ValueError(
            f"digest {digest!r} is invalid: use sha256:<64 hex digits> or sha512:<128 hex digits>"
        )


def _path_message(component: str) -> str:
    if component.lower() != component and _PATH_COMPONENT.fullmatch(component.lower()):
        return f"repository name component {component!r} must be lower-case"
    return (
        f"repository name component {component!r} is invalid: use lower-case letters and digits, "
        "separated by '.', '_', '__' or '-'"
    )
