"""`hedgerow rollout status`: where each rollout stands, read from the controller's store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.options import DataDir, Db, OutputOption, open_store
from reconciler.cli.output import Output, console, fail, literal
from reconciler.core.rollout import Active
from reconciler.core.rollout_status import decoded, rollout_json, summary

app = typer.Typer(help="Rollouts: a new release moved over a deployment's devices in waves.")


@app.command("status")
def status(
    deployment: Annotated[str | None, typer.Argument(help="One deployment's rollout.")] = None,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: OutputOption = Output.text,
) -> None:
    """The current wave and when it started, devices by outcome, and the failed devices
    with their reasons, for every rollout in progress (or one deployment's)."""
    with open_store(db, data_dir) as store:
        found = decoded(store.rollouts())
    if deployment is not None:
        found = [r for r in found if r.deployment == deployment]
        if not found:
            fail(f"no rollout in progress for deployment {deployment!r}", code=1)
    if output is Output.json:
        typer.echo(json.dumps([rollout_json(r) for r in found], indent=2))
        return
    out = console()
    if not found:
        out.print("no rollout in progress")
    for record in found:
        for line in rollout_lines(record, failed_limit=20):
            out.print(literal(line))


def rollout_lines(record: Active, failed_limit: int) -> list[str]:
    lines = [summary(record)]
    started = rollout_json(record)["waveStartedAt"]
    if started:
        lines.append(f"  wave started at {started}")
    for name, tally in record.progress.items():
        shown = ", ".join(f"{n} {kind}" for kind, n in tally.items())
        lines.append(f"  wave {name}: {shown or 'no device'}")
    failed = sorted(record.state.failed)
    for device in failed[:failed_limit]:
        lines.append(f"  failed {device}: {record.reasons.get(device, 'no reason recorded')}")
    if len(failed) > failed_limit:
        lines.append(f"  and {len(failed) - failed_limit} more failed")
    return lines
