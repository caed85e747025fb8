"""The one output helper of the commands: a console, device and git text made safe to print,
the `-o` choice, and usage errors."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.secrets.sops import Identity, SopsError, find_identities


class Output(StrEnum):
    text = "text"
    json = "json"


def console() -> Console:
    """Wide when piped, so that names in tables are never folded for grep and CI logs; no emoji
    codes, so that `:warning:` in a device's message stays text."""
    return Console(
        highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200
    )


# Whitespace controls become a space, so that words stay apart on one line; every other C0 or C1
# control (ESC above all) and every bidirectional control goes, so a message cannot move the
# cursor, retitle the terminal, hide a link, or reorder what is shown around it.
_SPACES = "\t\n\v\f\r\x85\u2028\u2029"
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F,
             *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # fmt: skip
_UNPRINTABLE = dict.fromkeys(_CONTROLS) | {ord(space): " " for space in _SPACES}


def literal(text: str) -> str:
    """Device or git text as markup that prints exactly that text, without its controls.

    Every table cell and line built from what a device reported or a commit holds goes through
    it: stored text is shown on every `hedgerow status`, so markup in it would crash each one
    (`[/]`) or style and link what the operator reads, and an escape sequence would reach the
    terminal itself.
    """
    return escape(printable(text))


def printable(text: str) -> str:
    """`text` on one line without control characters, for output printed without markup."""
    return text.translate(_UNPRINTABLE)


def printable_lines(text: str) -> str:
    """`printable` line by line: the newlines of a multi-line report stay."""
    return "\n".join(printable(line) for line in text.split("\n"))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: MESSAGE` on stderr and exit (2: a usage error, as typer's own)."""
    typer.echo(f"error: {printable(message)}", err=True)  # it may quote a server or a commit
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
