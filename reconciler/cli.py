"""The `hedgerow` command. Commands parse arguments and print; the work is done elsewhere."""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from reconciler import crds as crd_files
from reconciler import operate
from reconciler.controller import observed_releases
from reconciler.credentials import (
    CreationError,
    creation_rule,
    fingerprints,
    render_credential,
)
from reconciler.desired import desired_fleet
from reconciler.model.fields import check_dns_label
from reconciler.model.imageref import check_registry
from reconciler.plan import Action, converged, plan_device
from reconciler.review import Format, render, review
from reconciler.secret import Secret
from reconciler.sops import Identity, SopsError, find_identities
from reconciler.source import SourceError, open_repo, resolve, tree_files
from reconciler.validate import Report, validate_files, validate_tree

app = typer.Typer(
    help="Hedgerow: GitOps for containers on fleets of edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


AgeKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--age-key-file",
        dir_okay=False,
        help="age identities; default: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, ~/.config/sops/age.",
    ),
]


def _identities(key_file: Path | None) -> list[Identity]:
    """Age keys found as sops finds them; a key file that cannot be read is a usage error."""
    try:
        return find_identities(
            key_file=str(key_file) if key_file else None, environ=os.environ, home=Path.home()
        )
    except SopsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _console() -> Console:
    """Wide when piped, so that names in tables are never folded for grep and CI logs."""
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class Output(StrEnum):
    text = "text"
    json = "json"


@app.command()
def validate(
    path: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="Root of the manifest repository."),
    ] = Path("."),
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
    summary: Annotated[
        bool, typer.Option(help="After a valid run, show what each device would run.")
    ] = False,
    age_key_file: AgeKeyFile = None,
) -> None:
    """Check every manifest under PATH; report every error and warning at once.

    Credentials are decrypted and their MACs verified when an age key is found (as sops finds
    it); without one only their structure is checked, and a warning says so.

    Exit 0 when there is no error (warnings allowed), 1 with errors, 2 on usage errors.
    """
    report = validate_tree(path, _identities(age_key_file))
    if output is Output.json:
        typer.echo(json.dumps(_report_json(report), indent=2))
    else:
        console = _console()
        for problem in report.problems:
            console.print(problem.render(), markup=False)
        _print_verdict(console, report)
        if summary and report.valid:
            _print_summary(console, report)
    raise typer.Exit(0 if report.valid else 1)


def _report_json(report: Report) -> dict[str, object]:
    return {
        "valid": report.valid,
        "documents": report.documents,
        "errors": [p.to_json() for p in report.errors],
        "warnings": [p.to_json() for p in report.warnings],
    }


def _print_verdict(console: Console, report: Report) -> None:
    errors, warnings = len(report.errors), len(report.warnings)
    counts = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if report.valid:
        console.print(f"[green]valid[/]: {report.documents} documents, {counts}")
    else:
        console.print(f"[red]invalid[/]: {report.documents} documents, {counts}")


def _print_summary(console: Console, report: Report) -> None:
    catalog = report.catalog
    kinds = Table(title="Documents by kind")
    kinds.add_column("kind")
    kinds.add_column("count", justify="right")
    for kind, entries in (
        ("Application", catalog.applications),
        ("Release", catalog.releases),
        ("ImageCredential", catalog.credentials),
        ("Volume", catalog.volumes),
        ("Network", catalog.networks),
        ("Device", catalog.devices),
        ("Deployment", catalog.deployments),
    ):
        kinds.add_row(kind, str(len(entries)))
    console.print(kinds)
    devices = Table(title="What each device would run")
    for column in ("device", "system model", "deployment", "application", "release", "state"):
        devices.add_column(column, overflow="fold")
    runs: dict[str, list[tuple[str, str, str, str]]] = {name: [] for name in catalog.devices}
    for name, deployment in sorted(catalog.deployments.items()):
        spec = deployment.manifest.spec
        for device in catalog.targets(deployment.manifest):
            runs[device.name].append((name, spec.application, spec.release, spec.state))
    for device_name, rows in sorted(runs.items()):
        model = catalog.devices[device_name].manifest.spec.system_model
        for row in rows or [("-", "-", "-", "-")]:
            devices.add_row(device_name, model, *row)
    console.print(devices)


@app.command()
def crds(
    folder: Annotated[Path, typer.Option("--dir", help="Where the CRDs live.")] = Path("crds"),
    check: Annotated[
        bool, typer.Option("--check", help="Fail when the files differ from the models.")
    ] = False,
) -> None:
    """Generate the CRDs and the editor JSON Schema from the models."""
    if check:
        stale = crd_files.stale(folder)
        for name in stale:
            typer.echo(f"{folder / name}: stale; run `hedgerow crds` and commit the result")
        if stale:
            raise typer.Exit(1)
        typer.echo(f"{folder}: up to date")
        return
    written = crd_files.write(folder)
    for name in written:
        typer.echo(f"wrote {folder / name}")
    if not written:
        typer.echo(f"{folder}: up to date")


