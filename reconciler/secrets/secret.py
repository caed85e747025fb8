"""A plaintext secret that does not leak through repr, str, format or pickling.

Decrypted credentials travel through code that logs and raises; wrapping them in `Secret`
makes the accidental path print `Secret('********')`, so only an explicit `reveal()` shows
the value. `fingerprint` lets callers notice that a credential changed (e.g. to restart a
container) while storing only a keyed hash, never the plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import NoReturn

__all__ = ["Secret", "fingerprint"]

_MASK = "Secret('********')"
_FINGERPRINT_DOMAIN = b"hedgerow-fingerprint-v1\x00"


class Secret:
    """Holds a plaintext string; every textual rendering is masked."""

    __slots__ = ("_value",)
    __hash__ = None  # type: ignore[assignment]  # equal by value, yet a hash could leak it

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the plaintext; the one deliberate way out."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        # f"{s:>20}" or format(s, "s") must not reach the plaintext either.
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # Pickles end up in caches and crash dumps: refuse rather than write plaintext.
        raise TypeError("Secret is not picklable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: object) -> Secret:
        return self


def fingerprint(key: bytes, *values: Secret | str) -> str:
    """HMAC-SHA256 (hex) of the values under `key`, to detect change without keeping plaintext.

    Each value is length-prefixed, so ("ab", "c") and ("a", "bc") differ; the key keeps
    the fingerprint of a low-entropy password from being brute-forced offline.
    """
    if not isinstance(key, bytes) or not key:
        raise ValueError("fingerprint needs a non-empty bytes key")
    mac = hmac.new(key, _FINGERPRINT_DOMAIN, hashlib.sha256)
    mac.update(len(values).to_bytes(8, "big"))
    for value in values:
        data = _utf8(value.reveal() if isinstance(value, Secret) else value)
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.hexdigest()


def _utf8(text: str) -> bytes:
    """Encode without letting the plaintext ride along in a UnicodeEncodeError."""
    if not isinstance(text, str):
        raise TypeError(f"fingerprint takes Secret or str values, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("value is not encodable as UTF-8") from None
