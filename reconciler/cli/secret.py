"""`hedgerow secret create`: an encrypted Secret manifest, for an application's own secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.options import AgeRecipients, ManifestFile, write_once
from reconciler.cli.output import fail
from reconciler.manifests.appsecrets import render_secret, secret_rule
from reconciler.manifests.credentials import CreationError, creation_rule
from reconciler.manifests.model.fields import check_dns_label
from reconciler.manifests.model.secret import check_secret_key
from reconciler.secrets.secret import Secret

app = typer.Typer(help="Application secrets (passwords, API keys), encrypted with sops and age.")


@app.command("create")
def secret_create(
    name: Annotated[str, typer.Argument(help="The Secret's name (a DNS label).")],
    literal: Annotated[
        list[str] | None,
        typer.Option("--from-literal", help="KEY=VALUE (repeatable); see the warning below."),
    ] = None,
    from_file: Annotated[
        list[str] | None,
        typer.Option("--from-file", help="KEY=PATH (repeatable): the file's content, as text."),
    ] = None,
    output: ManifestFile = None,
    age: AgeRecipients = None,
) -> None:
    """Write an encrypted Secret manifest.

    A value given with --from-literal lands in shell history and process lists: prefer
    --from-file (a file you delete afterwards, or /dev/stdin). Secrets are immutable: an
    existing file is never overwritten; a new value goes under a new name.
    """
    try:
        check_dns_label(name)
    except ValueError as exc:
        fail(str(exc))
    data: dict[str, Secret] = {}
    for given, source in [(x, "literal") for x in literal or []] + [
        (x, "file") for x in from_file or []
    ]:
        key, equals, rest = given.partition("=")
        if not equals:
            fail(f"--from-{source} takes KEY={'VALUE' if source == 'literal' else 'PATH'}")
        try:
            check_secret_key(key)
        except ValueError as exc:
            fail(str(exc))
        if key in data:
            fail(f"key {key!r} is given twice")
        data[key] = Secret(rest) if source == "literal" else _read(Path(rest), key)
    if not data:
        fail("give at least one --from-literal KEY=VALUE or --from-file KEY=PATH")
    if output is not None and output.exists():
        fail(f"{output} exists; Secrets are immutable: create one under a new name")
    target = output or Path.cwd() / f"{name}.yaml"
    try:
        rule = secret_rule(creation_rule(target, age or []))
        text = render_secret(
            name, data, rule, now=datetime.now(UTC), file=str(output or "<stdout>")
        )
    except CreationError as exc:
        fail(str(exc))
    if write_once(output, text):
        keys = ", ".join(sorted(data))
        typer.echo(f"wrote {output} (keys: {keys}; recipients from {rule.source})", err=True)


def _read(path: Path, key: str) -> Secret:
    try:
        return Secret(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--from-file {key}: cannot read {path}: {exc.__class__.__name__}")
