"""Field checkers one by one, then the rules between fields of a container, release, deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import semver
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from reconciler.manifests.check import suggest
from reconciler.manifests.model.fields import (
    EnvName,
    Hostname,
    Memory,
    MemorySwap,
    check_bind,
    check_capability,
    check_cgroup_permissions,
    check_dns_label,
    check_extra_host,
    check_label_key,
    check_label_value,
    check_port_binding,
    check_version,
    parse_bytes,
)
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import Report
from tests.support.properties import examples

Validate = Callable[..., Report]


def refused(check: Callable[[Any], object], value: object, fragment: str) -> None:
    """`check(value)` raises a ValueError whose message contains `fragment`."""
    with pytest.raises(ValueError) as caught:
        check(value)
    assert fragment in str(caught.value)


# -- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "0.0.0",
        "1.0.0",
        "10.20.30",
        "1.0.0-0",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.0a",
        "1.0.0-0A.is.legal",
        "1.0.0-x-y-z.--",
        "1.0.0+001",
        "1.0.0+20130313144700",
        "1.0.0-rc.1+build.5",
        "1.0.0-alpha+beta-exp.sha.5114f85",
        "999999999999999999999.0.0",
    ],
)
def test_version_accepted(value: str) -> None:
    check_version(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("v1.0.0", "(drop the leading 'v')"),
        ("V1.2.3", "(drop the leading 'v')"),
        ("1.0", "'1.0' is not Semantic Versioning 2.0.0"),
        ("1", "'1' is not Semantic Versioning"),
        ("1.0.0.0", "is not Semantic Versioning"),
        ("01.0.0", "no leading zeros"),
        ("1.00.0", "'1.00.0' is not Semantic Versioning"),
        ("1.0.0-01", "'1.0.0-01' is not Semantic Versioning"),
        ("1.0.0-alpha.01", "is not Semantic Versioning"),
        ("1.0.0-", "is not Semantic Versioning"),
        ("1.0.0+", "is not Semantic Versioning"),
        ("1.0.0-a..b", "is not Semantic Versioning"),
        ("1.0.0+a..b", "is not Semantic Versioning"),
        ("1.0.0-a_b", "is not Semantic Versioning"),
        ("1.0.0\n", "is not Semantic Versioning"),
        (" 1.0.0", "is not Semantic Versioning"),
        ("\uff11.0.0", "is not Semantic Versioning"),
        ("1.0.\u0663", "is not Semantic Versioning"),
        ("latest", "is not Semantic Versioning"),
    ],
)
def test_version_refused(value: str, fragment: str) -> None:
    refused(check_version, value, fragment)


@pytest.mark.parametrize("value", ["", "1.0", "latest", "01.0.0"])
def test_version_hint_only_for_a_leading_v(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_version(value)
    assert "leading 'v'" not in str(caught.value)


DIGITS = "0123456789"
IDENT = DIGITS + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"

numeric = st.one_of(
    st.just("0"), st.tuples(st.sampled_from("123456789"), st.text(DIGITS)).map("".join)
)
alphanumeric = st.text(IDENT, min_size=1, max_size=8).filter(lambda s: not s.isdigit())
pre_release = st.lists(st.one_of(numeric, alphanumeric), min_size=1, max_size=4).map(".".join)
build = st.lists(st.text(IDENT, min_size=1, max_size=8), min_size=1, max_size=4).map(".".join)
versions = st.builds(
    lambda core, pre, meta: (
        ".".join(core) + (f"-{pre}" if pre else "") + (f"+{meta}" if meta else "")
    ),
    st.tuples(numeric, numeric, numeric),
    st.none() | pre_release,
    st.none() | build,
)


def _accepted(value: str) -> bool:
    try:
        check_version(value)
    except ValueError:
        return False
    return True


@settings(max_examples=examples(200), deadline=None)
@given(versions)
def test_generated_semver_is_accepted(value: str) -> None:
    check_version(value)
    assert semver.Version.is_valid(value)


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.text("0123456789.-+abcv", max_size=16), versions))
def test_version_agrees_with_semver_library(value: str) -> None:
    assert _accepted(value) == semver.Version.is_valid(value)


# -- bytes and memory --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1.5Gi", 3 * 2**29),
        ("0.5Ki", 512),
        ("100M", 100_000_000),
        ("2k", 2000),
        ("1Ti", 2**40),
        ("1E", 10**18),
        ("1Ei", 2**60),
        ("7000000", 7_000_000),
        (7_000_000, 7_000_000),
        (0, 0),
    ],
)
def test_parse_bytes(value: object, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1.5", "'1.5' is not a whole number of bytes"),
        ("1.0000000000000000000000000001Ki", "is not a whole number of bytes"),
        ("7.999999999999999999Ei", "is not a whole number of bytes"),
        ("12Xi", "'12Xi' is not a quantity"),
        ("1e3", "'1e3' is not a quantity"),
        ("512mi", "'512mi' is not a quantity"),
        ("512 Mi", "'512 Mi' is not a quantity"),
        (".5Gi", "is not a quantity"),
        ("-1", "'-1' is not a quantity"),
        ("", "'' is not a quantity"),
        ("\u0665Mi", "is not a quantity"),
        (1.5, "expected a number of bytes or a quantity such as '512Mi'"),
        (True, "expected a number of bytes"),
        (None, "expected a number of bytes"),
    ],
)
def test_parse_bytes_refused(value: object, fragment: str) -> None:
    refused(parse_bytes, value, fragment)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9223372036854775807", 2**63 - 1),
        (2**63 - 1, 2**63 - 1),
        ("7.99999904632568359375Ei", 2**63 - 2**40),
        ("0.0009765625Ki", 1),
        ("1.5Ei", 3 * 2**59),
    ],
)
def test_parse_bytes_is_exact(value: object, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("9" * 30, "must be at most 9223372036854775807 bytes, the most Docker accepts"),
        ("9223372036854775808", "must be at most 9223372036854775807 bytes"),
        (2**63, "must be at most 9223372036854775807 bytes"),
        (10**100, "must be at most 9223372036854775807 bytes"),
        ("8Ei", "must be at most 9223372036854775807 bytes"),
        ("1" * 100_000 + "Ki", "quantity has 100000 digits; write at most 40"),
        ("0." + "0" * 50 + "1Ki", "quantity has 53 digits; write at most 40"),
    ],
)
def test_parse_bytes_refuses_what_docker_cannot_take(value: object, fragment: str) -> None:
    refused(parse_bytes, value, fragment)


memory = TypeAdapter(Memory)
memory_swap = TypeAdapter(MemorySwap)


@pytest.mark.parametrize(
    ("value", "expected"), [("6Mi", 6 * 2**20), (6 * 2**20, 6 * 2**20), ("1.5Gi", 3 * 2**29)]
)
def test_memory_accepted(value: object, expected: int) -> None:
    assert memory.validate_python(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("5Mi", "must be at least 6Mi (6291456 bytes); got 5242880 bytes"),
        (6 * 2**20 - 1, "got 6291455 bytes"),
        (0, "must be at least 6Mi"),
        (-1, "must be at least 6Mi"),
        ("1.5", "'1.5' is not a whole number of bytes"),
        ("12Xi", "'12Xi' is not a quantity"),
    ],
)
def test_memory_refused(value: object, fragment: str) -> None:
    refused(memory.validate_python, value, fragment)


def test_memory_swap_allows_minus_one_only() -> None:
    assert memory_swap.validate_python(-1) == -1
    assert memory_swap.validate_python("1Gi") == 2**30
    refused(memory_swap.validate_python, -2, "must be at least 6Mi")
    refused(memory_swap.validate_python, "1Mi", "must be at least 6Mi")


# -- ports -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "80",
        "80/tcp",
        "53/udp",
        "9/sctp",
        "8080:80",
        "0:80",
        "127.0.0.1:8080:80/udp",
        "127.0.0.1::80",
        "[::1]:8080:80",
        "[::1]::80",
        "[2001:db8::1]:443:443/tcp",
        "8000-8010:8000-8010",
        "8000-8010",
        "8000-8010:80",
        "65535",
    ],
)
def test_port_binding_accepted(value: str) -> None:
    check_port_binding(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("70000", "container port '70000' is out of range 1-65535"),
        ("0", "container port '0' is out of range"),
        ("80:65536", "container port '65536' is out of range"),
        ("70000:80", "host port '70000' is out of range"),
        ("1" * 5000, "is out of range 1-65535"),
        (":80", "':80' has an empty host port"),
        ("80/icmp", "protocol must be tcp, udp or sctp"),
        ("80/", "protocol must be tcp, udp or sctp"),
        ("::1:80:80", "must be [ip:][hostPort:]containerPort"),
        ("8010-8000", "container port range '8010-8000' is reversed"),
        ("1-3:1-2", "host and container ranges differ in size"),
        ("80:8000-8010", "host and container ranges differ in size"),
        ("http", "container port 'http' must be a port number or a range"),
        ("", "container port '' must be a port number"),
        ("80-", "container port '80-' must be a port number"),
        ("\u0668\u0660", "must be a port number"),
        ("1.2.3.4:80", "host port '1.2.3.4' must be a port number"),
        ("1.2.3:8080:80", "'1.2.3' is not an IP address"),
        ("::1::80", "must be [ip:][hostPort:]containerPort"),
        ("[127.0.0.1]:80:80", "write an IPv6 address in brackets"),
        ("[::1]:80", "needs hostPort:containerPort after the IP"),
        ("[::1:80:80", "write an IPv6 address as [addr]:host:ctr"),
        ("[::1]80:80", "write an IPv6 address as [addr]:host:ctr"),
        ("[nope]:80:80", "'nope' is not an IP address"),
    ],
)
def test_port_binding_refused(value: str, fragment: str) -> None:
    refused(check_port_binding, value, fragment)


# -- binds, extra hosts, capabilities, cgroup permissions --------------------------------------


@pytest.mark.parametrize(
    "value", ["/srv/data:/data", "/srv:/srv:ro", "/:/host:ro,z", "/a:/b:rshared,nocopy"]
)
def test_bind_accepted(value: str) -> None:
    check_bind(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("/srv", "must be 'source:target[:options]' with no empty part"),
        (":/data", "with no empty part"),
        ("/srv:", "with no empty part"),
        ("/srv::ro", "with no empty part"),
        ("/a:/b:ro:z", "with no empty part"),
        ("/srv:data", "path 'data' must be absolute"),
        ("/srv:/data:bogus", "bind option 'bogus' is unknown"),
        ("/srv:/data:ro,,z", "bind option '' is unknown"),
        ("/srv:/data:RO", "bind option 'RO' is unknown"),
        ("./config:/config", "bind source './config' must be an absolute host path"),
        ("./config:/config", "Docker refuses a relative path"),
        ("${CFG}:/etc/x.conf:rw", "bind source '${CFG}' must be an absolute host path"),
        ("${CFG}:/etc/x.conf:rw", "variables are not expanded"),
        ("~/cfg:/cfg", "bind source '~/cfg' must be an absolute host path"),
        ("named:/data:ro,z", "mount a named volume with `volumes: [{volume, target}]`"),
    ],
)
def test_bind_refused(value: str, fragment: str) -> None:
    refused(check_bind, value, fragment)


@pytest.mark.parametrize(
    "value", ["db:10.0.0.1", "db:host-gateway", "db:[::1]", "db:::1", "db.local:fe80::1"]
)
def test_extra_host_accepted(value: str) -> None:
    check_extra_host(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("db", "must be 'hostname:ip'"),
        ("db:", "must be 'hostname:ip'"),
        (":10.0.0.1", "must be 'hostname:ip'"),
        ("db:1.2.3", "'1.2.3' is not an IP address"),
        ("db:1.2.3.4:5", "'1.2.3.4:5' is not an IP address"),
        ("db:localhost", "'localhost' is not an IP address"),
        ("db:[::1", "'[::1' is not an IP address"),
        ("db:::1]", "'::1]' is not an IP address"),
    ],
)
def test_extra_host_refused(value: str, fragment: str) -> None:
    refused(check_extra_host, value, fragment)


@pytest.mark.parametrize("value", ["NET_ADMIN", "CAP_NET_ADMIN", "SYS_TIME", "BPF", "ALL"])
def test_capability_accepted(value: str) -> None:
    check_capability(value)


@pytest.mark.parametrize("value", ["net_admin", "NET_ADMINS", "CAP_", "", "CAP_ALL_THE_THINGS"])
def test_capability_refused(value: str) -> None:
    refused(check_capability, value, f"{value!r} is not a Linux capability")


@pytest.mark.parametrize("value", ["r", "w", "m", "rw", "rwm", "mwr"])
def test_cgroup_permissions_accepted(value: str) -> None:
    check_cgroup_permissions(value)


@pytest.mark.parametrize("value", ["", "rr", "rx", "RW", "rwmr", "rw "])
def test_cgroup_permissions_refused(value: str) -> None:
    refused(check_cgroup_permissions, value, f"cgroupPermissions {value!r} must be a non-empty")


# -- names and labels --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["web", "a", "1a", "a-b", "a--b", "a" * 63])
def test_dns_label_accepted(value: str) -> None:
    check_dns_label(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "name is empty"),
        ("a" * 64, "is 64 characters; at most 63"),
        ("Web", "'Web' is not a DNS-1123 label"),
        ("-a", "'-a' is not a DNS-1123 label"),
        ("a-", "'a-' is not a DNS-1123 label"),
        ("a_b", "'a_b' is not a DNS-1123 label"),
        ("a.b", "'a.b' is not a DNS-1123 label"),
        ("caf\u00e9", "is not a DNS-1123 label"),
    ],
)
def test_dns_label_refused(value: str, fragment: str) -> None:
    refused(check_dns_label, value, fragment)


@pytest.mark.parametrize(
    "value",
    ["app", "App_1.x-y", "a" * 63, "hedgerow.dev/site", "a.b-c.d/Name", "x" * 253 + "/a"],
)
def test_label_key_accepted(value: str) -> None:
    check_label_key(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "label key '' is invalid"),
        ("-app", "label key '-app' is invalid"),
        ("app.", "label key 'app.' is invalid"),
        ("a" * 64, "is invalid: up to 63"),
        ("a b", "label key 'a b' is invalid"),
        ("/app", "label key prefix '' must be a DNS subdomain"),
        ("Hedgerow.dev/app", "prefix 'Hedgerow.dev' must be a DNS subdomain"),
        ("a/b/c", "prefix 'a/b' must be a DNS subdomain"),
        ("x" * 254 + "/a", "must be a DNS subdomain"),
        ("hedgerow.dev/", "label key 'hedgerow.dev/' is invalid"),
    ],
)
def test_label_key_refused(value: str, fragment: str) -> None:
    refused(check_label_key, value, fragment)


@pytest.mark.parametrize("value", ["", "lyon", "A-1_b.c", "a" * 63])
def test_label_value_accepted(value: str) -> None:
    check_label_value(value)


@pytest.mark.parametrize("value", ["-a", "a-", "a b", "a/b", "a" * 64, "caf\u00e9"])
def test_label_value_refused(value: str) -> None:
    refused(check_label_value, value, f"label value {value!r} is invalid")


hostname = TypeAdapter(Hostname)
env_name = TypeAdapter(EnvName)


@pytest.mark.parametrize(
    "value", ["web", "Web-1", "web.example.com", "a" * 63, "a" * 30 + "." + "b" * 33]
)
def test_hostname_accepted(value: str) -> None:
    assert hostname.validate_python(value) == value


@pytest.mark.parametrize(
    "value", ["", "-web", "web-", "a_b", "a.", "a..b", "a" * 64, "a" * 30 + "." + "b" * 34]
)
def test_hostname_refused(value: str) -> None:
    refused(hostname.validate_python, value, f"{value!r} is not a valid hostname")


@pytest.mark.parametrize("value", ["PATH", "lower_case", "a.b", "1X", "WITH SPACE"])
def test_env_name_accepted(value: str) -> None:
    assert env_name.validate_python(value) == value


@pytest.mark.parametrize("value", ["", "A=B", "=", "A\0B"])
def test_env_name_refused(value: str) -> None:
    refused(env_name.validate_python, value, f"environment variable name {value!r} must be")


# -- rules between fields, through a whole repository ------------------------------------------

RELEASE_HEAD = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {name: web-1-0-0}
spec:
  application: web
  version: "1.0.0"
  containers:
"""


