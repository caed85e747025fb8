"""SOPS-encrypted YAML with age keys, read and written without the sops binary.

Files written here decrypt with ``sops -d`` 3.11.0 and files written by sops decrypt here;
everything is text in, text out, except `find_identities` at the end, which looks for age
keys where sops does. Details checked against the real sops 3.11.0:

* A value becomes ``ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]``: AES-256-GCM under a random
  32-byte data key, a 32-byte IV, and as AAD the path of mapping keys joined and ended by
  ``:`` (``spec:password:``); list indices are not part of the path. ``""`` and null are
  never encrypted.
* Scalars are typed as Go's yaml.v3 types them, not as PyYAML (YAML 1.1) does: ``yes`` and
  ``on`` are strings; ``0x1F``, ``0o17``, ``017`` and ``1_000`` are ints; ``08`` and
  ``1e3`` are floats; an unquoted ``2024-01-02`` is a ``time``, written back (and returned
  by `decrypt`) as Go's RFC 3339 rendering, ``2024-01-02T00:00:00Z``. Keys must be strings
  and not ``<<`` (sops writes any ``<<`` key back as a merge key).
* The MAC is SHA-512 over the plaintext of every non-null leaf in document order (with
  ``mac_only_encrypted``: over SHA-256(b"sops") then the encrypted leaves only), stored
  encrypted with the ``lastmodified`` time as AAD. It is always checked.
* Comments are kept, encrypted where their enclosing collection is: in a mapping as a
  ``#ENC[…,type:comment]`` line, in a list as a ``- ENC[…,type:comment]`` item (both as
  sops writes them), with the enclosing collection's path as AAD. A comment at the end of
  a line moves above that line's entry, as sops does. Where sops would misread its own
  layout, a comment moves to a place that reads back the same: one ending a nested mapping
  after a nested block goes to the end of that block, one opening or closing a list
  inside a list goes next to it. Comments are not part of the MAC (as in sops) and
  `decrypt` does not return them: it returns plain data.
* Regular expressions in `Rules` run on Python's ``re`` (sops uses Go's RE2); keep to the
  common subset. Only age keys are supported: no PGP/KMS, key groups or comment regexes.
* Two sops defects show here too: sops writes a cleartext ``-0.0`` as ``-0`` and then fails
  its own MAC check (so does `decrypt`); and it writes a cleartext multi-line string led by
  a blank, inside a list, as a block scalar indented against the YAML spec, which PyYAML
  rejects (`decrypt` raises "invalid YAML"). Files written here have neither problem.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import hashlib
import hmac
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import pyrage
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.errors import HedgerowError

__all__ = [
    "ENC_PATTERN",
    "SOPS_VERSION",
    "Identity",
    "Metadata",
    "Rules",
    "SopsError",
    "decrypt",
    "encrypt",
    "find_identities",
    "is_encrypted_value",
    "load_yaml",
]

SOPS_VERSION = "3.11.0"
Identity = Any  # a pyrage identity (pyrage ships no type stubs)

ENC_PATTERN = re.compile(
    r"ENC\[AES256_GCM,data:(?P<data>[A-Za-z0-9+/]*={0,2}),iv:(?P<iv>[A-Za-z0-9+/]+={0,2}),"
    r"tag:(?P<tag>[A-Za-z0-9+/]+={0,2}),type:(?P<type>[a-z]+)\]\Z"
)

_TYPES = ("str", "int", "float", "bool", "time")
_MAC_ONLY_ENCRYPTED_INIT = hashlib.sha256(b"sops").digest()
_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1


class SopsError(HedgerowError):
    """A file could not be encrypted or decrypted; the message never holds a secret."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class _Fail(HedgerowError):
    """Internal failure carrying only a reason; the public functions add the file name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fail(reason: str) -> NoReturn:
    raise _Fail(reason)


# ---------------------------------------------------------------------------------------------
# Rules and metadata

_RULE_FIELDS = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex")


@dataclass(frozen=True)
class Rules:
    """Which keys are encrypted: exactly one rule (default: ``unencrypted_suffix=_unencrypted``).

    A rule looks at every key on the path to a value, so once a key matches, its whole
    subtree follows; the key names themselves are written unchanged.
    """

    unencrypted_suffix: str | None = None
    encrypted_suffix: str | None = None
    unencrypted_regex: str | None = None
    encrypted_regex: str | None = None
    mac_only_encrypted: bool = False

    def __post_init__(self) -> None:
        given = [name for name in _RULE_FIELDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"use only one of {', '.join(_RULE_FIELDS)}; got {', '.join(given)}")
        if not given:
            object.__setattr__(self, "unencrypted_suffix", "_unencrypted")
            return
        value = getattr(self, given[0])
        if not isinstance(value, str) or not value:
            raise ValueError(f"{given[0]} must be a non-empty string")
        if given[0].endswith("_regex"):
            _regex(value)

    @property
    def rule(self) -> tuple[str, str]:
        """The one rule in force, as (metadata key, value)."""
        for name in _RULE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("Rules always holds one rule")  # pragma: no cover

    def encrypts(self, path: Sequence[str]) -> bool:
        """Whether a value (or comment) under this path of keys is encrypted, as sops decides."""
        name, value = self.rule
        if name == "unencrypted_suffix":
            return not any(key.endswith(value) for key in path)
        if name == "encrypted_suffix":
            return any(key.endswith(value) for key in path)
        matched = any(_regex(value).search(key) for key in path)
        return matched if name == "encrypted_regex" else not matched


@functools.lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class Metadata:
    """The parts of a file's ``sops`` block that callers need."""

    recipients: tuple[str, ...]
    rules: Rules
    lastmodified: datetime
    version: str


