"""`hedgerow demo`: the example repository deployed for real to four devices on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.observe import print_status
from reconciler.cli.output import console
from reconciler.store import Store, sqlite_url


def demo(
    manifests: Annotated[
        Path, typer.Option("--manifests", help="The example repository to deploy.")
    ] = Path("manifests"),
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Demo folder (repository, logs); default: temp.")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Exit as soon as every device is Ready.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for Ready.")] = 300,
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between statuses.")] = 5,
) -> None:
    """Run the example repository for real on this machine: engine, registry, controller and
    an agent for each of four devices on loopback; everything it starts is stopped on exit
    (Ctrl-C)."""
    from reconciler.demo.run import REGISTRY_PORT, run

    def show_status(data_dir: Path) -> None:
        with Store.open(sqlite_url(data_dir)) as store:
            print_status(store)

    # The example credential is sealed (MAC) for 127.0.0.1:5000: no other port can work.
    code = run(manifests, folder, REGISTRY_PORT, once, timeout, refresh, console(), show_status)
    raise typer.Exit(code)