def release(containers: str) -> dict[str, str | bytes]:
    return {"release.yaml": RELEASE_HEAD + containers}


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of `text` containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def problems_of(report: Report) -> list[tuple[str, int, str | None, str]]:
    return [(p.file, p.line, p.field, p.message) for p in report.problems]


def only(report: Report) -> Problem:
    assert len(report.problems) == 1, problems_of(report)
    return report.problems[0]


def assert_release_problem(
    report: Report, line_needle: str, field: str, message: str, containers: str
) -> None:
    problem = only(report)
    text = RELEASE_HEAD + containers
    assert (problem.file, problem.kind, problem.name) == ("release.yaml", "Release", "web-1-0-0")
    assert (problem.line, problem.field) == (line_of(text, line_needle), field)
    assert message in problem.message


CPU_PERIOD_ONLY = """\
    - name: a
      image: busybox
      cpu: {period: 100000}
"""
CPU_QUOTA_ONLY = """\
    - name: a
      image: busybox
      cpu:
        quota: 50000
"""


def test_cpu_period_without_quota(validate_repo: Validate) -> None:
    report = validate_repo(release(CPU_PERIOD_ONLY))
    assert_release_problem(
        report,
        "cpu:",
        "spec.containers[0].cpu.quota",
        "set both cpu.period and cpu.quota, or neither",
        CPU_PERIOD_ONLY,
    )


