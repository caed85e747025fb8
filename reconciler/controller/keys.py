"""The controller's fingerprint key: made once in its data folder, or shared by replicas."""

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


MIN_KEY_BYTES = 32


def shared_key(path: Path) -> bytes:
    """A key replicas share (`--fingerprint-key-file`, a Kubernetes Secret's file): every
    replica must fingerprint under the same key, for whichever leads next compares against
    the fingerprints the last one stored. ValueError for a key too short to be random."""
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes: a key needs {MIN_KEY_BYTES} or more")
    return key
