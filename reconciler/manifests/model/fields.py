"""Field types shared by the kinds: names, labels, versions, quantities, ports, binds, capabilities.

Each check is a plain function raising ValueError with a message that tells the user how to fix
the value; `checked` turns it into a pydantic type. Values are kept as written.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import shlex
from collections.abc import Callable, Mapping
from decimal import Decimal, localcontext
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from reconciler.manifests.model.imageref import check_registry, parse_image
from reconciler.wire import DURATION_PATTERN, duration_ns


class Model(BaseModel):
    """Base of every manifest model: camelCase in YAML, strict types, no unknown fields."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, validate_by_name=False
    )

    def model_post_init(self, context: Any, /) -> None:
        """Share the set of fields given among models given the same ones: a set each was a
        third of a large repository's models (they are frozen: the set never changes)."""
        object.__setattr__(self, "__pydantic_fields_set__", _shared(self.__pydantic_fields_set__))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, which would add `update`'s names to the shared (frozen) set."""
        copied = super().model_copy(deep=deep)
        if update:
            copied.__dict__.update(update)
            given = _shared(set(self.__pydantic_fields_set__) | set(update))
            object.__setattr__(copied, "__pydantic_fields_set__", given)
        return copied


@functools.cache
def _fields(given: frozenset[str]) -> frozenset[str]:
    return given


def _shared(given: set[str]) -> frozenset[str]:
    return _fields(frozenset(given))


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("hedgerow", "{reason}", {"reason": message})


def checked(check: Callable[[str], object]) -> AfterValidator:
    """Run `check` on a string; its ValueError becomes a clean validation error."""

    def run(value: str) -> str:
        try:
            check(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return value

    return AfterValidator(run)


def _pattern_check(pattern: str, what: str, max_len: int) -> Callable[[str], None]:
    compiled = re.compile(pattern)

    def check(value: str) -> None:
        if len(value) > max_len or not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")

    return check


# -- names -------------------------------------------------------------------------------------

DNS_LABEL_HELP = "lower-case letters, digits and '-', starting and ending with a letter or digit"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_dns_label(value: str) -> None:
    if not value:
        raise ValueError("name is empty")
    if len(value) > 63:
        raise ValueError(f"name {value!r} is {len(value)} characters; at most 63")
    if not DNS_LABEL.fullmatch(value):
        raise ValueError(f"name {value!r} is not a DNS-1123 label: use {DNS_LABEL_HELP}")


DnsLabel = Annotated[
    str,
    checked(check_dns_label),
    WithJsonSchema({"type": "string", "maxLength": 63, "pattern": f"^{DNS_LABEL.pattern}$"}),
]

_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)"
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_label_key(value: str) -> None:
    prefix, sep, name = value.rpartition("/")
    if sep and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix)):
        raise ValueError(f"label key prefix {prefix!r} must be a DNS subdomain")
    if not name or len(name) > 63 or not re.fullmatch(_LABEL_NAME, name):
        raise ValueError(
            f"label key {value!r} is invalid: up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, with an optional 'prefix/'"
        )


def check_label_value(value: str) -> None:
    if value and (len(value) > 63 or not re.fullmatch(_LABEL_NAME, value)):
        raise ValueError(
            f"label value {value!r} is invalid: empty, or up to 63 letters, digits, '-', '_' or "
            "'.', starting and ending with a letter or digit"
        )


LabelKey = Annotated[str, checked(check_label_key)]
LabelValue = Annotated[str, checked(check_label_value)]
Labels = dict[LabelKey, LabelValue]

# -- versions and images -----------------------------------------------------------------------

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)


def check_version(value: str) -> None:
    if not _SEMVER.fullmatch(value):
        hint = " (drop the leading 'v')" if value.startswith(("v", "V")) else ""
        raise ValueError(
            f"version {value!r} is not Semantic Versioning 2.0.0 (MAJOR.MINOR.PATCH, no leading "
            f"zeros, optional -prerelease and +build){hint}"
        )


Version = Annotated[
    str,
    checked(check_version),
    WithJsonSchema({"type": "string", "pattern": f"^{_SEMVER.pattern}$"}),
]
ImageRef = Annotated[str, checked(parse_image)]
Registry = Annotated[str, checked(check_registry)]

# -- quantities --------------------------------------------------------------------------------

