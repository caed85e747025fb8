"""Docker image references: the distribution/reference grammar, parts, messages, kept verbatim."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.manifests.model.imageref import ImageReference, check_registry, parse_image
from reconciler.manifests.validate import Report
from tests.support.properties import examples

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "fedcba9876543210" * 8

# (reference, domain, path, tag, digest)
VALID: list[tuple[str, str | None, str, str | None, str | None]] = [
    ("ubuntu", None, "ubuntu", None, None),
    ("ubuntu:24.04", None, "ubuntu", "24.04", None),
    ("ubuntu:latest", None, "ubuntu", "latest", None),
    ("library/ubuntu", None, "library/ubuntu", None, None),
    ("docker.io/library/ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
    ("localhost/x", "localhost", "x", None, None),
    ("localhost:5000/a/b:tag", "localhost:5000", "a/b", "tag", None),
    (
        "registry.example:5000/web/server:1.0.0",
        "registry.example:5000",
        "web/server",
        "1.0.0",
        None,
    ),
    ("1.2.3.4:5000/x", "1.2.3.4:5000", "x", None, None),
    ("[::1]:5000/x", "[::1]:5000", "x", None, None),
    ("[2001:db8::1]/team/app:v2", "[2001:db8::1]", "team/app", "v2", None),
    ("Example.COM/foo", "Example.COM", "foo", None, None),
    ("EXAMPLE/foo", "EXAMPLE", "foo", None, None),
    ("my-registry.example.com/a/b/c/d", "my-registry.example.com", "a/b/c/d", None, None),
    ("a__b/c---d", None, "a__b/c---d", None, None),
    ("a_b/c", None, "a_b/c", None, None),
    ("a.b", None, "a.b", None, None),
    ("ubuntu:_", None, "ubuntu", "_", None),
    ("ubuntu:A-Z_0.9", None, "ubuntu", "A-Z_0.9", None),
    ("ubuntu:" + "t" * 128, None, "ubuntu", "t" * 128, None),
    ("ubuntu@" + SHA256, None, "ubuntu", None, SHA256),
    ("ubuntu@" + SHA512, None, "ubuntu", None, SHA512),
    ("ubuntu:24.04@" + SHA256, None, "ubuntu", "24.04", SHA256),
    ("localhost:5000/a:1@" + SHA256, "localhost:5000", "a", "1", SHA256),
    ("a/" + "b" * 253, None, "a/" + "b" * 253, None, None),
]


@pytest.mark.parametrize(("ref", "domain", "path", "tag", "digest"), VALID)
def test_valid_reference_parts(
    ref: str, domain: str | None, path: str, tag: str | None, digest: str | None
) -> None:
    assert parse_image(ref) == ImageReference(ref, domain, path, tag, digest)


# (reference, fragment the message must contain)
INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("Ubuntu", "component 'Ubuntu' must be lower-case"),
    ("example.com/Team/app", "component 'Team' must be lower-case"),
    ("library/ubuntU:1", "component 'ubuntU' must be lower-case"),
    (":tag", "no repository name"),
    ("ubuntu:", "tag '' is invalid"),
    ("ubuntu:" + "t" * 129, "tag '" + "t" * 129 + "' is invalid: up to 128"),
    ("ubuntu:.hidden", "tag '.hidden' is invalid"),
    ("ubuntu:-x", "tag '-x' is invalid"),
    ("ubuntu:a+b", "tag 'a+b' is invalid"),
    ("ubuntu@sha256:abc", "digest 'sha256:abc' is invalid"),
    ("ubuntu@sha256:" + "A" * 64, "digest 'sha256:" + "A" * 64 + "' is invalid"),
    ("ubuntu@sha512:" + "a" * 64, "digest 'sha512:" + "a" * 64 + "' is invalid"),
    ("ubuntu@md5:" + "a" * 32, "digest 'md5:" + "a" * 32 + "' is invalid: use sha256"),
    ("ubuntu@", "digest '' is invalid"),
    ("@" + SHA256, "no repository name"),
    ("a/" + "b" * 254, "repository name is 256 characters; at most 255"),
    ("example.com/" + "b" * 244, "repository name is 256 characters; at most 255"),
    ("a//b", "component '' is invalid"),
    ("a/", "component '' is invalid"),
    ("a_-b", "component 'a_-b' is invalid"),
    ("a___b", "component 'a___b' is invalid"),
    ("a..b", "component 'a..b' is invalid"),
    ("-a", "component '-a' is invalid"),
    ("a/b.", "component 'b.' is invalid"),
    (" ubuntu", "leading or trailing whitespace"),
    ("ubuntu ", "leading or trailing whitespace"),
    ("ubuntu:1\n", "leading or trailing whitespace"),
    ("http://x/y", "registry host 'http:' is invalid"),
    ("example.com:/x", "registry host 'example.com:' is invalid"),
    ("example.com:port/x", "registry host 'example.com:port' is invalid"),
    ("-bad.example/x", "registry host '-bad.example' is invalid"),
    ("[::1/x", "registry host '[::1' is invalid"),
    ("[::1]:x/y", "registry host '[::1]:x' is invalid"),
    ("/x", "registry host '' is invalid"),
    ("ubuntu:a:b", "component 'ubuntu:a' is invalid"),
]


@pytest.mark.parametrize(("ref", "fragment"), INVALID)
def test_invalid_reference_names_the_problem(ref: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_image(ref)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("registry", ["docker.io", "registry.example:5000", "[::1]:5000", "a"])
def test_valid_registry(registry: str) -> None:
    check_registry(registry)


@pytest.mark.parametrize(
    ("registry", "fragment"),
    [
        ("https://registry.example", "without scheme or path"),
        ("registry.example/team", "without scheme or path"),
        ("registry.example:", "is not a valid host[:port]"),
        ("bad_host", "is not a valid host[:port]"),
        ("", "is not a valid host[:port]"),
    ],
)
def test_invalid_registry(registry: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        check_registry(registry)


# -- property tests: references built from the grammar -------------------------------------------

LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM = LOWER_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TAG_FIRST = ALNUM + "_"
HEX = "0123456789abcdef"


@st.composite
def path_components(draw: st.DrawFn) -> str:
    """`[a-z0-9]+` runs joined by '.', '_', '__' or one or more '-'."""
    runs = draw(st.lists(st.text(LOWER_ALNUM, min_size=1, max_size=6), min_size=1, max_size=4))
    out = runs[0]
    for run in runs[1:]:
        out += draw(st.sampled_from([".", "_", "__", "-", "--", "---"])) + run
    return out


@st.composite
def domain_components(draw: st.DrawFn) -> str:
    """`[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`."""
    first = draw(st.sampled_from(ALNUM))
    middle = draw(st.text(ALNUM + "-", max_size=6))
    last = draw(st.text(ALNUM, max_size=1)) if not middle else draw(st.sampled_from(ALNUM))
    return first + middle + last


hosts = st.one_of(
    st.lists(domain_components(), min_size=1, max_size=4).map(".".join),
    st.just("localhost"),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str).filter(lambda a: "." not in a).map(lambda a: f"[{a}]"),
)
domains = st.one_of(
    st.none(),
    st.tuples(hosts, st.none() | st.integers(0, 99999).map(str)).map(
        lambda hp: hp[0] if hp[1] is None else f"{hp[0]}:{hp[1]}"
    ),
)
paths = st.lists(path_components(), min_size=1, max_size=4).map("/".join)
tags = st.tuples(st.sampled_from(TAG_FIRST), st.text(TAG_FIRST + ".-", max_size=127)).map("".join)
digests = st.one_of(
    st.text(HEX, min_size=64, max_size=64).map("sha256:".__add__),
    st.text(HEX, min_size=128, max_size=128).map("sha512:".__add__),
)

Parts = tuple[str | None, str, str | None, str | None]


def assemble(domain: str | None, path: str, tag: str | None, digest: str | None) -> str:
    ref = f"{domain}/{path}" if domain else path
    if tag is not None:
        ref += ":" + tag
    if digest is not None:
        ref += "@" + digest
    return ref


def docker_split(name: str) -> tuple[str | None, str]:
    """Docker's own rule (splitDockerDomain): the first component is a host when it has '.' or
    ':', is `localhost`, or has upper-case letters; otherwise the whole name is the path."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first, rest
    return None, name


