"""Device and operator bearer tokens: issued once, stored only as hashes.

Tokens are 256 random bits, so a plain SHA-256 is enough to make a stolen database useless
(no dictionary to try) and lets the controller look a token up by its hash; a slow password
hash would only cost every request time. The `hdr_` prefix (`hde_` for enrollment tokens)
makes a leaked token recognisable to secret scanners.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "hdr_"
ENROLLMENT_PREFIX = "hde_"  # a shared enrollment token: tells it from a device's own at a glance


def issue(prefix: str = PREFIX) -> str:
    """A new token; the caller shows it once and stores `hash_token(token)`."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of a token: what the store keeps."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check(token: str, stored_hash: str) -> bool:
    """Whether `token` hashes to `stored_hash`, in time independent of where they differ."""
    return hmac.compare_digest(hash_token(token), stored_hash)
