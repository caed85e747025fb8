"""Options several commands share, and the store they name."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.output import Output
from reconciler.store import Store, sqlite_url

OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]
AgeKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--age-key-file",
        dir_okay=False,
        help="age identities; default: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, ~/.config/sops/age.",
    ),
]
DataDir = Annotated[Path, typer.Option("--data-dir", help="Where the controller keeps its state.")]
Db = Annotated[
    str | None,
    typer.Option("--db", help="Store URL (postgresql+psycopg://...); default: SQLite in data dir."),
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


def open_store(db: str | None, data_dir: Path) -> Store:
    return Store.open(db or sqlite_url(data_dir))