MIN_MEMORY = 6 * 1024 * 1024
MAX_BYTES = 2**63 - 1  # Docker takes byte counts as int64
_MAX_DIGITS = 40  # more is over MAX_BYTES or not whole; bounds the exact Decimal arithmetic
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_SUFFIX = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_bytes(value: object) -> int:
    """Bytes as an integer or a Kubernetes quantity (`512Mi`, `1.5Gi`, `100M`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _at_most_max_bytes(value)
    if not isinstance(value, str):
        raise _fail("expected a number of bytes or a quantity such as '512Mi'")
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise _fail(f"{value!r} is not a quantity: use bytes or a number with Ki, Mi, Gi, k, M, G")
    number = match.group(1)
    if len(number) > _MAX_DIGITS:
        raise _fail(f"quantity has {len(number)} digits; write at most {_MAX_DIGITS}")
    with localcontext() as exact:
        # Default precision (28 digits) would round: 40 digits times a 19-digit factor fits in 64.
        exact.prec = 64
        amount = Decimal(number) * _SUFFIX[match.group(2)]
    if amount != amount.to_integral_value():
        raise _fail(f"{value!r} is not a whole number of bytes")
    return _at_most_max_bytes(int(amount))


def _at_most_max_bytes(value: int) -> int:
    if value > MAX_BYTES:
        raise _fail(f"must be at most {MAX_BYTES} bytes, the most Docker accepts")
    return value


def _at_least_min_memory(value: int) -> int:
    if value < MIN_MEMORY:
        raise _fail(f"must be at least 6Mi ({MIN_MEMORY} bytes); got {value} bytes")
    return value


def _swap(value: int) -> int:
    return value if value == -1 else _at_least_min_memory(value)


_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^" + _QUANTITY.pattern + "$"}]
}
Memory = Annotated[
    int,
    BeforeValidator(parse_bytes),
    AfterValidator(_at_least_min_memory),
    WithJsonSchema(_QUANTITY_SCHEMA),
]
MemorySwap = Annotated[
    int, BeforeValidator(parse_bytes), AfterValidator(_swap), WithJsonSchema(_QUANTITY_SCHEMA)
]
Bytes = Annotated[int, BeforeValidator(parse_bytes), WithJsonSchema(_QUANTITY_SCHEMA)]

# -- container fields --------------------------------------------------------------------------


def _check_absolute(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"path {value!r} must be absolute (start with '/')")


AbsolutePath = Annotated[str, checked(_check_absolute)]

_HOSTNAME = (
    r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
)
Hostname = Annotated[str, checked(_pattern_check(_HOSTNAME, "hostname (RFC 1123, at most 64)", 64))]


def _check_env_name(value: str) -> None:
    if not value or "=" in value or "\0" in value:
        raise ValueError(f"environment variable name {value!r} must be non-empty without '='")


EnvName = Annotated[str, checked(_check_env_name)]

_BIND_OPTIONS = frozenset(
    [
        "ro",
        "rw",
        "z",
        "Z",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "private",
        "rprivate",
        "nocopy",
        "consistent",
        "cached",
        "delegated",
    ]
)


_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")  # Docker's grammar for volume names


def check_bind(value: str) -> None:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"bind {value!r} must be 'source:target[:options]' with no empty part")
    _check_bind_source(parts[0])
    _check_absolute(parts[1])
    if len(parts) == 3:
        unknown = sorted(set(parts[2].split(",")) - _BIND_OPTIONS)
        if unknown:
            raise ValueError(
                f"bind option {unknown[0]!r} is unknown; use {', '.join(sorted(_BIND_OPTIONS))}"
            )


def _check_bind_source(source: str) -> None:
    """Docker refuses a relative source at create time, on the device, long after the commit
    was applied; nothing expands `${VAR}` or `~`; a bare name would be a volume outside the
    Volume kind."""
    if source.startswith("/"):
        return
    if "$" in source:
        why = "variables are not expanded"
    elif _VOLUME_NAME.fullmatch(source):
        why = "mount a named volume with `volumes: [{volume, target}]`"
    else:
        why = "Docker refuses a relative path"
    raise ValueError(
        f"bind source {source!r} must be an absolute host path (start with '/'); {why}"
    )


Bind = Annotated[str, checked(check_bind)]


def _port_range(text: str, what: str, *, allow_zero: bool = False) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    bounds = (low, high) if sep else (low, low)
    if not all(b.isdigit() and b.isascii() for b in bounds):
        raise ValueError(f"{what} {text!r} must be a port number or a range such as 8000-8010")
    # A longer number is out of range anyway, and int() refuses over 4300 digits.
    first, last = (int(b) if len(b.lstrip("0")) <= 5 else 65536 for b in bounds)
    floor = 0 if allow_zero else 1
    if not (floor <= first <= 65535 and floor <= last <= 65535):
        raise ValueError(f"{what} {text!r} is out of range 1-65535")
    if first > last:
        raise ValueError(f"{what} range {text!r} is reversed")
    return first, last


def check_port_binding(value: str) -> None:
    """`[ip:][hostPort:]containerPort[/tcp|/udp]`, with ranges and bracketed IPv6."""
    rest, slash, proto = value.partition("/")
    if slash and proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"port binding {value!r}: protocol must be tcp, udp or sctp")
    ip: str | None = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1 : end + 2] != ":":
            raise ValueError(f"port binding {value!r}: write an IPv6 address as [addr]:host:ctr")
        ip, rest = rest[1:end], rest[end + 2 :]
        _check_ip(ip, value, version=6)
        host, sep, container = rest.partition(":")
        if not sep:
            raise ValueError(f"port binding {value!r} needs hostPort:containerPort after the IP")
    else:
        parts = rest.split(":")
        if len(parts) > 3:
            raise ValueError(f"port binding {value!r} must be [ip:][hostPort:]containerPort")
        container = parts[-1]
        host = parts[-2] if len(parts) >= 2 else ""
        if len(parts) == 3:
            ip = parts[0]
            _check_ip(ip, value, version=4)
    ctr = _port_range(container, "container port")
    if host:
        hst = _port_range(host, "host port", allow_zero=True)
        if hst[1] - hst[0] != ctr[1] - ctr[0] and ctr[0] != ctr[1]:
            raise ValueError(f"port binding {value!r}: host and container ranges differ in size")
    elif ip is None and len(rest.split(":")) == 2:
        raise ValueError(f"port binding {value!r} has an empty host port")


def _check_ip(ip: str, binding: str, *, version: int) -> None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"port binding {binding!r}: {ip!r} is not an IP address") from None
    if address.version != version:
        raise ValueError(f"port binding {binding!r}: write an IPv6 address in brackets")


PortBinding = Annotated[str, checked(check_port_binding)]


def check_extra_host(value: str) -> None:
    host, sep, ip = value.partition(":")
    if not sep or not host or not ip:
        raise ValueError(f"extra host {value!r} must be 'hostname:ip'")
    if ip != "host-gateway":
        bare = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(f"extra host {value!r}: {ip!r} is not an IP address") from None


ExtraHost = Annotated[str, checked(check_extra_host)]

CAPABILITIES = frozenset(
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
        "ALL",
    ]
)


def check_capability(value: str) -> None:
    if value.removeprefix("CAP_") not in CAPABILITIES:
        raise ValueError(
            f"{value!r} is not a Linux capability; use names such as NET_ADMIN or SYS_TIME "
            "(see capabilities(7)), or ALL"
        )


Capability = Annotated[str, checked(check_capability)]


def check_cgroup_permissions(value: str) -> None:
    if not value or set(value) - set("rwm") or len(set(value)) != len(value):
        raise ValueError(
            f"cgroupPermissions {value!r} must be a non-empty subset of 'rwm', such as 'rw'"
        )


CgroupPermissions = Annotated[str, checked(check_cgroup_permissions)]

# -- durations and amounts ---------------------------------------------------------------------

Duration = Annotated[
    str,
    checked(duration_ns),
    WithJsonSchema({"type": "string", "pattern": "^" + DURATION_PATTERN + "$"}),
]

_PERCENT = re.compile(r"([0-9]{1,3})%")


def check_amount(value: object) -> object:
    """A count (a whole number, 0 or more) or a percentage of a whole (`10%`, 0 to 100%)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _fail(f"must be 0 or more; got {value}")
        return value
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value)
        if match is not None and int(match.group(1)) <= 100:
            return value
    raise _fail(f"{value!r} is neither a number of devices nor a percentage such as '10%'")


