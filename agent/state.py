"""The last desired document, kept on the device so the agent works offline and after a reboot.

Registry credentials and Secret values are dropped before writing: credentials are only needed
for a pull, the controller sends both again, and a device's disk is the least safe place for
them (Secret values never touch it: after a reboot the agent waits for the controller before it
makes a container needing one again).
Writes are atomic (temporary file, fsync, rename, fsync of the folder), so a power cut leaves the
previous document or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import msgspec

from reconciler.wire import DesiredDocument

FILE_NAME = "desired.json"


def save_desired(folder: Path, document: DesiredDocument) -> Path:
    """Write `document` without its registry credentials and Secret values; returns the file
    written."""
    without_auth = msgspec.structs.replace(document, registry_auth=[], secrets=[])
    return write_atomically(
        folder, FILE_NAME, msgspec.json.format(msgspec.json.encode(without_auth), indent=1)
    )


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """`folder/name` holds `data`, or what it held before: never half of it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / name
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # makes the rename itself durable
    finally:
        os.close(directory)
    return target


def load_desired(folder: Path) -> DesiredDocument | None:
    """The document last saved, or None when there is none yet.

    A file that no longer parses (written by another version, or damaged on disk) is moved
    aside to `desired.json.invalid` and None returned: the agent then waits for the controller
    rather than refusing to start.
    """
    target = folder / FILE_NAME
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=DesiredDocument)
    except msgspec.DecodeError:  # not JSON, or not a document (ValidationError is one too)
        os.replace(target, target.with_name(f"{FILE_NAME}.invalid"))
        return None