def test_cpu_quota_without_period(validate_repo: Validate) -> None:
    report = validate_repo(release(CPU_QUOTA_ONLY))
    assert_release_problem(
        report,
        "quota:",
        "spec.containers[0].cpu.period",
        "set both cpu.period and cpu.quota, or neither",
        CPU_QUOTA_ONLY,
    )


def test_cpu_period_and_quota_together_are_valid(validate_repo: Validate) -> None:
    body = "    - name: a\n      image: busybox\n      cpu: {period: 100000, quota: 50000}\n"
    assert validate_repo(release(body)).problems == []


RESERVATION_OVER_MEMORY = """\
    - name: a
      image: busybox
      memory: 64Mi
      memoryReservation: 128Mi
"""


def test_memory_reservation_over_memory(validate_repo: Validate) -> None:
    report = validate_repo(release(RESERVATION_OVER_MEMORY))
    assert_release_problem(
        report,
        "memoryReservation:",
        "spec.containers[0].memoryReservation",
        "memoryReservation must not exceed memory",
        RESERVATION_OVER_MEMORY,
    )


SWAP_UNDER_MEMORY = """\
    - name: a
      image: busybox
      memory: 1Gi
      memorySwap: 512Mi
"""


def test_memory_swap_below_memory(validate_repo: Validate) -> None:
    report = validate_repo(release(SWAP_UNDER_MEMORY))
    assert_release_problem(
        report,
        "memorySwap:",
        "spec.containers[0].memorySwap",
        "memorySwap must be at least memory (or -1 for unlimited)",
        SWAP_UNDER_MEMORY,
    )