Amount = Annotated[
    int | str,
    BeforeValidator(check_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^" + _PERCENT.pattern + "$"},
            ]
        }
    ),
]


def amount_of(amount: int | str, whole: int) -> int:
    """How many of `whole` an Amount names: a percentage rounds up, so 10% of 5 is 1."""
    if isinstance(amount, int):
        return amount
    return -(-int(amount[:-1]) * whole // 100)


class Later:
    """Marks a field added after releases were first fingerprinted. At its default it is left
    out of a spec's digest, so existing releases keep theirs: the devices' containers carry
    the digest, and a new one would redeploy the whole fleet when the controller upgrades."""

    def __repr__(self) -> str:
        return "LATER"


LATER = Later()


def fingerprint_json(model: BaseModel) -> dict[str, Any]:
    """A model as JSON (by alias) for its digest: fields marked LATER are left out while at
    their default, here and in the models nested in it."""
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return _without_later_defaults(model, dumped)


def _without_later_defaults(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        value = getattr(model, name)
        if LATER in info.metadata and value == info.get_default(call_default_factory=True):
            del dumped[key]
        elif isinstance(value, BaseModel):
            _without_later_defaults(value, dumped[key])
        elif isinstance(value, list):
            for item, item_json in zip(value, dumped[key], strict=True):
                if isinstance(item, BaseModel):
                    _without_later_defaults(item, item_json)
    return dumped


# -- compose's container fields ----------------------------------------------------------------


def split_words(value: object) -> object:
    """A command written as one string is split as compose splits it: shell words, quotes
    honoured, nothing expanded. A list is taken as written."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise _fail(f"cannot split {value!r} into words: {exc}") from None
    return value


Command = Annotated[
    list[str],
    BeforeValidator(split_words),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]

_USER = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
User = Annotated[
    str,
    checked(_pattern_check(f"{_USER}(:{_USER})?", "user: a name or uid, optionally ':group'", 256)),
]
Group = Annotated[str, checked(_pattern_check(_USER, "group: a name or gid", 256))]
Signal = Annotated[
    str,
    checked(_pattern_check(r"SIG[A-Z0-9]+([+-][0-9]+)?|[0-9]{1,2}", "signal such as SIGTERM", 32)),
]
SysctlKey = Annotated[
    str,
    checked(
        _pattern_check(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+", "sysctl such as net.ipv4.ip_forward", 253)
    ),
]


def _word(value: object) -> object:
    """A sysctl's or an option's value: compose writes numbers unquoted; Docker takes strings."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Word = Annotated[str, BeforeValidator(_word)]


def _address_check(parse: Callable[[str], object], what: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None

    return check


check_ip = _address_check(ipaddress.ip_address, "an IP address")
check_ipv4 = _address_check(ipaddress.IPv4Address, "an IPv4 address")
check_ipv6 = _address_check(ipaddress.IPv6Address, "an IPv6 address")


def check_subnet(value: str) -> None:
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a subnet such as 172.28.0.0/16: {exc}") from None


IpAddress = Annotated[str, checked(check_ip)]
Ipv4Address = Annotated[str, checked(check_ipv4)]
Ipv6Address = Annotated[str, checked(check_ipv6)]
Subnet = Annotated[str, checked(check_subnet)]

ULIMITS = frozenset(
    [
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)


def check_ulimit(value: str) -> None:
    if value not in ULIMITS:
        raise ValueError(f"{value!r} is not a ulimit; use one of {', '.join(sorted(ULIMITS))}")


UlimitName = Annotated[str, checked(check_ulimit)]


def check_sibling_mode(value: str) -> None:
    """`pidMode`/`ipcMode`: a mode name, or `container:NAME` (a container of the release)."""
    mode, colon, name = value.partition(":")
    if colon and (mode != "container" or not name):
        raise ValueError(f"{value!r}: write a mode such as 'host', or 'container:NAME'")


SiblingMode = Annotated[str, checked(check_sibling_mode)]

RESERVED_LABELS = "hedgerow."


def check_container_label(value: str) -> None:
    if not value or "\0" in value:
        raise ValueError("a label key must not be empty")
    if value.startswith(RESERVED_LABELS):
        raise ValueError(f"label {value!r}: the prefix 'hedgerow.' is Hedgerow's own")


ContainerLabel = Annotated[str, checked(check_container_label)]