# ---------------------------------------------------------------------------------------------
# The document model: comments kept in place, scalars typed as yaml.v3 types them


@dataclass(slots=True)
class _Comment:
    text: str  # after the '#'; an ENC[...] string once encrypted


@dataclass(slots=True, repr=False)
class _Scalar:
    kind: str  # str | int | float | bool | null | time | uint | enc (raw ENC[...] text)
    value: Any  # Python value; for time the RFC 3339 text Go renders; for enc the ENC string

    def __repr__(self) -> str:  # values may be secrets
        return f"_Scalar({self.kind})"


@dataclass(slots=True)
class _Map:
    entries: list[tuple[str, _Node] | _Comment]


@dataclass(slots=True)
class _Seq:
    items: list[_Node | _Comment]


@dataclass(slots=True)
class _Literal:
    text: str  # emitted as a `|` block scalar (the armored age stanzas)


_Node = _Map | _Seq | _Scalar | _Literal


# ---------------------------------------------------------------------------------------------
# Scalar typing: Go yaml.v3's resolve(), strconv and time formatting

_RESOLVE_MAP: dict[str, tuple[str, Any]] = {
    **{s: ("bool", True) for s in ("true", "True", "TRUE")},
    **{s: ("bool", False) for s in ("false", "False", "FALSE")},
    **{s: ("null", None) for s in ("", "~", "null", "Null", "NULL")},
    **{s: ("float", math.nan) for s in (".nan", ".NaN", ".NAN")},
    **{s: ("float", math.inf) for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: ("float", -math.inf) for s in ("-.inf", "-.Inf", "-.INF")},
}
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?\Z")
_GO_INT = re.compile(r"([+-]?)(0[bB][01]+|0[oO][0-7]+|0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")
_GO_TIMESTAMPS = (  # yaml.v3's allowedTimestampFormats, as regular expressions
    re.compile(
        r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})"
        r"(?:[.,]([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
    ),
    re.compile(
        r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2}) ([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})"
        r"(?:[.,]([0-9]+))?()\Z"
    ),
    re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})()()()()()\Z"),
)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_GO_BOOL = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_GO_ATOI = re.compile(r"[+-]?[0-9]+\Z")
_GO_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_GO_FLOAT_SPECIAL = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf}


def _resolve_plain(text: str) -> _Scalar:
    """Type an untagged plain scalar exactly as yaml.v3 does when decoding into interface{}."""
    if text in _RESOLVE_MAP:
        kind, value = _RESOLVE_MAP[text]
        return _Scalar(kind, value)
    first = text[:1]
    if first == "." and _DOT_FLOAT.match(text):
        return _Scalar("float", float(text))
    if first and first in "+-0123456789":
        stamp = _go_timestamp(text)
        if stamp is not None:
            return _Scalar("time", stamp)
        plain = text.replace("_", "")
        number = _go_int(plain)
        if number is not None and _INT64[0] <= number <= _INT64[1]:
            return _Scalar("int", number)
        if number is not None and 0 <= number <= _UINT64_MAX and plain[0] != "+":
            return _Scalar("uint", number)
        if _YAML_FLOAT.match(plain) and not math.isinf(value := float(plain)):
            return _Scalar("float", value)  # an overflow is a range error in Go: stays a string
    return _Scalar("str", text)


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64) without the range check."""
    match = _GO_INT.match(text)
    if match is None:
        return None
    sign, digits = match.groups()
    lowered = digits.lower()
    if lowered.startswith(("0b", "0o", "0x")):
        base = {"b": 2, "o": 8, "x": 16}[lowered[1]]
        number = int(digits[2:], base)
    else:
        number = int(digits, 8 if digits.startswith("0") else 10)
    return -number if sign == "-" else number


def _go_timestamp(text: str) -> str | None:
    """yaml.v3's timestamp parsing; returns Go's time.MarshalText (RFC 3339 nano) or None."""
    for pattern in _GO_TIMESTAMPS:
        match = pattern.match(text)
        if match is not None:
            return _render_time(match.groups(), nano=True)
    return None


def _render_time(groups: Sequence[str | None], *, nano: bool) -> str | None:
    """Validate fields as Go's time.Parse does and render them as Go's RFC 3339 formats."""
    year, month, day, hour, minute, second, fraction, zone = groups
    y, mo, d = int(year or 0), int(month or 0), int(day or 0)
    h, mi, s = int(hour or 0), int(minute or 0), int(second or 0)
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and h < 24 and mi < 60 and s < 60):
        return None
    offset = 0
    if zone and zone != "Z":
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 24 or zm > 60:
            return None
        offset = (zh * 60 + zm) * (-1 if zone[0] == "-" else 1)
    rendered = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    nanos = (fraction or "")[:9].ljust(9, "0").rstrip("0")
    if nano and nanos:
        rendered += "." + nanos
    if offset == 0:
        return rendered + "Z"
    sign = "-" if offset < 0 else "+"
    return f"{rendered}{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _go_float(value: float) -> str:
    """strconv.FormatFloat(value, 'f', -1, 64): shortest round-trip digits, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plaintext(scalar: _Scalar) -> bytes:
    """The bytes sops encrypts and feeds to the MAC for a scalar (its ToBytes)."""
    kind, value = scalar.kind, scalar.value
    if kind == "str" or kind == "time":
        return str(value).encode("utf-8")
    if kind == "int":
        return str(value).encode("ascii")
    if kind == "float":
        return _go_float(value).encode("ascii")
    if kind == "bool":
        return b"True" if value else b"False"
    raise AssertionError(f"no plaintext for a {kind}")  # pragma: no cover