@pytest.mark.parametrize("swap", ["-1", "1Gi", "2Gi", "1073741824"])
def test_memory_swap_at_least_memory_or_unlimited(validate_repo: Validate, swap: str) -> None:
    body = f"    - name: a\n      image: busybox\n      memory: 1Gi\n      memorySwap: {swap}\n"
    assert validate_repo(release(body)).problems == []


SWAP_WITHOUT_MEMORY = """\
    - name: a
      image: busybox
      memorySwap: -1
"""


def test_memory_swap_without_memory(validate_repo: Validate) -> None:
    report = validate_repo(release(SWAP_WITHOUT_MEMORY))
    assert_release_problem(
        report,
        "memorySwap:",
        "spec.containers[0].memorySwap",
        "memorySwap needs memory to be set too",
        SWAP_WITHOUT_MEMORY,
    )


MEMORY_TOO_SMALL = """\
    - name: a
      image: busybox
      memory: 5Mi
"""


def test_memory_below_minimum_in_a_release(validate_repo: Validate) -> None:
    report = validate_repo(release(MEMORY_TOO_SMALL))
    assert_release_problem(
        report,
        "memory:",
        "spec.containers[0].memory",
        "must be at least 6Mi (6291456 bytes); got 5242880 bytes",
        MEMORY_TOO_SMALL,
    )