@st.composite
def references(draw: st.DrawFn, *, tag: bool | None = None, digest: bool | None = None) -> Parts:
    """Parts of a valid reference; `tag`/`digest` True forces, None lets hypothesis choose."""
    domain = draw(domains)
    path = draw(paths)
    chosen_tag = draw(tags) if tag or (tag is None and draw(st.booleans())) else None
    chosen_digest = draw(digests) if digest or (digest is None and draw(st.booleans())) else None
    return domain, path, chosen_tag, chosen_digest


@settings(max_examples=examples(300), deadline=None)
@given(references())
def test_generated_reference_is_kept_and_reassembles(parts: Parts) -> None:
    domain, path, tag, digest = parts
    ref = assemble(*parts)
    parsed = parse_image(ref)
    assert parsed.raw == ref
    assert assemble(parsed.domain, parsed.path, parsed.tag, parsed.digest) == ref
    assert (parsed.domain, parsed.path) == docker_split(f"{domain}/{path}" if domain else path)
    assert parsed.tag == tag
    assert parsed.digest == digest


def _last_component_span(path: str) -> tuple[int, int]:
    start = path.rfind("/") + 1
    return start, len(path)


@settings(max_examples=examples(100), deadline=None)
@given(references(), st.data())
def test_upper_case_letter_in_path_is_refused(parts: Parts, data: st.DataObject) -> None:
    domain, path, tag, digest = parts
    start, end = _last_component_span(path)
    at = data.draw(st.integers(start, end))
    letter = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    bad_path = path[:at] + letter + path[at:]
    with pytest.raises(ValueError, match="must be lower-case"):
        parse_image(assemble(domain, bad_path, tag, digest))