def _from_plaintext(kind: str, data: bytes) -> _Scalar | None:
    """Parse a decrypted value of the given ENC type as sops does; None if it is not valid."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if kind == "str":
        return _Scalar("str", text)
    if kind == "int":
        ok = _GO_ATOI.match(text) and _INT64[0] <= int(text) <= _INT64[1]
        return _Scalar("int", int(text)) if ok else None
    if kind == "float":
        number = _parse_go_float(text)
        return None if number is None else _Scalar("float", number)
    if kind == "bool":
        return _Scalar("bool", _GO_BOOL[text]) if text in _GO_BOOL else None
    match = _RFC3339.match(text)  # kind == "time"
    stamp = _render_time(match.groups(), nano=True) if match else None
    return None if stamp is None else _Scalar("time", stamp)


def _parse_go_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64) for the forms sops writes (digits, +Inf, -Inf, NaN)."""
    lowered = text.lower()
    if lowered == "nan":
        return math.nan
    if lowered.lstrip("+-") in _GO_FLOAT_SPECIAL:
        return -math.inf if lowered.startswith("-") else math.inf
    if not _GO_FLOAT.match(text) or math.isinf(number := float(text)):
        return None
    return number


# ---------------------------------------------------------------------------------------------
# Parsing: PyYAML composes the nodes, scalars are typed by _resolve_plain, comments are
# found in the gaps between tokens and placed in the collection that encloses them

_PLAIN_TAG = "!hedgerow:plain"
_CORE = "tag:yaml.org,2002:"
_MAX_NODES = 1_000_000  # bounds alias expansion ("billion laughs")


class _Loader(yaml.SafeLoader):
    """Composes nodes only; untagged plain scalars keep a marker tag for yaml.v3 typing."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class _Spot:
    """A comment found in the source."""

    index: int
    line: int
    column: int
    text: str
    trailing: bool  # content precedes it on its line


@dataclass(slots=True)
class _Box:
    """A collection node as a place where comments can land."""

    node: yaml.Node
    depth: int
    start: int  # comments at or after this index may be inside
    end: int
    indent: int
    children: list[tuple[int, int]]  # (index, line) where each entry starts
    parent: _Box | None = None
    slot: int = 0  # the entry of the parent holding this collection
    kids: list[_Box] = field(default_factory=list)  # nested collections, in order
    kid_starts: list[int] = field(default_factory=list)
    places: list[tuple[int, str]] = field(default_factory=list)  # (entry index, comment)

    def chain(self, index: int) -> list[_Box]:
        """The collections open at `index`, outermost first (sibling regions are disjoint)."""
        chain, box = [self], self
        while box.kids:
            kid = box.kids[max(bisect.bisect_right(box.kid_starts, index) - 1, 0)]
            if not kid.start <= index < kid.end:
                break
            chain.append(kid)
            box = kid
        return chain


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        _fail(f"invalid YAML: {what}{where}")
    except yaml.YAMLError:
        _fail("invalid YAML: unreadable characters")
    except RecursionError:
        _fail("invalid YAML: nested too deeply")


def _parse(text: str, *, comments: bool) -> _Map:
    """The document's top-level mapping, typed like yaml.v3, with its comments if asked."""
    root = _compose(text)
    if not isinstance(root, yaml.MappingNode):
        _fail("the document must be a YAML mapping")
    places: dict[int, list[tuple[int, str]]] = {}
    if comments:
        places = _place_comments(text, root)
    try:
        built = _Builder(places).node(root)
    except RecursionError:
        _fail("invalid YAML: nested too deeply")
    assert isinstance(built, _Map)
    return built


class _Builder:
    """Turns composed nodes into the document model, weaving comments in."""

    def __init__(self, places: dict[int, list[tuple[int, str]]]) -> None:
        self.places = places
        self.count = 0
        self.active: set[int] = set()

    def node(self, node: yaml.Node) -> _Node:
        self.count += 1
        if self.count > _MAX_NODES:
            _fail("the document expands to too many nodes (aliases)")
        if id(node) in self.active:
            _fail(f"recursive alias at line {node.start_mark.line + 1}")
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return _Map(self._woven([self._entry(k, v) for k, v in node.value], node))
            return _Seq(self._woven([self.node(item) for item in node.value], node))
        finally:
            self.active.discard(id(node))

    def _entry(self, key: yaml.Node, value: yaml.Node) -> tuple[str, _Node]:
        where = f"line {key.start_mark.line + 1}"
        if not isinstance(key, yaml.ScalarNode):
            _fail(f"key at {where}: only string keys are supported")
        if key.value == "<<":  # sops writes even a quoted "<<" back as a merge key
            _fail(f"key at {where}: merge keys (<<) are not supported")
        parsed = _scalar(key)
        if parsed.kind != "str":
            _fail(f"key at {where}: only string keys are supported, not {parsed.kind}")
        return parsed.value, self.node(value)

    def _woven(self, children: list[Any], node: yaml.Node) -> list[Any]:
        out: list[Any] = []
        pending: dict[int, list[_Comment]] = {}
        for at, text in self.places.get(id(node), []):
            pending.setdefault(min(at, len(children)), []).append(_Comment(text))
        for position, child in enumerate(children):
            out.extend(pending.get(position, []))
            out.append(child)
        out.extend(pending.get(len(children), []))
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(out, node)
        return out


def _check_duplicates(entries: list[Any], node: yaml.Node) -> None:
    seen: set[str] = set()
    for entry in entries:
        if isinstance(entry, tuple):
            if entry[0] in seen:
                line = node.start_mark.line + 1
                _fail(f"duplicate key {entry[0]!r} in the mapping at line {line}")
            seen.add(entry[0])


