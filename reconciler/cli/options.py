"""Options several commands share, and the store they name."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler.cli.output import Output, fail
from reconciler.store import Store, StoreError, StoreUnavailable, sqlite_url
from reconciler.store.store import DATABASE_FILE

OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]
AgeKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--age-key-file",
        dir_okay=False,
        help="age identities; default: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, ~/.config/sops/age.",
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option("--output", "-o", dir_okay=False, help="Write the token to this file (0600)."),
]
ManifestFile = Annotated[
    Path | None,
    typer.Option("--output", "-o", dir_okay=False, help="File to write; default: stdout."),
]
AgeRecipients = Annotated[
    list[str] | None,
    typer.Option("--age", help="age recipient (repeatable); default: .sops.yaml rules."),
]


def write_once(output: Path | None, text: str) -> bool:
    """An encrypted manifest to stdout, or to a new file: never over one (what it holds is
    immutable). False when it went to stdout."""
    if output is None:
        typer.echo(text, nl=False)
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("x", encoding="utf-8") as fh:
        fh.write(text)
    return True


DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="HEDGEROW_DATA_DIR",
        help="Where the controller keeps its state (its store, by default).",
    ),
]
Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="HEDGEROW_DB",
        help="Store URL (postgresql+psycopg://...); default: SQLite in data dir.",
    ),
]


class LogFormat(StrEnum):
    json = "json"
    console = "console"


LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format", help="json or console; default: json unless the logs go to a terminal."
    ),
]


def store_url(db: str | None, data_dir: Path) -> str:
    return db or sqlite_url(data_dir)


def open_store(db: str | None, data_dir: Path) -> Store:
    """The store a command reads: one line and exit 1 when it cannot be opened."""
    try:
        return Store.open(store_url(db, data_dir))
    except StoreError as exc:
        fail(str(exc), code=1)


def store_is_new(db: str | None, data_dir: Path) -> bool:
    """Whether the default store is not there yet: opening it makes it, and no controller has
    read it (the command runs elsewhere than the controller, or before its first start)."""
    return db is None and not (data_dir / DATABASE_FILE).is_file()


def store_name(db: str | None, data_dir: Path) -> str:
    """The store, as a message names it (a database URL without its password)."""
    if db is None:
        return str(data_dir / DATABASE_FILE)
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", db)


def wait_for_store(
    url: str, log: Any, sleep: Callable[[float], None] = time.sleep, ceiling: float = 30.0
) -> Store:
    """The controller's store, once its database answers (PostgreSQL may start after the
    controller, or be restarting): one log line per attempt, backing off up to `ceiling`. A
    store that can never work (a corrupt SQLite file) is one line and exit 1."""
    attempt = 0
    while True:
        try:
            return Store.open(url)
        except StoreUnavailable as exc:
            delay = min(ceiling, 2.0**attempt)
            attempt += 1
            log.warning("waiting for the store", error=str(exc), retry_in=delay)
            sleep(delay)
        except StoreError as exc:
            fail(str(exc), code=1)
