"""Commands to run the controller and to look at what it did: controller, status, events;
device tokens, and the committed OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from reconciler import tokens
from reconciler.model.fields import check_dns_label
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
    app.command()(agent)
    app.command()(controller)
    app.command()(status)
    app.command()(events)
    app.command()(openapi)
    app.command()(demo)
    device_app = typer.Typer(help="Device credentials for the device API.")
    device_app.command("token")(device_token)
    app.add_typer(device_app, name="device")


def _store(db: str | None, data_dir: Path) -> Store:
    return Store.open(db or sqlite_url(data_dir))


def agent(
    controller: Annotated[str, typer.Option("--controller", help="Controller URL.")],
    device: Annotated[str, typer.Option("--device", help="This device's name.")],
    token_file: Annotated[Path, typer.Option("--token-file", exists=True, dir_okay=False)],
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("/var/lib/hedgerow"),
    poll_interval: Annotated[str, typer.Option("--poll-interval", help="30s, 2m, ...")] = "30s",
    ca_file: Annotated[Path | None, typer.Option("--ca-file", dir_okay=False)] = None,
) -> None:
    """Run the device agent against the local Docker engine (DOCKER_HOST)."""
    from agent.main import duration, run

    try:
        interval = duration(poll_interval)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    run(controller, device, token_file, data_dir, interval, ca_file)


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
    operator_token_file: Annotated[
        Path | None,
        typer.Option("--operator-token-file", help="Enables the operator API (/v1/status...)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain): serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
) -> None:
    """Follow a branch, apply each valid commit whole, and reconcile every device."""
    import uvicorn

    from reconciler.controller import Controller
    from reconciler.serve import Runner, create_app, fingerprint_key
    from reconciler.source import Mirror, SourceError, watch_refs

    host, _, port = listen.rpartition(":")
    if (tls_cert is None) != (tls_key is None):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    operator_token = None
    if operator_token_file is not None:
        operator_token = _read_token(operator_token_file)
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
        uvicorn.Config(create_app(runner, secret, operator_token=operator_token),
                       host=host or "127.0.0.1", port=int(port), log_level="warning",
                       ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                       # long polls would otherwise hold a stop for up to a minute
                       timeout_graceful_shutdown=3)
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

    scheme = "https" if tls_cert else "http"
    typer.echo(f"hedgerow controller: following {mirror.display_url} {branch}; {scheme}://{listen}")
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


def _read_token(path: Path) -> str:
    """The operator token: the file's content without surrounding whitespace, not empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {path}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not token:
        typer.echo(f"error: {path} is empty", err=True)
        raise typer.Exit(2)
    return token


def device_token(
    name: Annotated[str, typer.Argument(help="The Device's metadata.name.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the device's token.")] = False,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Issue a device's token (replacing any previous one) and print it once, or revoke it.

    Only its hash is stored: a lost token cannot be shown again, issue a new one.
    """
    try:
        check_dns_label(name)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with _store(db, data_dir) as store:
        if revoke:
            if not store.revoke_token(name):
                typer.echo(f"error: device {name} has no token", err=True)
                raise typer.Exit(1)
            typer.echo(f"revoked the token of device {name}", err=True)
            return
        token = tokens.issue()
        store.put_token(name, tokens.hash_token(token), datetime.now(UTC))
    typer.echo(token)  # stdout holds the token alone, for `> token-file`
    typer.echo(f"issued a token for device {name}; it is not shown again", err=True)


def openapi(
    output: Annotated[Path, typer.Option("--output", help="Where the document lives.")] = Path(
        "docs/openapi.json"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when the file is stale; write nothing.")
    ] = False,
) -> None:
    """Write the controller's OpenAPI document, generated from the app."""
    from reconciler.api import render_openapi

    text = render_openapi()
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            typer.echo(f"{output} is stale: run `hedgerow openapi`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")


def demo(
    manifests: Annotated[
        Path, typer.Option("--manifests", help="The example repository to deploy.")
    ] = Path("manifests"),
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Demo folder (repository, logs); default: temp.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="lyon-orin-01 (gateway + telemetry) or lyon-rpi4-02."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Exit as soon as the device is Ready.")] = (
        False
    ),
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for Ready.")] = 180,
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between statuses.")] = 5,
) -> None:
    """Run the example repository for real on this machine: engine, registry, controller and
    one device agent on loopback; everything it starts is stopped on exit (Ctrl-C)."""
    from reconciler.demo import REGISTRY_PORT, run

    # The example credential is sealed (MAC) for 127.0.0.1:5000: no other port can work.
    code = run(manifests, folder, device, REGISTRY_PORT, once, timeout, refresh, _console())
    raise typer.Exit(code)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