def _scalar(node: yaml.ScalarNode) -> _Scalar:
    """A scalar typed as yaml.v3 would: plain ones resolved, quoted ones strings."""
    tag, text = node.tag, node.value
    if tag == _PLAIN_TAG:
        scalar = _resolve_plain(text)
    elif tag == _CORE + "str" or not tag.startswith(_CORE):
        scalar = _Scalar("str", text)  # yaml.v3 reads unknown local tags as strings
    else:
        scalar = _tagged(tag[len(_CORE) :], text, node.start_mark.line + 1)
    if scalar.kind == "uint":
        _fail(f"integer at line {node.start_mark.line + 1} is out of range for sops")
    return scalar


def _tagged(name: str, text: str, line: int) -> _Scalar:
    """A scalar with an explicit core tag such as !!int."""
    if name == "merge" and text == "<<":  # how sops (yaml.v3) writes the string "<<"
        return _Scalar("str", text)
    want = {"int": "int", "float": "float", "bool": "bool", "null": "null", "timestamp": "time"}
    if name not in want:
        _fail(f"scalar at line {line}: unsupported tag !!{name}")
    scalar = _resolve_plain(text)
    if want[name] == "float" and scalar.kind == "int":
        return _Scalar("float", float(scalar.value))
    if scalar.kind != want[name]:
        _fail(f"scalar at line {line} does not match its tag !!{name}")
    return scalar


class _Lines:
    """Line and column of an index, counting line breaks as PyYAML (and yaml.v3) do."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]

    def line(self, index: int) -> int:
        return bisect.bisect_right(self.starts, index) - 1

    def start(self, index: int) -> int:
        return self.starts[self.line(index)]


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _place_comments(text: str, root: yaml.Node) -> dict[int, list[tuple[int, str]]]:
    """Assign each comment to (collection, position before which it goes)."""
    lines = _Lines(text)
    boxes = list(_boxes(text, root, lines))
    boxes[0].start, boxes[0].end = 0, len(text) + 1  # the document holds everything
    by_node = {id(box.node): box for box in boxes}
    by_line: dict[int, list[tuple[int, _Box, int]]] = {}  # line -> entries, outermost first
    for box in sorted(boxes, key=lambda b: b.depth):
        for position, (index, line) in enumerate(box.children):
            by_line.setdefault(line, []).append((index, box, position))
    for spot in _comments(text, lines):
        box, position = _home(spot, boxes, by_line)
        if position == len(box.children):
            box = _sink(box, by_node)
            position = len(box.children)
        while _in_list(box) and position in (0, len(box.children)):
            # sops drops comments opening or closing a list within a list when it prints
            # the file; next to that list, in the outer one, they have the same AAD.
            assert box.parent is not None
            box, position = box.parent, box.slot + (position > 0)
        box.places.append((position, spot.text))
    return {id(box.node): box.places for box in boxes if box.places}


def _in_list(box: _Box) -> bool:
    """A list that is an item of a list."""
    parent = box.parent
    return isinstance(box.node, yaml.SequenceNode) and isinstance(
        getattr(parent, "node", None), yaml.SequenceNode
    )


def _sink(box: _Box, by_node: dict[int, _Box]) -> _Box:
    """Move a comment that ends a nested mapping into that mapping's last collection.

    Read back, yaml.v3 attaches a comment that follows a nested block to the deepest node
    before it, so sops would use another path as AAD and fail to decrypt it. Below its last
    collection the comment follows a scalar (or is a list item), which reads back unchanged.
    """
    while box.depth and isinstance(box.node, yaml.MappingNode) and box.node.value:
        inner = by_node.get(id(box.node.value[-1][1]))
        if inner is None or not inner.children:
            break
        box = inner
    return box


def _home(
    spot: _Spot, boxes: list[_Box], by_line: dict[int, list[tuple[int, _Box, int]]]
) -> tuple[_Box, int]:
    """Where a comment goes: above its line's outermost entry, else by indentation."""
    if spot.trailing:
        for index, box, position in by_line.get(spot.line, []):
            if index < spot.index:
                return box, position
    inside = [
        b
        for b in boxes[0].chain(spot.index)
        if b.indent <= spot.column and (b.children or not b.depth)
    ]
    box = inside[-1] if inside else boxes[0]
    return box, bisect.bisect_left(box.children, (spot.index, -1))  # entries before it