SHARED_MOUNTS = """\
    - name: a
      image: busybox
      volumes:
        - {volume: data, target: /data}
      binds:
        - /srv:/data/
      tmpfs:
        - path: /data
        - path: /cache
        - path: /cache
"""


def test_duplicate_mount_target_across_volumes_binds_tmpfs(validate_repo: Validate) -> None:
    report = validate_repo(release(SHARED_MOUNTS))
    text = RELEASE_HEAD + SHARED_MOUNTS
    assert [(p.line, p.field) for p in report.problems] == [
        (line_of(text, "/srv:/data/"), "spec.containers[0].binds[0]"),
        (line_of(text, "path: /data"), "spec.containers[0].tmpfs[0].path"),
        (line_of(text, "path: /cache") + 1, "spec.containers[0].tmpfs[2].path"),
    ]
    bind, tmpfs, cache = (p.message for p in report.problems)
    assert bind.startswith("mount target '/data/' is already used by volumes")
    assert tmpfs.startswith("mount target '/data' is already used by volumes")
    assert cache.startswith("mount target '/cache' is already used by tmpfs")


HOST_NETWORK = """\
    - name: a
      image: busybox
      networkMode: host
      networks: [front]
"""


@pytest.mark.parametrize("mode", ["host", "none", "container:db"])
def test_network_mode_with_networks(validate_repo: Validate, mode: str) -> None:
    body = HOST_NETWORK.replace("networkMode: host", f"networkMode: {mode!r}")
    report = validate_repo(release(body))
    assert_release_problem(
        report,
        "networks:",
        "spec.containers[0].networks",
        f"networkMode {mode!r} cannot be combined with networks",
        body,
    )


