"""The controller's own key, kept in its data folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fingerprint_key(data_dir: Path) -> bytes:
    """The controller's HMAC key for credential fingerprints, made once and kept private: the
    file is created 0600 (never readable by others, even empty), its folder 0700 when made
    here, and a key file found wider is narrowed again."""
    path = data_dir / "fingerprint.key"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()
