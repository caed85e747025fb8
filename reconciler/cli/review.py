"""`hedgerow plan`: what merging a change would do to each device, for its reviewers."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from reconciler import wire
from reconciler.cli.options import AgeKeyFile
from reconciler.cli.output import fail, identities, printable_lines, read_token
from reconciler.controller.source import SourceError, open_repo, resolve, tree_files
from reconciler.core.desired import desired_fleet
from reconciler.core.observed import observed_releases
from reconciler.core.plan import Action, converged, plan_device
from reconciler.core.review import Format, render, review
from reconciler.manifests.credentials import fingerprints
from reconciler.manifests.validate import Report, validate_files


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
        keys = identities(age_key_file) or None
        before = validate_files(tree_files(repository, base_sha, path), keys)
        after = validate_files(tree_files(repository, head_sha, path), keys)
    except SourceError as exc:
        fail(str(exc))
    compared = None
    if keys:
        key = secrets.token_bytes(32)  # fingerprints are compared within this run only
        compared = (fingerprints(before.credentials, key), fingerprints(after.credentials, key))
    result = review(before, after, compared)
    if observed is not None:
        result = replace(result, devices=_plan_observed(before, after, observed))
    typer.echo(printable_lines(render(result, output)), nl=False)  # JSON escapes its own
    raise typer.Exit(0 if result.valid else 1)


def _fetch_observed(url: str, token_file: Path | None) -> dict[str, wire.StatusReport]:
    """Each device's last report, from the controller's operator API (GET /v1/observed)."""
    if token_file is None:
        fail("--controller needs --token-file (the operator token)")
    if not url.startswith(("http://", "https://")):
        fail(f"--controller {url!r} is not an http:// or https:// URL")
    token = read_token(token_file)
    endpoint = f"{url.rstrip('/')}/v1/observed"
    request = urllib.request.Request(
        endpoint, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # its socket would otherwise stay open until collected
        fail(f"{endpoint} answered {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot read {endpoint}: {exc}")
    try:
        return msgspec.json.decode(body, type=dict[str, wire.StatusReport])
    except msgspec.DecodeError as exc:
        fail(f"{endpoint} did not answer reports by device: {exc}")


def _plan_observed(
    before: Report, after: Report, observed: Mapping[str, wire.StatusReport]
) -> dict[str, list[Action]]:
    """Per device, HEAD planned from the device's last report (BASE converged without one)."""
    old, new = desired_fleet(before.catalog), desired_fleet(after.catalog)
    devices: dict[str, list[Action]] = {}
    for device in sorted(set(old) | set(new)):
        report = observed.get(device)
        state = (
            observed_releases(report)[0] if report is not None else converged(old.get(device, {}))
        )
        actions = plan_device(new.get(device, {}), state)
        if actions:
            devices[device] = actions
    return devices
