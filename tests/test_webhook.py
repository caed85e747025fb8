"""Webhook signatures as GitHub sends them: only the exact body signed with the secret passes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from reconciler.server.webhook import PREFIX, sign, verify_signature

SECRET = b"It's a Secret to Everybody"
BODY = b'{"ref":"refs/heads/main","after":"0123abcd"}'


def test_sign_matches_githubs_documented_example() -> None:
    """The example of GitHub's "Validating webhook deliveries" page."""
    assert sign(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_a_good_signature_verifies() -> None:
    header = sign(SECRET, BODY)
    assert header == PREFIX + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, BODY, header)
    assert verify_signature(SECRET, BODY, header.upper().replace("SHA256=", PREFIX))
    assert verify_signature(SECRET, b"", sign(SECRET, b""))


@pytest.mark.parametrize(
    "body",
    [BODY.replace(b"main", b"prod"), BODY + b"\n", BODY[:-1], b"", b" " + BODY],
)
def test_a_tampered_body_fails(body: bytes) -> None:
    assert not verify_signature(SECRET, body, sign(SECRET, BODY))


def test_the_wrong_secret_fails() -> None:
    assert not verify_signature(b"another secret", BODY, sign(SECRET, BODY))
    assert not verify_signature(SECRET, BODY, sign(b"another secret", BODY))


def test_a_missing_header_fails() -> None:
    assert not verify_signature(SECRET, BODY, None)
    assert not verify_signature(SECRET, BODY, "")


def test_a_sha1_signature_fails_even_when_correct() -> None:
    """`X-Hub-Signature: sha1=...` is the legacy header; SHA-1 is not accepted."""
    sha1 = "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest()
    assert not verify_signature(SECRET, BODY, sha1)
    digest = sign(SECRET, BODY).removeprefix(PREFIX)
    for header in ("sha1=" + digest, digest, "SHA256=" + digest, " " + PREFIX + digest):
        assert not verify_signature(SECRET, BODY, header)


@pytest.mark.parametrize(
    "digest",
    [
        "zz" * 32,  # not hex
        "0x" + "ab" * 31,  # a prefix fromhex would refuse anyway
        "ab " * 21 + "a",  # spaces, which bytes.fromhex would skip
        "ab" * 31,  # too short
        "ab" * 33,  # too long
        "",
        "é" * 64,  # not ASCII
    ],
)
def test_garbage_hex_fails(digest: str) -> None:
    assert not verify_signature(SECRET, BODY, PREFIX + digest)


def test_a_truncated_or_extended_good_signature_fails() -> None:
    good = sign(SECRET, BODY)
    assert not verify_signature(SECRET, BODY, good[:-2])
    assert not verify_signature(SECRET, BODY, good + "00")
    assert not verify_signature(SECRET, BODY, good + "\n")


def test_an_empty_secret_signs_and_verifies_nothing() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        sign(b"", BODY)
    forged = PREFIX + hmac.new(b"", BODY, hashlib.sha256).hexdigest()
    assert not verify_signature(b"", BODY, forged)