def _boxes(text: str, root: yaml.Node, lines: _Lines) -> Iterator[_Box]:
    """Every collection node once (aliases are not revisited), outermost first."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int, int, _Box | None, int]] = [
        (root, 0, root.start_mark.index, None, 0)
    ]
    while stack:
        node, depth, start, parent, slot = stack.pop()
        if id(node) in seen or isinstance(node, yaml.ScalarNode):
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            firsts = [key for key, _ in node.value]
            inner = [(value, key.end_mark.index) for key, value in node.value]
        else:  # an item's region starts where the previous one ended: after its own dash
            firsts = list(node.value)
            ends = [node.start_mark.index] + [item.end_mark.index for item in node.value]
            inner = [(item, ends[i]) for i, item in enumerate(node.value)]
        children = [(n.start_mark.index, n.start_mark.line) for n in firsts]
        indent = _indent(text, node, lines)
        box = _Box(node, depth, start, node.end_mark.index, indent, children)
        box.parent, box.slot = parent, slot
        if parent is not None:
            parent.kids.append(box)
            parent.kid_starts.append(start)
        yield box
        stack.extend((n, depth + 1, at, box, i) for i, (n, at) in reversed(list(enumerate(inner))))


def _indent(text: str, node: yaml.Node, lines: _Lines) -> int:
    """The column of a block collection's keys or dashes (a flow one's opening bracket)."""
    if getattr(node, "flow_style", False) or not node.value:
        return int(node.start_mark.column)
    if isinstance(node, yaml.MappingNode):
        return int(node.value[0][0].start_mark.column)
    first = node.value[0].start_mark
    line_start = lines.start(first.index)
    dash = text.rfind("-", line_start, first.index)
    return dash - line_start if dash >= 0 else int(node.start_mark.column)


_SKIPPED_TOKENS = (
    yaml.StreamStartToken,
    yaml.StreamEndToken,
    yaml.BlockEndToken,
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
)


def _comments(text: str, lines: _Lines) -> Iterator[_Spot]:
    """Comments lie in the gaps between tokens (and after a block scalar's indicator)."""
    spans: list[tuple[int, int]] = []
    for token in yaml.scan(text, Loader=_Loader):
        if isinstance(token, _SKIPPED_TOKENS):
            continue
        start, end = token.start_mark.index, token.end_mark.index
        if isinstance(token, yaml.ScalarToken) and token.style in ("|", ">"):
            header = _LINE_BREAK.search(text, start, end)
            header_end = header.start() if header else -1
            yield from _gap_comments(text, start + 1, header_end if header_end >= 0 else end, lines)
        spans.append((start, end))
    spans.sort()
    cursor = 0
    for start, end in spans:
        if start > cursor:
            yield from _gap_comments(text, cursor, start, lines)
        cursor = max(cursor, end)
    yield from _gap_comments(text, cursor, len(text), lines)


def _gap_comments(text: str, start: int, end: int, lines: _Lines) -> Iterator[_Spot]:
    """Comments between two tokens: a '#' after whitespace runs to the end of its line."""
    index = start
    while (index := text.find("#", index, end)) >= 0:
        if index > start and not text[index - 1].isspace():
            index += 1
            continue
        found = _LINE_BREAK.search(text, index, end)
        stop = found.start() if found else end
        line_start = lines.start(index)
        yield _Spot(
            index=index,
            line=lines.line(index),
            column=index - line_start,
            text=text[index + 1 : stop],
            trailing=bool(text[line_start:index].strip(" \t\ufeff")),
        )
        index = stop


# ---------------------------------------------------------------------------------------------
# AES-256-GCM values


def _seal(key: bytes, plaintext: bytes, aad: str, kind: str) -> str:
    """Encrypt one value as sops does: 32-byte IV, tag stored apart from the data."""
    iv = os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, plaintext, aad.encode("utf-8"))
    data, tag = sealed[:-16], sealed[-16:]
    b64 = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b64(data).decode()},iv:{b64(iv).decode()},"
        f"tag:{b64(tag).decode()},type:{kind}]"
    )


def _open(key: bytes, match: re.Match[str], aad: str) -> bytes | None:
    """Decrypt and authenticate one ENC value; None if it was altered or is malformed."""
    try:
        data, iv, tag = (base64.b64decode(match[g], validate=True) for g in ("data", "iv", "tag"))
        return AESGCM(key).decrypt(iv, data + tag, aad.encode("utf-8"))
    except (InvalidTag, ValueError, binascii.Error):
        return None


def is_encrypted_value(s: str) -> bool:
    """Whether `s` is a sops ``ENC[AES256_GCM,…]`` value."""
    return isinstance(s, str) and ENC_PATTERN.match(s) is not None


def _aad(path: Sequence[str]) -> str:
    return ":".join(path) + ":"


# ---------------------------------------------------------------------------------------------
# Encryption


@dataclass
class _Encryptor:
    key: bytes
    rules: Rules
    mac: Any  # hashlib's SHA-512 object

    def node(self, node: _Node, path: tuple[str, ...]) -> _Node:
        if isinstance(node, _Map):
            return _Map([self._entry(entry, path) for entry in node.entries])
        if isinstance(node, _Seq):
            return _Seq([self._item(item, path) for item in node.items])
        assert isinstance(node, _Scalar)
        return self.scalar(node, path)

    def _entry(self, entry: tuple[str, _Node] | _Comment, path: tuple[str, ...]) -> Any:
        if isinstance(entry, _Comment):
            sealed = self._comment(entry, path)
            return _Comment(sealed.value) if isinstance(sealed, _Scalar) else sealed
        return entry[0], self.node(entry[1], (*path, entry[0]))

    def _item(self, item: _Node | _Comment, path: tuple[str, ...]) -> _Node | _Comment:
        return self._comment(item, path) if isinstance(item, _Comment) else self.node(item, path)

    def _comment(self, comment: _Comment, path: tuple[str, ...]) -> _Comment | _Scalar:
        """An encrypted comment is a raw ENC value (sops writes it as an item in lists)."""
        if not comment.text or not self.rules.encrypts(path):
            return comment
        return _Scalar("enc", _seal(self.key, comment.text.encode(), _aad(path), "comment"))

    def scalar(self, scalar: _Scalar, path: tuple[str, ...]) -> _Scalar:
        if scalar.kind == "null":
            return scalar
        encrypted = self.rules.encrypts(path)
        plaintext = _plaintext(scalar)
        if encrypted or not self.rules.mac_only_encrypted:
            self.mac.update(plaintext)
        if not encrypted or (plaintext == b"" and scalar.kind == "str"):
            return scalar
        return _Scalar("enc", _seal(self.key, plaintext, _aad(path), scalar.kind))


def _new_mac(rules: Rules) -> Any:
    mac = hashlib.sha512()
    if rules.mac_only_encrypted:
        mac.update(_MAC_ONLY_ENCRYPTED_INIT)
    return mac


