"""The `hedgerow` command. Commands parse arguments and print; the work is done elsewhere."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from reconciler import crds as crd_files
from reconciler.review import Format, render, review
from reconciler.source import SourceError, open_repo, resolve, tree_files
from reconciler.validate import Report, validate_files, validate_tree

app = typer.Typer(
    help="Hedgerow: GitOps for containers on fleets of edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
) -> None:
    """Check every manifest under PATH; report every error and warning at once.

    Exit 0 when there is no error (warnings allowed), 1 with errors, 2 on usage errors.
    """
    report = validate_tree(path)
    if output is Output.json:
        typer.echo(json.dumps(_report_json(report), indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
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
    for name in crd_files.write(folder):
        typer.echo(f"wrote {folder / name}")


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
) -> None:
    """Show what merging HEAD into BASE would do on each device, from git alone.

    Both revisions are read from their commits, never from the working tree.

    Exit 0 when HEAD would be accepted, 1 when it would be rejected, 2 on usage errors.
    """
    try:
        repository = open_repo(repo)
        base_sha, head_sha = resolve(repository, base), resolve(repository, head)
        before = validate_files(tree_files(repository, base_sha, path))
        after = validate_files(tree_files(repository, head_sha, path))
    except SourceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    result = review(before, after)
    typer.echo(render(result, output), nl=False)
    raise typer.Exit(0 if result.valid else 1)


def main() -> None:
    app()