@settings(max_examples=examples(100), deadline=None)
@given(references(tag=True), st.data())
def test_bad_tag_character_is_refused(parts: Parts, data: st.DataObject) -> None:
    domain, path, tag, digest = parts
    assert tag is not None
    at = data.draw(st.integers(0, len(tag)))
    char = data.draw(st.sampled_from("!$%&*+,;=?^`{|}~é"))
    bad_tag = tag[:at] + char + tag[at:]
    with pytest.raises(ValueError, match=r"tag .* is invalid"):
        parse_image(assemble(domain, path, bad_tag, digest))


@settings(max_examples=examples(100), deadline=None)
@given(references(digest=True), st.data())
def test_truncated_digest_is_refused(parts: Parts, data: st.DataObject) -> None:
    domain, path, tag, digest = parts
    assert digest is not None
    cut = data.draw(st.integers(1, len(digest) - len("sha256:")))
    with pytest.raises(ValueError, match=r"digest .* is invalid: use sha256:<64 hex digits>"):
        parse_image(assemble(domain, path, tag, digest[:-cut]))


# -- end to end: images are strings, never normalised ---------------------------------------------

TWO_UBUNTUS = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {name: web-1-0-0}
spec:
  application: web
  version: "1.0.0"
  containers:
    - name: latest
      image: ubuntu:latest
    - name: noble
      image: ubuntu:24.04
    - name: hub
      image: docker.io/library/ubuntu:latest
"""


def test_tags_are_kept_verbatim_end_to_end(validate_repo: Callable[..., Report]) -> None:
    report = validate_repo({"release.yaml": TWO_UBUNTUS})
    assert report.problems == []
    release = report.catalog.releases["web-1-0-0"].manifest
    images = [container.image for container in release.spec.containers]
    assert images == ["ubuntu:latest", "ubuntu:24.04", "docker.io/library/ubuntu:latest"]
    assert len(set(images)) == 3


def test_invalid_image_is_reported_at_its_line(validate_repo: Callable[..., Report]) -> None:
    report = validate_repo({"release.yaml": TWO_UBUNTUS.replace("ubuntu:24.04", "Ubuntu:24.04")})
    [problem] = report.problems
    assert (problem.file, problem.line, problem.field) == (
        "release.yaml",
        11,
        "spec.containers[1].image",
    )
    assert problem.message == "repository name component 'Ubuntu' must be lower-case"
