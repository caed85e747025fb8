"""`hedgerow credential create`: an encrypted ImageCredential manifest."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.options import AgeRecipients, ManifestFile, write_once
from reconciler.cli.output import fail
from reconciler.manifests.credentials import CreationError, creation_rule, render_credential
from reconciler.manifests.model.fields import check_dns_label
from reconciler.manifests.model.imageref import check_registry
from reconciler.secrets.secret import Secret

app = typer.Typer(help="Registry credentials, encrypted with sops and age.")


@app.command("create")
def credential_create(
    name: Annotated[str, typer.Argument(help="The credential's name (a DNS label).")],
    username: Annotated[str, typer.Option("--username", help="Registry user name.")],
    registry: Annotated[
        str | None, typer.Option("--registry", help="Registry host[:port] it is for.")
    ] = None,
    output: ManifestFile = None,
    age: AgeRecipients = None,
) -> None:
    """Write an encrypted ImageCredential manifest.

    The password is read from standard input, or asked for without echo on a terminal; it is
    never taken from the command line, where it would land in shell history and process lists.
    Credentials are immutable: an existing file is never overwritten.
    """
    try:
        check_dns_label(name)
        if registry is not None:
            check_registry(registry)
    except ValueError as exc:
        fail(str(exc))
    if output is not None and output.exists():
        fail(f"{output} exists; credentials are immutable: create one under a new name")
    target = output or Path.cwd() / f"{name}.yaml"
    try:
        rule = creation_rule(target, age or [])
    except CreationError as exc:
        fail(str(exc))
    password = _read_password()
    text = render_credential(
        name,
        Secret(username),
        password,
        registry,
        rule,
        now=datetime.now(UTC),
        file=str(output or "<stdout>"),
    )
    if write_once(output, text):
        typer.echo(f"wrote {output} (recipients from {rule.source})", err=True)


def _read_password() -> Secret:
    if sys.stdin.isatty():
        first = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        password = str(first)
    else:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        fail("the password is empty")
    return Secret(password)
