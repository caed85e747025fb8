"""`hedgerow validate` and `hedgerow crds`: the manifests of a repository, and their schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from reconciler.cli.options import AgeKeyFile, OutputOption
from reconciler.cli.output import Output, console, identities, literal
from reconciler.manifests import crds as crd_files
from reconciler.manifests.validate import Report, validate_tree


def validate(
    path: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="Root of the manifest repository."),
    ] = Path("."),
    output: OutputOption = Output.text,
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
    report = validate_tree(path, identities(age_key_file))
    if output is Output.json:
        typer.echo(json.dumps(_report_json(report), indent=2))
    else:
        out = console()
        for problem in report.problems:
            out.print(literal(problem.render()))
        _print_verdict(out, report)
        if summary and report.valid:
            _print_summary(out, report)
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
            devices.add_row(*map(literal, (device_name, model, *row)))
    console.print(devices)


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