def encrypt(text: str, recipients: Sequence[str], rules: Rules, *, now: datetime, file: str) -> str:
    """Encrypt one plaintext YAML document for the age recipients; returns sops YAML text."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        stanzas = _age_stanzas(recipients)
        root = _parse(text, comments=True)
        if any(isinstance(e, tuple) and e[0] == "sops" for e in root.entries):
            _fail("the document already has a top-level 'sops' key: is it already encrypted?")
        key = os.urandom(32)
        encryptor = _Encryptor(key, rules, _new_mac(rules))
        body = encryptor.node(root, ())
        assert isinstance(body, _Map)
        lastmodified = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mac = _seal(key, encryptor.mac.hexdigest().upper().encode(), lastmodified, "str")
        body.entries.append(("sops", _metadata_node(stanzas(key), rules, lastmodified, mac)))
        return _emit(body)
    except _Fail as exc:
        raise SopsError(file, exc.reason) from None


def _age_stanzas(recipients: Sequence[str]) -> Callable[[bytes], list[tuple[str, str]]]:
    """Parse recipients up front; returns a function wrapping a data key for each of them."""
    if isinstance(recipients, str) or not recipients:
        _fail("at least one age recipient is needed")
    parsed = []
    for recipient in recipients:
        try:
            parsed.append((recipient, pyrage.x25519.Recipient.from_str(recipient)))
        except Exception:
            _fail(f"invalid age recipient {recipient!r}")

    def wrap(key: bytes) -> list[tuple[str, str]]:
        return [(r, pyrage.encrypt(key, [p], armored=True).decode("ascii")) for r, p in parsed]

    return wrap


def _metadata_node(
    stanzas: list[tuple[str, str]], rules: Rules, lastmodified: str, mac: str
) -> _Map:
    """The ``sops`` block, keys in the order sops writes them."""
    age = _Seq(
        [_Map([("recipient", _Scalar("str", r)), ("enc", _Literal(enc))]) for r, enc in stanzas]
    )
    entries: list[tuple[str, _Node] | _Comment] = [
        ("age", age),
        ("lastmodified", _Scalar("str", lastmodified)),
        ("mac", _Scalar("enc", mac)),
        (rules.rule[0], _Scalar("str", rules.rule[1])),
    ]
    if rules.mac_only_encrypted:
        entries.append(("mac_only_encrypted", _Scalar("bool", True)))
    entries.append(("version", _Scalar("str", SOPS_VERSION)))
    return _Map(entries)


# ---------------------------------------------------------------------------------------------
# Emission: block style, 4-space indents, comments as full lines (the layout sops writes)

_SAFE_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*( [A-Za-z0-9_./-]+)*\Z", re.ASCII)
_YAML11 = yaml.resolver.Resolver()
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _emit(root: _Map) -> str:
    lines: list[str] = []
    _emit_map(root, 0, lines)
    return "\n".join(lines) + "\n"


def _emit_map(node: _Map, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for entry in node.entries:
        if isinstance(entry, _Comment):
            lines.append(f"{pad}#{entry.text}")
        else:
            _emit_value(f"{pad}{_string(entry[0])}:", entry[1], indent, lines)


def _emit_seq(node: _Seq, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in node.items:
        if isinstance(item, _Comment):
            lines.append(f"{pad}#{item.text}")
        elif isinstance(item, _Map | _Seq) and _size(item):
            inner: list[str] = []
            if isinstance(item, _Map):
                _emit_map(item, indent + 2, inner)
            else:
                _emit_seq(item, indent + 2, inner)
            while len(inner) > 1 and inner[0].lstrip().startswith("#"):  # above the dash, as sops
                lines.append(pad + inner.pop(0).lstrip())
            lines.append(f"{pad}- {inner[0][indent + 2 :]}")
            lines.extend(inner[1:])
        else:
            _emit_value(f"{pad}-", item, indent, lines)


def _emit_value(head: str, node: _Node, indent: int, lines: list[str]) -> None:
    """`head` is ``key:`` or ``-`` at column `indent`; the value follows it."""
    if isinstance(node, _Map) and node.entries:
        lines.append(head)
        _emit_map(node, indent + 4, lines)
    elif isinstance(node, _Seq) and node.items:
        lines.append(head)
        _emit_seq(node, indent + 4, lines)
    elif isinstance(node, _Literal) and _literal_ok(node.text):
        lines.append(f"{head} |")
        lines.extend(" " * (indent + 2) + line for line in node.text[:-1].split("\n"))
    else:
        lines.append(f"{head} {_inline(node)}")


def _size(node: _Map | _Seq) -> int:
    return len(node.entries) if isinstance(node, _Map) else len(node.items)


def _literal_ok(text: str) -> bool:
    body = text[:-1]
    return (
        text.endswith("\n")
        and bool(body)
        and all(line and line == line.strip() and line.isprintable() for line in body.split("\n"))
    )


def _inline(node: _Node) -> str:
    if isinstance(node, _Map):
        return "{}"
    if isinstance(node, _Seq):
        return "[]"
    if isinstance(node, _Literal):
        return _string(node.text)
    kind, value = node.kind, node.value
    if kind == "str":
        return _string(value)
    if kind == "float":
        return _float(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "null":
        return "null"
    return str(value)  # int; time (its RFC 3339 text is a timestamp again); enc (raw)


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)  # "1.0", "1e+20": floats for yaml.v3 and for PyYAML alike


def _string(text: str) -> str:
    """A plain scalar when every YAML reader sees the same string, else double-quoted."""
    if (
        _SAFE_PLAIN.match(text)
        and text not in ("y", "Y", "n", "N")  # booleans in YAML 1.1
        and _resolve_plain(text).kind == "str"
        and _YAML11.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        == _CORE + "str"
    ):
        return text
    return '"' + "".join(_escape(char) for char in text) + '"'


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0x20 <= code < 0x7F or (code >= 0xA0 and char.isprintable() and code not in (0xFEFF,)):
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# ---------------------------------------------------------------------------------------------
# Decryption


def load_yaml(text: str, *, file: str) -> Any:
    """Parse plaintext YAML into plain data typed as sops (yaml.v3) types it."""
    try:
        return _plain(_parse(text, comments=False))
    except _Fail as exc:
        raise SopsError(file, exc.reason) from None


def _plain(node: _Node) -> Any:
    if isinstance(node, _Map):
        return {k: _plain(v) for k, v in (e for e in node.entries if isinstance(e, tuple))}
    if isinstance(node, _Seq):
        return [_plain(item) for item in node.items if not isinstance(item, _Comment)]
    assert isinstance(node, _Scalar)
    return node.value


def decrypt(text: str, identities: Sequence[Identity], *, file: str) -> tuple[Any, Metadata]:
    """Decrypt a sops YAML file; the MAC is always verified. Returns (plain data, metadata)."""
    try:
        root = _parse(text, comments=False)
        sops_node = _take_sops(root)
        metadata, stanzas, mac = _read_metadata(sops_node)
        key = _data_key(stanzas, identities, metadata.recipients)
        decryptor = _Decryptor(key, metadata.rules, _new_mac(metadata.rules))
        tree = decryptor.node(root, (), "")
        _check_mac(key, mac, _lastmodified_aad(metadata), decryptor.mac)
        return tree, metadata
    except _Fail as exc:
        raise SopsError(file, exc.reason) from None


def _take_sops(root: _Map) -> _Node:
    for position, entry in enumerate(root.entries):
        if isinstance(entry, tuple) and entry[0] == "sops":
            del root.entries[position]
            return entry[1]
    _fail("no sops metadata: the file is not encrypted with sops")


@dataclass
class _Decryptor:
    key: bytes
    rules: Rules
    mac: Any  # hashlib's SHA-512 object

    def node(self, node: _Node, path: tuple[str, ...], where: str) -> Any:
        if isinstance(node, _Map):
            return {
                key: self.node(value, (*path, key), f"{where}:{key}" if where else key)
                for key, value in (e for e in node.entries if isinstance(e, tuple))
            }
        if isinstance(node, _Seq):
            return self._seq(node, path, where)
        if isinstance(node, _Literal):  # pragma: no cover - parsing never makes one
            _fail(f"value at {where}: unexpected block")
        return self.scalar(node, path, where)

    def _seq(self, node: _Seq, path: tuple[str, ...], where: str) -> list[Any]:
        out: list[Any] = []
        for item in node.items:
            if isinstance(item, _Comment):
                continue
            if not (isinstance(item, _Scalar) and self._is_comment(item, path, where)):
                out.append(self.node(item, path, f"{where}[{len(out)}]"))
        return out

    def _is_comment(self, item: _Scalar, path: tuple[str, ...], where: str) -> bool:
        """sops writes encrypted comments in lists as items; check them, then drop them."""
        if item.kind != "str" or not self.rules.encrypts(path):
            return False
        match = ENC_PATTERN.match(item.value)
        if match is None or match["type"] != "comment":
            return False
        if _open(self.key, match, _aad(path)) is None:
            _fail(f"comment in {where}: authentication failed")
        return True

    def scalar(self, scalar: _Scalar, path: tuple[str, ...], where: str) -> Any:
        if scalar.kind == "null":
            return None
        if not self.rules.encrypts(path):
            if not self.rules.mac_only_encrypted:
                self.mac.update(_plaintext(scalar))
            return scalar.value
        if scalar.kind != "str":
            _fail(f"value at {where}: expected an encrypted value, found a cleartext {scalar.kind}")
        if scalar.value == "":
            return ""
        match = ENC_PATTERN.match(scalar.value)
        if match is None:
            _fail(f"value at {where}: expected an encrypted value, found cleartext")
        if match["type"] not in _TYPES:
            _fail(f"value at {where}: unsupported type {match['type']!r}")
        data = _open(self.key, match, _aad(path))
        if data is None:
            _fail(f"value at {where}: authentication failed")
        value = _from_plaintext(match["type"], data)
        if value is None:
            _fail(f"value at {where}: decrypted data is not a valid {match['type']}")
        self.mac.update(_plaintext(value))
        return value.value


def _check_mac(key: bytes, stored: str, aad: str, computed: Any) -> None:
    match = ENC_PATTERN.match(stored)
    if match is None:
        _fail("the MAC in sops metadata is not an encrypted value")
    data = _open(key, match, aad)
    if data is None:
        _fail("MAC could not be authenticated: the MAC or lastmodified was modified")
    expected = computed.hexdigest().upper().encode("ascii")
    if not hmac.compare_digest(data, expected):
        _fail("MAC mismatch: the file was modified after it was encrypted")


def _data_key(
    stanzas: list[tuple[str, str]], identities: Sequence[Identity], recipients: tuple[str, ...]
) -> bytes:
    """Unwrap the data key with whichever identity matches one of the file's recipients."""
    listed = ", ".join(recipients)
    if not identities:
        _fail(f"no age identity available; the file's recipients are: {listed}")
    for _, enc in stanzas:
        try:
            key = pyrage.decrypt(enc.encode("ascii"), list(identities))
        except Exception:  # pyrage.DecryptError, or a malformed stanza
            continue
        if not isinstance(key, bytes) or len(key) != 32:
            _fail("the data key in sops metadata is not 32 bytes")
        return key
    _fail(f"no age identity matches any of the file's recipients: {listed}")


