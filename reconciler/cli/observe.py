"""`hedgerow status` and `hedgerow events`: what the controller did, read from its store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reconciler import wire
from reconciler.cli.device import when
from reconciler.cli.options import DataDir, Db, OutputOption, open_store
from reconciler.cli.output import Output, console, fail, literal
from reconciler.core import history
from reconciler.core.inventory import human_bytes as size
from reconciler.core.rollout_status import decoded, rollout_json, summary
from reconciler.store import EventRecord, StatusRecord, Store


def status(
    device: Annotated[
        str | None,
        typer.Option("--device", help="One device: its facts, last report and poll, statuses."),
    ] = None,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: OutputOption = Output.text,
) -> None:
    """The applied revision, rejected commits, Pending devices, and every deployment's status
    and conditions; or, with --device, one device."""
    with open_store(db, data_dir) as store:
        if device is not None:
            device_status(store, device, output)
        elif output is Output.json:
            typer.echo(json.dumps(status_json(store), indent=2))
        else:
            print_status(store)


def device_status(store: Store, name: str, output: Output) -> None:
    found = next(iter(store.inventory([name])), None)
    if found is None:
        fail(f"device {name} is neither in the applied revision nor enrolled", code=1)
    statuses = store.statuses(device=name)  # by deployment
    if output is Output.json:
        document = found.to_json()
        document["deployments"] = [s.status.to_json() for s in statuses]
        typer.echo(json.dumps(document, indent=2))
        return
    out = console()
    condition = "Pending (enrolled, no Device manifest yet)" if found.pending else "Admitted"
    facts = found.facts or wire.Facts()
    lines = [
        ("device", found.device),
        ("condition", condition),
        ("enrollment", found.enrollment or "-"),
        ("system model", found.system_model or "-"),
        ("labels", ",".join(f"{k}={v}" for k, v in sorted(found.labels.items())) or "-"),
        ("last report", when(found.reported_at)),
        ("last poll", when(found.polled_at)),
        ("architecture", facts.architecture or "-"),
        ("os", facts.os or "-"),
        ("kernel", facts.kernel or "-"),
        ("engine", " ".join(filter(None, (facts.engine, facts.engine_version))) or "-"),
        ("memory", size(facts.memory_bytes)),
        ("disk", size(facts.disk_bytes)),
        ("free disk", size(facts.disk_free_bytes)),
    ]
    for label, value in lines:
        out.print(f"{label + ':':14}{literal(value)}")
    if found.pending:
        out.print(f"admit it: hedgerow device manifest {literal(found.device)}, then commit it")
    if statuses:
        out.print(_status_table(statuses))


def status_json(store: Store) -> dict[str, Any]:
    applied = store.applied_revision()
    rewritten, deleted = _branch_warnings(store, applied)
    return {
        "revision": applied,
        "historyRewritten": _warning_json(rewritten),
        "branchDeleted": _warning_json(deleted),
        "rejected": [
            {"revision": r.sha, "at": r.at.isoformat(), "errors": r.errors}
            for r in store.rejected(limit=10)
        ],
        "deployments": [s.status.to_json() for s in _statuses(store)],
        "pending": [row.to_json() for row in store.inventory() if row.pending],
        "rollouts": [rollout_json(r) for r in decoded(store.rollouts())],
    }


def _branch_warnings(
    store: Store, applied: str | None
) -> tuple[EventRecord | None, EventRecord | None]:
    """The rewrite of history that brought the applied revision, if one did, and the deletion
    of the followed branch, while it lasts."""
    rewritten = store.last_event([history.HISTORY_REWRITTEN])
    if rewritten is not None and (applied is None or rewritten.revision != applied):
        rewritten = None
    deleted = store.last_event(history.BRANCH_EVENTS)
    if deleted is not None and deleted.kind != history.BRANCH_DELETED:
        deleted = None
    return rewritten, deleted


def _warning_json(event: EventRecord | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"revision": event.revision, "at": event.at.isoformat(), "message": event.message}


def print_status(store: Store) -> None:
    """The `hedgerow status` table (the demo prints it too)."""
    out = console()
    applied = store.applied_revision()
    out.print(f"revision: {applied or '(none applied yet)'}")
    for warning in _branch_warnings(store, applied):
        if warning is not None:
            out.print(
                f"[yellow]warning[/] {literal(warning.kind)} at {warning.at:%Y-%m-%d %H:%M:%S}: "
                f"{literal(warning.message)}"
            )
    for record in store.rejected(limit=10):
        out.print(
            f"[red]rejected[/] {literal(record.sha[:12])} at {record.at:%Y-%m-%d %H:%M:%S}: "
            f"{len(record.errors)} error(s)"
        )
        for error in record.errors[:5]:
            out.print(f"  {literal(_where(error))}{literal(str(error['message']))}")
    for active in decoded(store.rollouts()):
        out.print(literal(summary(active)))
    waiting = [row for row in store.inventory() if row.pending]
    if waiting:
        out.print(f"[yellow]pending[/] {len(waiting)} device(s) enrolled, not admitted yet:")
        for row in waiting:
            out.print(f"  {literal(row.device)} ({literal(row.system_model or '?')})")
        out.print("  admit one: hedgerow device manifest NAME, then commit it")
    out.print(_status_table(_statuses(store)))


def _status_table(statuses: list[StatusRecord]) -> Table:
    table = Table(title="Deployments")
    for column in ("deployment", "device", "application", "desired", "observed", "state",
                   "conditions"):  # fmt: skip
        table.add_column(column)
    for entry in statuses:
        s = entry.status
        conditions = " ".join(f"{c.type}={c.status}({c.reason})" for c in s.conditions)
        cells = (
            entry.deployment,
            entry.device,
            s.application,
            s.desired_release or "-",
            s.observed_release or "-",
            f"{s.desired_state}/{s.observed_state or '?'}",
            conditions,
        )
        table.add_row(*map(literal, cells))
    return table


def _where(error: dict[str, Any]) -> str:
    """`file:line: ` of a stored finding; nothing for one about the commit as a whole."""
    return f"{error['file']}:{error['line']}: " if error.get("file") else ""


def _statuses(store: Store) -> list[StatusRecord]:
    return sorted(store.statuses(), key=lambda s: (s.deployment, s.device))


def events(
    device: Annotated[str | None, typer.Option("--device")] = None,
    deployment: Annotated[str | None, typer.Option("--deployment")] = None,
    after: Annotated[int | None, typer.Option("--after", help="Events after this id.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
    output: OutputOption = Output.text,
) -> None:
    """The event history, oldest first; page with --after the last id shown."""
    with open_store(db, data_dir) as store:
        found = store.events(device=device, deployment=deployment, after_id=after, limit=limit)
    if output is Output.json:
        typer.echo(json.dumps([e.to_json() for e in found], indent=2))
        return
    table = Table(title="Events")
    for column in ("id", "at", "device", "deployment", "event", "message"):
        table.add_column(column, overflow="fold")
    for event in found:
        cells = (
            str(event.id),
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            event.device or "-",
            event.deployment or "-",
            event.kind,
            event.message,
        )
        table.add_row(*map(literal, cells))
    console().print(table)
