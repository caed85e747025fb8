"""Images without internet: a root filesystem of one static busybox, imported into an engine."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from reconciler.demo.daemons import SandboxError

BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "httpd", "wget")


def busybox() -> Path:
    """The static busybox binary that is the images' only program."""
    for path in BUSYBOX_PATHS:
        if path.is_file():
            return path
    raise SandboxError(
        "busybox not found in /bin or /usr/bin: install Debian's `busybox-static` package "
        "(apt-get install busybox-static; tests/system-deps.sh does it)"
    )


def rootfs_tar(binary_path: Path, version: str) -> bytes:
    """A root filesystem of one static busybox, its applets as symlinks, and /www/VERSION."""
    buffer = io.BytesIO()
    binary = binary_path.read_bytes()
    if not binary.startswith(b"\x7fELF") or b"ld-linux" in binary[:4096]:
        raise SandboxError(
            f"{binary_path} is not a static binary, and an image has no libc: install Debian's "
            "`busybox-static` package (it replaces `busybox`)"
        )

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
        archive.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder, mode in (("bin", 0o755), ("www", 0o755), ("data", 0o755), ("tmp", 0o1777)):
            add(folder, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("www/VERSION", tarfile.REGTYPE, 0o644, f"{version}\n".encode())
    return buffer.getvalue()