def test_network_mode_host_cannot_publish_ports(validate_repo: Validate) -> None:
    body = (
        "    - name: a\n      image: busybox\n      networkMode: host\n      portBindings: ['80']\n"
    )
    report = validate_repo(release(body))
    assert_release_problem(
        report,
        "portBindings:",
        "spec.containers[0].portBindings",
        "networkMode 'host' cannot publish ports",
        body,
    )


def test_custom_network_mode_with_networks_is_valid(validate_repo: Validate) -> None:
    body = HOST_NETWORK.replace("networkMode: host", "networkMode: front")
    assert validate_repo(release(body)).problems == []


DEVICE_REQUEST = """\
    - name: a
      image: busybox
      deviceRequests:
        - driver: nvidia
        - driver: nvidia
          count: 1
          deviceIds: ["0"]
"""


def test_device_request_count_and_device_ids(validate_repo: Validate) -> None:
    report = validate_repo(release(DEVICE_REQUEST))
    assert_release_problem(
        report,
        "count: 1",
        "spec.containers[0].deviceRequests[1].count",
        "set count or deviceIds, not both",
        DEVICE_REQUEST,
    )


DUPLICATE_NAMES = """\
    - name: server
      image: busybox
    - name: worker
      image: busybox
    - name: server
      image: busybox
"""


def test_duplicate_container_names(validate_repo: Validate) -> None:
    report = validate_repo(release(DUPLICATE_NAMES))
    problem = only(report)
    text = RELEASE_HEAD + DUPLICATE_NAMES
    last_server = text.splitlines().index("    - name: server", 8) + 1
    assert (problem.line, problem.field) == (last_server, "spec.containers[2].name")
    assert problem.message == "container name 'server' is already used by containers[0]"


UNKNOWN_DEPENDENCY = """\
    - name: web
      image: busybox
      dependsOn: [db]
    - name: cache
      image: busybox
"""


def test_depends_on_unknown_container(validate_repo: Validate) -> None:
    report = validate_repo(release(UNKNOWN_DEPENDENCY))
    assert_release_problem(
        report,
        "dependsOn:",
        "spec.containers[0].dependsOn[0]",
        "no container 'db' in this release; dependsOn names containers of the same release "
        "(cache, web)",
        UNKNOWN_DEPENDENCY,
    )


SELF_DEPENDENCY = """\
    - name: db
      image: busybox
    - name: web
      image: busybox
      dependsOn:
        - db
        - web
"""


def test_depends_on_itself(validate_repo: Validate) -> None:
    report = validate_repo(release(SELF_DEPENDENCY))
    assert_release_problem(
        report,
        "- web",
        "spec.containers[1].dependsOn[1]",
        "a container cannot depend on itself",
        SELF_DEPENDENCY,
    )


CYCLE = """\
    - name: proxy
      image: busybox
      dependsOn: [web]
    - name: web
      image: busybox
      dependsOn: [api]
    - name: api
      image: busybox
      dependsOn: [db, web]
    - name: db
      image: busybox
"""


def test_depends_on_cycle_shows_the_cycle(validate_repo: Validate) -> None:
    report = validate_repo(release(CYCLE))
    problem = only(report)
    assert (problem.line, problem.field) == (
        line_of(RELEASE_HEAD + CYCLE, "dependsOn: [api]"),
        "spec.containers[1].dependsOn",
    )
    assert problem.message == "dependsOn has a cycle: web -> api -> web"


def test_depends_on_chain_without_cycle_is_valid(validate_repo: Validate) -> None:
    body = CYCLE.replace("dependsOn: [db, web]", "dependsOn: [db]")
    assert validate_repo(release(body)).problems == []


