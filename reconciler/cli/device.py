"""`hedgerow device token` (a device's credential for the device API) and `hedgerow agent`
(the device side, for a machine with the whole of Hedgerow installed; a device with the agent
alone runs `hedgerow-agent`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reconciler import logs, wire
from reconciler.cli.options import (
    DataDir,
    Db,
    LogFormatOption,
    OutputOption,
    TokenFile,
    open_store,
    store_is_new,
    store_name,
)
from reconciler.cli.output import Output, console, fail, literal
from reconciler.core.enrollment import device_manifest as manifest_text
from reconciler.core.inventory import human_bytes as size
from reconciler.manifests.model.fields import check_dns_label
from reconciler.secrets import tokens

app = typer.Typer(help="Devices: their tokens, the enrolled and Pending ones, their manifests.")


@app.command("token")
def device_token(
    name: Annotated[str, typer.Argument(help="The Device's metadata.name.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the device's token.")] = False,
    output: TokenFile = None,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Issue a device's token (replacing any previous one) and print it once, or revoke it.

    Only its hash is stored: a lost token cannot be shown again, issue a new one. With -o the
    token goes to FILE, readable by its owner alone, and not to the terminal.
    """
    try:
        check_dns_label(name)
    except ValueError as exc:
        fail(str(exc))
    new = store_is_new(db, data_dir)
    with open_store(db, data_dir) as store:
        if revoke:
            if not store.revoke_token(name):
                fail(f"device {name} has no token", code=1)
            typer.echo(f"revoked the token of device {name}", err=True)
            return
        warning = unknown_device(name, store.applied_revision(), store.document_revisions())
        token = tokens.issue()
        issue_to(output, token, lambda: store.put_token(name, tokens.hash_token(token), now()))
    if output is None:
        typer.echo(token)  # stdout holds the token alone, for `> token-file`
        typer.echo(f"issued a token for device {name}; it is not shown again", err=True)
    else:
        typer.echo(f"wrote {output}: a token for device {name}", err=True)
    if new:
        typer.echo(
            f"warning: made a new store at {store_name(db, data_dir)}: no controller has read it "
            "yet; if yours runs elsewhere, name its store as it does (--data-dir or "
            "HEDGEROW_DATA_DIR, --db or HEDGEROW_DB), or its agent gets 401",
            err=True,
        )
    elif warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"store: {store_name(db, data_dir)}", err=True)


@app.command("list")
def device_list(
    pending: Annotated[
        bool, typer.Option("--pending", help="Only devices enrolled and not admitted yet.")
    ] = False,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: OutputOption = Output.text,
) -> None:
    """The devices of the applied revision and every enrolled one: admitted or Pending, the
    engine, free disk, and when each last reported and polled."""
    with open_store(db, data_dir) as store:
        rows = [row for row in store.inventory() if row.pending or not pending]
    if output is Output.json:
        typer.echo(json.dumps([row.to_json() for row in rows], indent=2))
        return
    table = Table(title="Pending devices" if pending else "Devices")
    for column in ("device", "condition", "system model", "engine", "free disk", "last report",
                   "last poll", "enrollment"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        facts = row.facts or wire.Facts()
        engine = " ".join(filter(None, (facts.engine, facts.engine_version))) or "-"
        cells = (
            row.device,
            "Pending" if row.pending else "Admitted",
            row.system_model or "-",
            engine,
            size(facts.disk_free_bytes),
            when(row.reported_at),
            when(row.polled_at),
            row.enrollment or "-",
        )
        table.add_row(*map(literal, cells))
    console().print(table)
    if pending and rows:
        typer.echo("admit one: hedgerow device manifest NAME > devices/NAME.yaml, then commit it",
                   err=True)  # fmt: skip


@app.command("manifest")
def device_manifest(
    name: Annotated[str, typer.Argument(help="An enrolled device's name.")],
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Print the Device manifest that admits an enrolled device: its name, the system model
    it reported, and its enrollment token's labels. Commit it to the repository."""
    with open_store(db, data_dir) as store:
        found = store.enrolled_devices().get(name)
    if found is None:
        fail(f"device {name} has not enrolled (see hedgerow device list --pending)", code=1)
    typer.echo(manifest_text(found), nl=False)


def when(at: datetime | None) -> str:
    return "-" if at is None else f"{at:%Y-%m-%d %H:%M:%S}"


def unknown_device(name: str, applied: str | None, devices: Collection[str]) -> str | None:
    """Why a token for `name` may be a mistake (a typo, a device not yet committed), or None
    when the applied revision has that device."""
    if applied is None:
        return f"no revision is applied yet: {name} cannot be checked against the fleet"
    if name in devices:
        return None
    return (
        f"{name} is not a device of the applied revision {applied[:12]}: its agent gets 404 "
        "until a commit adds it"
    )


def now() -> datetime:
    return datetime.now(UTC)


def issue_to(output: Path | None, token: str, put: Callable[[], None]) -> None:
    """Store a new token's hash (`put`) and, with `output`, write the token to that file,
    readable by its owner alone: staged before `put`, in place only after it."""
    staged = _stage(output, token) if output is not None else None
    try:
        put()
        if staged is not None and output is not None:
            _place(staged, output)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


def _place(staged: Path, output: Path) -> None:
    try:
        os.replace(staged, output)
    except OSError as exc:
        fail(
            f"cannot write {output}: {exc.strerror or exc}; the token was issued, issue another", 1
        )


def _stage(output: Path, token: str) -> Path:
    """The token in a new file beside `output`, created 0600 (mkstemp), so no other user can
    ever read it; renamed over `output` once the store holds its hash."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{output.name}-", dir=output.parent)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    staged = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{token}\n")
    except OSError as exc:
        staged.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc.strerror or exc}")
    return staged


def agent(
    controller: Annotated[
        list[str],
        typer.Option(
            "--controller",
            help="Controller URL; several (comma-separated or repeated): replicas, tried in turn "
            "when one cannot answer.",
        ),
    ],
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="This device's name; default: the enrolled name, else the hostname."
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", exists=True, dir_okay=False)
    ] = None,
    enroll_token_file: Annotated[
        Path | None,
        typer.Option(
            "--enroll-token-file",
            dir_okay=False,
            help="A shared enrollment token, used once to get this device's own token.",
        ),
    ] = None,
    system_model: Annotated[
        str | None, typer.Option("--system-model", help="Reported at enrollment.")
    ] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("/var/lib/hedgerow"),
    poll_interval: Annotated[str, typer.Option("--poll-interval", help="30s, 2m, ...")] = "30s",
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", dir_okay=False, help="CA to trust; REQUESTS_CA_BUNDLE is not."),
    ] = None,
    proxy: Annotated[
        str | None,
        typer.Option("--proxy", help="http(s):// proxy to the controller; HTTPS_PROXY is not."),
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run the device agent against the local Docker engine (DOCKER_HOST)."""
    from agent.controllers import parse_urls
    from agent.enroll import NoToken
    from agent.identity import IdentityError, check_name
    from agent.main import Start, duration, proxy_url, run  # the agent and its SDK, when asked

    try:
        urls = parse_urls(controller)
        interval = duration(poll_interval)
        if proxy is not None:
            proxy_url(proxy)
        if device is not None:
            check_name(device)
    except ValueError as exc:
        fail(str(exc))
    logs.configure(log_format.value if log_format else None)
    start = Start(device, token_file, enroll_token_file, system_model)
    try:
        run(urls, start, data_dir, interval, ca_file, proxy)
    except (NoToken, IdentityError) as exc:
        fail(str(exc))