def _read_metadata(node: _Node) -> tuple[Metadata, list[tuple[str, str]], str]:
    """Validate the ``sops`` block: (metadata, [(recipient, enc)], encrypted MAC)."""
    if not isinstance(node, _Map):
        _fail("sops metadata is not a mapping")
    fields = {k: v for k, v in (e for e in node.entries if isinstance(e, tuple))}
    for unsupported in ("key_groups", "unencrypted_comment_regex", "encrypted_comment_regex"):
        if unsupported in fields:
            _fail(f"sops metadata uses {unsupported}, which is not supported")
    stanzas = _read_age(fields)
    mac = _text_field(fields, "mac")
    if not mac:
        _fail("no MAC in sops metadata")
    version = _text_field(fields, "version")
    if not version:
        _fail("no version in sops metadata")
    metadata = Metadata(
        recipients=tuple(r for r, _ in stanzas),
        rules=_read_rules(fields),
        lastmodified=_read_lastmodified(fields),
        version=version,
    )
    return metadata, stanzas, mac


_OTHER_KEY_TYPES = ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")


def _read_age(fields: dict[str, _Node]) -> list[tuple[str, str]]:
    entries = fields.get("age")
    items = entries.items if isinstance(entries, _Seq) else []
    items = [item for item in items if not isinstance(item, _Comment)]
    if not items:
        others = [name for name in _OTHER_KEY_TYPES if name in fields]
        if others:
            _fail(f"no age recipients in sops metadata (only {', '.join(others)}, not supported)")
        _fail("no age recipients in sops metadata")
    stanzas = []
    for item in items:
        if not isinstance(item, _Map):
            _fail("an age entry in sops metadata is not a mapping")
        pair = {k: v for k, v in (e for e in item.entries if isinstance(e, tuple))}
        recipient, enc = _text_field(pair, "recipient"), _text_field(pair, "enc")
        if not recipient or not enc:
            _fail("an age entry in sops metadata lacks its recipient or enc")
        stanzas.append((recipient, enc))
    return stanzas