DEPLOYMENT_HEAD = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {name: web-lyon}
spec:
  application: web
  release: "1.0.0"
"""


def test_deployment_with_device_and_selector(validate_repo: Validate) -> None:
    text = DEPLOYMENT_HEAD + "  device: pi-1\n  selector: {matchLabels: {site: lyon}}\n"
    problem = only(validate_repo({"deployment.yaml": text}))
    assert (problem.file, problem.kind, problem.name) == (
        "deployment.yaml",
        "Deployment",
        "web-lyon",
    )
    assert (problem.line, problem.field) == (line_of(text, "device:"), "spec.device")
    assert problem.message == "set exactly one target: either device or selector"


def test_deployment_with_neither_device_nor_selector(validate_repo: Validate) -> None:
    problem = only(validate_repo({"deployment.yaml": DEPLOYMENT_HEAD}))
    # No `device` key exists: the finding points at the start of spec.
    assert (problem.line, problem.field) == (
        line_of(DEPLOYMENT_HEAD, "application:"),
        "spec.device",
    )
    assert problem.message == "set exactly one target: either device or selector"


@pytest.mark.parametrize(
    ("field", "meant"),
    [
        ("devices", "deviceMappings"),  # docker compose's name
        ("device", "deviceMappings"),
        ("Devices", "deviceMappings"),
        ("devics", "deviceMappings"),
        ("devicess", "deviceMappings"),
        ("deviceMapping", "deviceMappings"),
        ("deviceRequest", "deviceRequests"),
        ("restartPolicyy", "restartPolicy"),
        ("volume", "volumes"),
    ],
)
def test_a_misspelt_container_field_suggests_what_was_meant(
    validate_repo: Validate, field: str, meant: str
) -> None:
    body = f"    - name: a\n      image: busybox\n      {field}: []\n"
    problem = only(validate_repo(release(body)))
    assert problem.field == f"spec.containers[0].{field}"
    assert problem.message.startswith(f"unknown field {field!r} (did you mean {meant!r}?)")


def test_another_tools_name_is_suggested_only_where_its_field_is() -> None:
    assert suggest("devices", ["deviceMappings", "deviceRequests"]) == (
        " (did you mean 'deviceMappings'?)"
    )
    assert suggest("devices", ["deviceRequests"]) == " (did you mean 'deviceRequests'?)"
    assert suggest("devices", ["device", "selector"]) == " (did you mean 'device'?)"


@pytest.mark.parametrize(
    ("field", "value", "path", "fragment"),
    [
        ("portBindings", "['8080:80', '80/icmp']", "portBindings[1]", "protocol must be tcp"),
        ("binds", "['/srv:data']", "binds[0]", "path 'data' must be absolute"),
        ("binds", "['/srv:/srv', './config:/config']", "binds[1]", "bind source './config'"),
        ("extraHosts", "['db:nope']", "extraHosts[0]", "'nope' is not an IP address"),
        ("capAdd", "[NET_ADMIN, net_raw]", "capAdd[1]", "'net_raw' is not a Linux capability"),
        ("hostname", "bad_host", "hostname", "'bad_host' is not a valid hostname"),
        ("memory", "1.5", "memory", "expected a number of bytes"),
        (
            "deviceMappings",
            "[{pathOnHost: /dev/a, pathInContainer: /dev/a, cgroupPermissions: rx}]",
            "deviceMappings[0].cgroupPermissions",
            "cgroupPermissions 'rx' must be a non-empty subset of 'rwm'",
        ),
    ],
)
def test_field_checks_report_field_and_line(
    validate_repo: Validate, field: str, value: str, path: str, fragment: str
) -> None:
    body = f"    - name: a\n      image: busybox\n      {field}: {value}\n"
    problem = only(validate_repo(release(body)))
    assert (problem.line, problem.field) == (
        line_of(RELEASE_HEAD + body, f"{field}:"),
        f"spec.containers[0].{path}",
    )
    assert fragment in problem.message


def test_bad_env_name_is_reported_under_env(validate_repo: Validate) -> None:
    body = "    - name: a\n      image: busybox\n      env: {'A=B': x, PATH: /bin}\n"
    problem = only(validate_repo(release(body)))
    assert problem.line == line_of(RELEASE_HEAD + body, "env:")
    assert problem.field is not None
    assert problem.field.startswith("spec.containers[0].env.A=B")
    assert "environment variable name 'A=B' must be non-empty without '='" in problem.message
