"""Webhook signatures: a push notification is trusted only if it proves it knows the secret.

GitHub (and Gitea, Forgejo) sign the raw request body with HMAC-SHA256 and send
`X-Hub-Signature-256: sha256=<hex>`. Pure functions: the HTTP server hands over the bytes it
received, before any parsing, because re-serialised JSON would not match the signature.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGEST_HEX_LENGTH = 2 * hashlib.sha256().digest_size


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value for `body`, as GitHub computes it (for tests and
    clients). An empty secret is refused: anyone could produce its signatures."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of the raw `body` with `secret`.

    Anything malformed is simply False (the caller answers 401 either way, and says nothing
    about why); the digests are compared in constant time so that timing reveals nothing of
    the expected one. An empty secret verifies nothing.
    """
    if not secret or header is None or not header.startswith(PREFIX):
        return False
    given = header[len(PREFIX) :]
    if len(given) != _DIGEST_HEX_LENGTH or not _HEX.issuperset(given):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    return hmac.compare_digest(bytes.fromhex(given), expected)