def _text_field(fields: Mapping[str, _Node], name: str) -> str | None:
    node = fields.get(name)
    if node is None or (isinstance(node, _Scalar) and node.kind == "null"):
        return None
    if not isinstance(node, _Scalar) or node.kind not in ("str", "time"):
        _fail(f"{name} in sops metadata is not a string")
    return str(node.value)


def _read_rules(fields: Mapping[str, _Node]) -> Rules:
    given = {name: value for name in _RULE_FIELDS if (value := _text_field(fields, name))}
    if len(given) > 1:
        _fail(f"more than one encryption rule in sops metadata: {', '.join(given)}")
    flag = fields.get("mac_only_encrypted", _Scalar("bool", False))
    if not (isinstance(flag, _Scalar) and flag.kind in ("bool", "null")):
        _fail("mac_only_encrypted in sops metadata is not a boolean")
    try:
        return Rules(
            unencrypted_suffix=given.get("unencrypted_suffix"),
            encrypted_suffix=given.get("encrypted_suffix"),
            unencrypted_regex=given.get("unencrypted_regex"),
            encrypted_regex=given.get("encrypted_regex"),
            mac_only_encrypted=bool(flag.value),
        )
    except ValueError as exc:
        _fail(f"invalid rule in sops metadata: {exc}")


def _read_lastmodified(fields: Mapping[str, _Node]) -> datetime:
    text = _text_field(fields, "lastmodified")
    if not text:
        _fail("no lastmodified in sops metadata")
    match = _RFC3339.match(text)
    if match is None or _render_time(match.groups(), nano=False) is None:
        _fail("lastmodified in sops metadata is not an RFC 3339 time")
    year, month, day, hour, minute, second, _, zone = match.groups()
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * int(zone[0] + "1")
    try:
        stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        return stamp.replace(tzinfo=UTC if offset == 0 else timezone(timedelta(minutes=offset)))
    except ValueError:
        _fail("lastmodified in sops metadata is out of range")


def _lastmodified_aad(metadata: Metadata) -> str:
    """sops re-renders lastmodified as Go's RFC 3339 (whole seconds) for the MAC's AAD."""
    stamp = metadata.lastmodified
    offset = int((stamp.utcoffset() or timedelta(0)).total_seconds()) // 60
    rendered = (
        f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}"
        f"T{stamp.hour:02d}:{stamp.minute:02d}:{stamp.second:02d}"
    )
    if offset == 0:
        return rendered + "Z"
    sign = "-" if offset < 0 else "+"
    return f"{rendered}{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Age keys from the environment and the filesystem (the module's only I/O)


def _parse_identities(text: str, source: str) -> list[Identity]:
    """age key-file syntax: one AGE-SECRET-KEY per line; blank lines and # comments skipped."""
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise SopsError(source, f"line {number} is not a valid age identity") from None
    return identities


def find_identities(*, key_file: str | None, environ: Mapping[str, str], home: Path) -> list[Any]:
    """Age identities as sops finds them: the key file if given, else SOPS_AGE_KEY,
    SOPS_AGE_KEY_FILE and $XDG_CONFIG_HOME (or ~/.config)/sops/age/keys.txt combined."""

    def read(path: Path) -> list[Any]:
        try:
            return _parse_identities(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SopsError(str(path), f"cannot read age key file: {reason}") from None

    if key_file is not None:
        return read(Path(key_file))
    found = _parse_identities(environ.get("SOPS_AGE_KEY", ""), "SOPS_AGE_KEY")
    if environ.get("SOPS_AGE_KEY_FILE"):
        found += read(Path(environ["SOPS_AGE_KEY_FILE"]))
    config = (
        Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
    )
    default = config / "sops" / "age" / "keys.txt"
    return found + read(default) if default.is_file() else found
