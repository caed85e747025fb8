"""`hedgerow import compose`: a compose file as Hedgerow manifests, written to a folder."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from reconciler.cli.output import fail
from reconciler.compose.convert import Imported, Options, convert, dns_label, manifests_of
from reconciler.compose.interpolate import InterpolationError, interpolate_tree, read_env_file
from reconciler.manifests.appsecrets import render_secret, secret_rule
from reconciler.manifests.credentials import CreationError, CreationRule, creation_rule
from reconciler.manifests.load import load_bytes
from reconciler.secrets.secret import Secret

app = typer.Typer(help="Bring existing stacks over to Hedgerow.")
FOLDERS = {
    "Application": "applications",
    "Release": "releases",
    "Volume": "resources",
    "Network": "resources",
    "Deployment": "deployments",
}


@app.command("compose")
def import_compose(
    file: Annotated[Path, typer.Argument(help="The compose file.", dir_okay=False)],
    application: Annotated[
        str | None, typer.Option("--application", help="Default: the file's folder name.")
    ] = None,
    version: Annotated[str, typer.Option("--version", help="The Release's version.")] = "1.0.0",
    device: Annotated[str | None, typer.Option("--device", help="Deploy to this device.")] = None,
    selector: Annotated[
        str | None, typer.Option("--selector", help="Deploy to devices labelled k=v.")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")] = Path("."),
    age: Annotated[
        list[str] | None,
        typer.Option("--age", help="age recipient for Secrets; default: .sops.yaml rules."),
    ] = None,
) -> None:
    """Write an Application, a Release, its Volumes and Networks, a Deployment when a target is
    given, and Secrets for values that look like passwords. Errors name the line."""
    if device is not None and selector is not None:
        fail("give --device or --selector, not both")
    pair = None
    if selector is not None:
        key, equals, value = selector.partition("=")
        if not equals:
            fail("--selector takes KEY=VALUE")
        pair = (key, value)
    try:
        content = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    documents, problems = load_bytes(file.name, content)
    if problems or len(documents) != 1:
        for problem in problems:
            typer.echo(problem.render(), err=True)
        fail(f"{file}: one YAML document expected", code=2)
    (document,) = documents
    folder = file.resolve().parent
    env = _environment(folder)
    try:
        data = interpolate_tree(document.data, env)
    except InterpolationError as exc:
        fail(f"{file}: {exc}", code=2)
    given = data.get("name") if isinstance(data, dict) else None
    name = dns_label(application or (str(given) if given else "") or folder.name)
    rule = _rule(output, age)
    options = Options(
        name,
        version,
        str(folder),
        str(Path.home()),
        device,
        pair,
        secrets=rule is not None,
        environment=env,
    )

    def read(path: str) -> str:
        return (folder / path).read_text(encoding="utf-8")

    imported = convert(data, lambda path: document.locate(path)[0], read, options)
    for finding in imported.warnings:
        typer.echo(f"warning: {finding.render(file.name)}", err=True)
    if imported.errors:
        for finding in imported.errors:
            typer.echo(f"error: {finding.render(file.name)}", err=True)
        fail(f"{len(imported.errors)} error(s): nothing written", code=2)
    written = _write(output, imported, rule, name)
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"next: hedgerow validate {output}", err=True)


def _environment(folder: Path) -> dict[str, str]:
    """The `.env` beside the compose file, with the environment over it, as compose reads."""
    found: dict[str, str] = {}
    dotenv = folder / ".env"
    if dotenv.is_file():
        found.update(read_env_file(dotenv.read_text(encoding="utf-8")))
    found.update(os.environ)
    return found


def _rule(output: Path, age: list[str] | None) -> CreationRule | None:
    try:
        return secret_rule(creation_rule(output / "secrets" / "secret.yaml", age or []))
    except CreationError:
        return None


def _write(
    output: Path, imported: Imported, rule: CreationRule | None, application: str
) -> list[Path]:
    """One file per manifest, volumes and networks together; nothing when a file exists."""
    files: dict[Path, list[dict[str, Any]]] = {}
    for document in manifests_of(imported):
        kind, name = document["kind"], document["metadata"]["name"]
        folder = FOLDERS[kind]
        stem = application if folder == "resources" else name
        files.setdefault(output / folder / f"{stem}.yaml", []).append(document)
    texts = {
        path: yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)
        for path, docs in files.items()
    }
    if rule is not None:
        for name, data in imported.secrets.items():
            path = output / "secrets" / f"{name}.yaml"
            values = {key: Secret(value) for key, value in data.items()}
            try:
                texts[path] = render_secret(
                    name, values, rule, now=datetime.now(UTC), file=str(path)
                )
            except CreationError as exc:
                fail(str(exc))
    taken = [path for path in texts if path.exists()]
    if taken:
        fail(f"{', '.join(map(str, taken))} exist(s): nothing written (releases are immutable)")
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(texts)
