"""reconciler.secrets.secret: a Secret never shows its value by accident; fingerprints detect
change."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest

from reconciler.secrets.secret import Secret, fingerprint

MASK = "Secret('********')"
VALUE = "hunter2-pa55"


def test_secret_never_renders_its_value(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(VALUE)
    renderings = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        f"{secret:>40}",
        format(secret, "s"),
        "%s %r" % (secret, secret),  # noqa: UP031 - the old style must be masked too
        "{}".format(secret),  # noqa: UP032
        repr([secret, {"password": secret}]),
        str((secret,)),
    ]
    for rendering in renderings:
        assert VALUE not in rendering
    assert repr(secret) == str(secret) == f"{secret}" == MASK
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("credential %s", secret)
    assert VALUE not in caplog.text and MASK in caplog.text
    assert secret.reveal() == VALUE


def test_secret_equality_is_by_value() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert Secret(VALUE) != VALUE  # a Secret is not its plaintext
    assert Secret("") == Secret("")


def test_secret_is_closed() -> None:
    secret = Secret(VALUE)
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(secret)
    with pytest.raises(AttributeError):
        secret._value = "other"
    with pytest.raises(AttributeError):
        secret.extra = 1
    assert copy.copy(secret) is secret and copy.deepcopy(secret) is secret
    assert not hasattr(secret, "__dict__")
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_fingerprint() -> None:
    key, other_key = b"k" * 32, b"o" * 32
    assert fingerprint(key, Secret("a")) == fingerprint(key, Secret("a"))
    assert fingerprint(key, Secret("a")) == fingerprint(key, "a")
    assert fingerprint(key, Secret("a")) != fingerprint(key, Secret("b"))
    assert fingerprint(key, Secret("a")) != fingerprint(other_key, Secret("a"))
    assert fingerprint(key, "ab", "c") != fingerprint(key, "a", "bc")  # length-prefixed
    assert fingerprint(key, "a") != fingerprint(key, "a", "")
    assert fingerprint(key) != fingerprint(key, "")
    digest = fingerprint(key, Secret(VALUE), "user")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert VALUE not in digest
    with pytest.raises(ValueError):
        fingerprint(b"", "a")
    with pytest.raises(ValueError, match="UTF-8") as caught:
        fingerprint(key, "bad\ud800secret")
    assert "secret" not in str(caught.value)
