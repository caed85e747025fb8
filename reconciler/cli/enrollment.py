"""`hedgerow enrollment create|list|revoke`: shared tokens devices enroll themselves with."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from reconciler.cli.device import issue_to
from reconciler.cli.options import (
    DataDir,
    Db,
    OutputOption,
    TokenFile,
    open_store,
    store_is_new,
    store_name,
)
from reconciler.cli.output import Output, console, fail, literal
from reconciler.core.enrollment import EnrollmentToken, parse_labels, parse_ttl
from reconciler.manifests.model.fields import check_dns_label
from reconciler.secrets import tokens

app = typer.Typer(help="Enrollment tokens: devices join the fleet by themselves with one.")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the token (a DNS label).")],
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="How long it enrolls devices: 30m, 72h, 7d.")
    ] = None,
    max_uses: Annotated[
        int | None, typer.Option("--max-uses", min=1, help="How many devices it enrolls.")
    ] = None,
    labels: Annotated[
        str, typer.Option("--labels", help="k=v,... for the Device manifests of its devices.")
    ] = "",
    allow_reenroll: Annotated[
        bool,
        typer.Option(
            "--allow-reenroll",
            help="A device enrolling under a name already enrolled (re-imaged) replaces it: "
            "the old device token is revoked.",
        ),
    ] = False,
    output: TokenFile = None,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Make an enrollment token and print it once (only its hash is kept). Bake it into a
    device image; the agent enrolls with `--enroll-token-file`."""
    try:
        check_dns_label(name)
        parsed = parse_labels(labels)
        lifetime = parse_ttl(ttl) if ttl is not None else None
    except ValueError as exc:
        fail(str(exc))
    now = datetime.now(UTC)
    record = EnrollmentToken(
        name=name,
        labels=parsed,
        created_at=now,
        expires_at=now + lifetime if lifetime else None,
        max_uses=max_uses,
        allow_reenroll=allow_reenroll,
    )
    new = store_is_new(db, data_dir)
    token = tokens.issue(tokens.ENROLLMENT_PREFIX)
    with open_store(db, data_dir) as store:

        def put() -> None:
            if not store.create_enrollment_token(record, tokens.hash_token(token)):
                fail(f"enrollment token {name} exists already; revoke it or pick another name", 1)

        issue_to(output, token, put)
    if output is None:
        typer.echo(token)  # stdout holds the token alone, for `> token-file`
        typer.echo(f"made enrollment token {name}; it is not shown again", err=True)
    else:
        typer.echo(f"wrote {output}: enrollment token {name}", err=True)
    if new:
        typer.echo(f"warning: made a new store at {store_name(db, data_dir)}", err=True)
    typer.echo(f"store: {store_name(db, data_dir)}", err=True)


@app.command("list")
def list_tokens(
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: OutputOption = Output.text,
) -> None:
    """Every enrollment token: its state, uses, expiry and labels (never the token)."""
    with open_store(db, data_dir) as store:
        found = store.enrollment_tokens()
    now = datetime.now(UTC)
    if output is Output.json:
        typer.echo(json.dumps([_token_json(t, now) for t in found], indent=2))
        return
    table = Table(title="Enrollment tokens")
    for column in ("name", "state", "uses", "expires", "labels", "re-enroll"):
        table.add_column(column)
    for t in found:
        cells = (
            t.name,
            t.state(now),
            f"{t.uses}/{t.max_uses}" if t.max_uses is not None else str(t.uses),
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",
            ",".join(f"{k}={v}" for k, v in sorted(t.labels.items())) or "-",
            "yes" if t.allow_reenroll else "no",
        )
        table.add_row(*map(literal, cells))
    console().print(table)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The enrollment token's name.")],
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Revoke an enrollment token: no device enrolls with it any more (those that did keep
    their own tokens)."""
    with open_store(db, data_dir) as store:
        if not store.revoke_enrollment_token(name, datetime.now(UTC)):
            fail(f"no enrollment token {name} to revoke", code=1)
    typer.echo(f"revoked enrollment token {name}", err=True)


def _token_json(token: EnrollmentToken, now: datetime) -> dict[str, object]:
    return {
        "name": token.name,
        "state": token.state(now),
        "uses": token.uses,
        "maxUses": token.max_uses,
        "createdAt": token.created_at.isoformat(),
        "expiresAt": token.expires_at.isoformat() if token.expires_at else None,
        "labels": dict(token.labels),
        "allowReenroll": token.allow_reenroll,
    }
