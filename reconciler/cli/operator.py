"""`hedgerow operator token --read-only NAME`: read-only tokens for the operator API and the
dashboard, for people who look but do not own the controller's `--operator-token-file`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.device import issue_to
from reconciler.cli.options import DataDir, Db, TokenFile, open_store, store_name
from reconciler.cli.output import fail
from reconciler.manifests.model.fields import check_dns_label
from reconciler.secrets import tokens

app = typer.Typer(help="Operator access: read-only viewer tokens for the API and the dashboard.")


@app.command("token")
def operator_token(
    name: Annotated[str, typer.Argument(help="Whose token (a DNS label), to revoke it later.")],
    read_only: Annotated[
        bool, typer.Option("--read-only", help="A viewer token: it reads, never changes.")
    ] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the token.")] = False,
    output: TokenFile = None,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Make a viewer token and print it once (only its hash is kept), or revoke one. The full
    operator token is the controller's --operator-token-file."""
    try:
        check_dns_label(name)
    except ValueError as exc:
        fail(str(exc))
    with open_store(db, data_dir) as store:
        if revoke:
            if not store.revoke_viewer_token(name):
                fail(f"no viewer token {name} to revoke", code=1)
            typer.echo(f"revoked viewer token {name}", err=True)
            return
        if not read_only:
            fail("only viewer tokens are made here (--read-only): the operator token is the "
                 "controller's --operator-token-file")  # fmt: skip
        token = tokens.issue()

        def put() -> None:
            if not store.create_viewer_token(name, tokens.hash_token(token), datetime.now(UTC)):
                fail(f"viewer token {name} exists already; revoke it or pick another name", 1)

        issue_to(output, token, put)
    if output is None:
        typer.echo(token)
        typer.echo(f"made viewer token {name}; it is not shown again", err=True)
    else:
        typer.echo(f"wrote {output}: viewer token {name}", err=True)
    typer.echo(f"store: {store_name(db, data_dir)}", err=True)
