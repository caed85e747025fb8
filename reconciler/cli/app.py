"""The `hedgerow` command tree: every command, registered in one place."""

from __future__ import annotations

import typer

from reconciler.cli import (
    controller,
    credential,
    demo,
    device,
    enrollment,
    importer,
    manifests,
    observe,
    operator,
    review,
    rollout,
    secret,
)

app = typer.Typer(
    help="Hedgerow: GitOps for containers on fleets of edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(manifests.validate)
app.command()(manifests.crds)
app.command()(review.plan)
app.add_typer(credential.app, name="credential")
app.add_typer(secret.app, name="secret")
app.add_typer(importer.app, name="import")
app.command()(controller.controller)
app.command()(observe.status)
app.command()(observe.events)
app.add_typer(rollout.app, name="rollout")
app.add_typer(device.app, name="device")
app.add_typer(enrollment.app, name="enrollment")
app.add_typer(operator.app, name="operator")
app.command()(device.agent)
app.command()(controller.openapi)
app.command()(demo.demo)
