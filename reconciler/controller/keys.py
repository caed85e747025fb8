"""The controller's own key, kept in its data folder."""

from __future__ import annotations

import secrets
from pathlib import Path


def fingerprint_key(data_dir: Path) -> bytes:
    """The controller's HMAC key for credential fingerprints, made once and kept private."""
    path = data_dir / "fingerprint.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as fh:
            path.chmod(0o600)
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()
