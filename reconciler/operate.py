"""Commands to run the controller and to look at what it did: controller, status, events."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from reconciler.sops import SopsError, find_identities
from reconciler.store import EventRecord, Store, sqlite_url

DataDir = Annotated[Path, typer.Option("--data-dir", help="Where the controller keeps its state.")]
Db = Annotated[
    str | None,
    typer.Option("--db", help="Store URL (postgresql+psycopg://...); default: SQLite in data dir."),
]


class Output(StrEnum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command()(controller)
    app.command()(status)
    app.command()(events)


def _store(db: str | None, data_dir: Path) -> Store:
    return Store.open(db or sqlite_url(data_dir))


def controller(
    repo: Annotated[str, typer.Option("--repo", help="Path, file://, https:// or ssh:// URL.")],
    branch: Annotated[str, typer.Option("--branch", help="Branch to follow.")] = "main",
    path: Annotated[str, typer.Option("--path", help="Folder of the manifests.")] = "",
    db: Db = None,
    listen: Annotated[str, typer.Option("--listen", help="HTTP address.")] = "127.0.0.1:8080",
    data_dir: DataDir = Path(".hedgerow"),
    interval: Annotated[float, typer.Option("--interval", help="Seconds between fetches.")] = 30,
    watch: Annotated[
        bool, typer.Option("--watch", help="See commits to a local repository at once.")
    ] = False,
    webhook_secret_file: Annotated[
        Path | None, typer.Option("--webhook-secret-file", help="Enables POST /v1/hooks/git.")
    ] = None,
    age_key_file: Annotated[
        Path | None, typer.Option("--age-key-file", help="age identities for credentials.")
    ] = None,
) -> None:
    """Follow a branch, apply each valid commit whole, and reconcile every device."""
    import uvicorn

    from reconciler.controller import Controller
    from reconciler.serve import Runner, create_app, fingerprint_key
    from reconciler.source import Mirror, SourceError, watch_refs

    host, _, port = listen.rpartition(":")
    try:
        identities = find_identities(
            key_file=str(age_key_file) if age_key_file else None,
            environ=os.environ,
            home=Path.home(),
        )
        mirror = Mirror(repo, branch, data_dir / "git")
    except (SopsError, SourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    secret = webhook_secret_file.read_bytes().strip() if webhook_secret_file else None
    store = _store(db, data_dir)

    class Source:
        def fetch(self) -> str:
            return mirror.fetch()

        def files(self, sha: str) -> Any:
            return mirror.files(sha, path)

    runner = Runner(
        Controller(
            Source(), store, identities=identities, fingerprint_key=fingerprint_key(data_dir)
        ),
        interval=interval,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(runner, secret), host=host or "127.0.0.1", port=int(port),
                       log_level="warning")
    )  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        extra = [server.serve()]
        if watch:
            extra.append(watch_refs(Path(repo), runner.wake, stop=stop))
        try:
            await runner.run(*extra)
        finally:
            stop.set()

    typer.echo(f"hedgerow controller: following {mirror.display_url} {branch}; http://{listen}")
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


def status(
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """The applied revision, rejected commits, and every deployment's status and conditions."""
    with _store(db, data_dir) as store:
        applied = store.applied_revision()
        rejected = store.rejected(limit=10)
        statuses = sorted(store.statuses(), key=lambda s: (s.deployment, s.device))
    if output is Output.json:
        typer.echo(
            json.dumps(
                {
                    "revision": applied,
                    "rejected": [
                        {"revision": r.sha, "at": r.at.isoformat(), "errors": r.errors}
                        for r in rejected
                    ],
                    "deployments": [s.status for s in statuses],
                },
                indent=2,
            )
        )
        return
    console = _console()
    console.print(f"revision: {applied or '(none applied yet)'}")
    for record in rejected:
        console.print(
            f"[red]rejected[/] {record.sha[:12]} at {record.at:%Y-%m-%d %H:%M:%S}: "
            f"{len(record.errors)} error(s)"
        )
        for error in record.errors[:5]:
            console.print(f"  {error['file']}:{error['line']}: {error['message']}", markup=False)
    table = Table(title="Deployments")
    for column in ("deployment", "device", "application", "desired", "observed", "state",
                   "conditions"):  # fmt: skip
        table.add_column(column)
    for entry in statuses:
        s = entry.status
        conditions = " ".join(
            f"{c['type']}={c['status']}({c['reason']})" for c in s.get("conditions", [])
        )
        table.add_row(
            entry.deployment,
            entry.device,
            s.get("application", ""),
            s.get("desiredRelease") or "-",
            s.get("observedRelease") or "-",
            f"{s.get('desiredState')}/{s.get('observedState') or '?'}",
            conditions,
        )
    console.print(table)


def events(
    device: Annotated[str | None, typer.Option("--device")] = None,
    deployment: Annotated[str | None, typer.Option("--deployment")] = None,
    after: Annotated[int | None, typer.Option("--after", help="Events after this id.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """The event history, oldest first; page with --after the last id shown."""
    with _store(db, data_dir) as store:
        found = store.events(device=device, deployment=deployment, after_id=after, limit=limit)
    if output is Output.json:
        typer.echo(json.dumps([_event_json(e) for e in found], indent=2))
        return
    table = Table(title="Events")
    for column in ("id", "at", "device", "deployment", "event", "message"):
        table.add_column(column, overflow="fold")
    for event in found:
        table.add_row(
            str(event.id),
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            event.device or "-",
            event.deployment or "-",
            event.kind,
            event.message,
        )
    _console().print(table)


def _event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "device": event.device,
        "deployment": event.deployment,
        "event": event.kind,
        "message": event.message,
        "revision": event.revision,
    }


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
