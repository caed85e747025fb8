"""The one output helper of the commands: a console, the `-o` choice, and usage errors."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from reconciler.secrets.sops import Identity, SopsError, find_identities


class Output(StrEnum):
    text = "text"
    json = "json"


def console() -> Console:
    """Wide when piped, so that names in tables are never folded for grep and CI logs."""
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: MESSAGE` on stderr and exit (2: a usage error, as typer's own)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def identities(key_file: Path | None) -> list[Identity]:
    """Age keys found as sops finds them; a key file that cannot be read is a usage error."""
    try:
        return find_identities(
            key_file=str(key_file) if key_file else None, environ=os.environ, home=Path.home()
        )
    except SopsError as exc:
        fail(str(exc))


def read_token(path: Path) -> str:
    """A token file's content without surrounding whitespace, not empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    if not token:
        fail(f"{path} is empty")
    return token