@app.command()
def plan(
    base: Annotated[
        str, typer.Option("--base", help="The revision the change is merged into (origin/main).")
    ],
    head: Annotated[str, typer.Option("--head", help="The revision to review.")] = "HEAD",
    repo: Annotated[str, typer.Option("--repo", help="Path of the git repository.")] = ".",
    path: Annotated[
        str, typer.Option("--path", help="Folder of the manifests inside the repository.")
    ] = "",
    output: Annotated[
        Format, typer.Option("--output", "-o", help="text, markdown or json.")
    ] = Format.text,
    age_key_file: AgeKeyFile = None,
    controller: Annotated[
        str | None,
        typer.Option(
            "--controller",
            help="Controller URL: plan from what devices last reported, not from BASE.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", dir_okay=False, help="The operator token, for --controller."),
    ] = None,
) -> None:
    """Show what merging HEAD into BASE would do on each device, from git alone.

    Both revisions are read from their commits, never from the working tree. Devices are
    assumed to run BASE; with --controller, each runs what it last reported to the controller
    (BASE for a device that never reported).

    Exit 0 when HEAD would be accepted, 1 when it would be rejected, 2 on usage errors.
    """
    observed = _fetch_observed(controller, token_file) if controller is not None else None
    try:
        repository = open_repo(repo)
        base_sha, head_sha = resolve(repository, base), resolve(repository, head)
        identities = _identities(age_key_file) or None
        before = validate_files(tree_files(repository, base_sha, path), identities)
        after = validate_files(tree_files(repository, head_sha, path), identities)
    except SourceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    compared = None
    if identities:
        key = secrets.token_bytes(32)  # fingerprints are compared within this run only
        compared = (fingerprints(before.credentials, key), fingerprints(after.credentials, key))
    result = review(before, after, compared)
    if observed is not None:
        result = replace(result, devices=_plan_observed(before, after, observed))
    typer.echo(render(result, output), nl=False)
    raise typer.Exit(0 if result.valid else 1)


def _fetch_observed(url: str, token_file: Path | None) -> dict[str, dict[str, Any]]:
    """Each device's last report, from the controller's operator API (GET /v1/observed)."""
    if token_file is None:
        typer.echo("error: --controller needs --token-file (the operator token)", err=True)
        raise typer.Exit(2)
    if not url.startswith(("http://", "https://")):
        typer.echo(f"error: --controller {url!r} is not an http:// or https:// URL", err=True)
        raise typer.Exit(2)
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {token_file}: {exc}", err=True)
        raise typer.Exit(2) from None
    endpoint = f"{url.rstrip('/')}/v1/observed"
    request = urllib.request.Request(
        endpoint, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            loaded = json.load(response)
    except urllib.error.HTTPError as exc:
        exc.close()  # its socket would otherwise stay open until collected
        typer.echo(f"error: {endpoint} answered {exc.code} {exc.reason}", err=True)
        raise typer.Exit(2) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        typer.echo(f"error: cannot read {endpoint}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(loaded, dict):
        typer.echo(f"error: {endpoint} did not answer a JSON object", err=True)
        raise typer.Exit(2)
    return loaded


def _plan_observed(
    before: Report, after: Report, observed: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[Action]]:
    """Per device, HEAD planned from the device's last report (BASE converged without one)."""
    old, new = desired_fleet(before.catalog), desired_fleet(after.catalog)
    devices: dict[str, list[Action]] = {}
    for device in sorted(set(old) | set(new)):
        document = observed.get(device)
        state = (
            observed_releases(document)[0]
            if document is not None
            else converged(old.get(device, {}))
        )
        actions = plan_device(new.get(device, {}), state)
        if actions:
            devices[device] = actions
    return devices


credential_app = typer.Typer(help="Registry credentials, encrypted with sops and age.")
app.add_typer(credential_app, name="credential")


@credential_app.command("create")
def credential_create(
    name: Annotated[str, typer.Argument(help="The credential's name (a DNS label).")],
    username: Annotated[str, typer.Option("--username", help="Registry user name.")],
    registry: Annotated[
        str | None, typer.Option("--registry", help="Registry host[:port] it is for.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="File to write; default: stdout."),
    ] = None,
    age: Annotated[
        list[str] | None,
        typer.Option("--age", help="age recipient (repeatable); default: .sops.yaml rules."),
    ] = None,
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
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if output is not None and output.exists():
        typer.echo(
            f"error: {output} exists; credentials are immutable: create one under a new name",
            err=True,
        )
        raise typer.Exit(2)
    target = output or Path.cwd() / f"{name}.yaml"
    try:
        rule = creation_rule(target, age or [])
    except CreationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
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
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("x", encoding="utf-8") as fh:  # never replace a credential
        fh.write(text)
    typer.echo(f"wrote {output} (recipients from {rule.source})", err=True)


def _read_password() -> Secret:
    if sys.stdin.isatty():
        first = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        password = str(first)
    else:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        typer.echo("error: the password is empty", err=True)
        raise typer.Exit(2)
    return Secret(password)


operate.register(app)


def main() -> None:
    app()
