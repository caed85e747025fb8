"""`hedgerow device token` (a device's credential for the device API) and `hedgerow agent`
(the device side, for a machine with the whole of Hedgerow installed; a device with the agent
alone runs `hedgerow-agent`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from reconciler import logs
from reconciler.cli.options import DataDir, Db, LogFormatOption, open_store
from reconciler.cli.output import fail
from reconciler.manifests.model.fields import check_dns_label
from reconciler.secrets import tokens

app = typer.Typer(help="Device credentials for the device API.")


@app.command("token")
def device_token(
    name: Annotated[str, typer.Argument(help="The Device's metadata.name.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the device's token.")] = False,
    db: Db = None,
    data_dir: DataDir = Path(".hedgerow"),
) -> None:
    """Issue a device's token (replacing any previous one) and print it once, or revoke it.

    Only its hash is stored: a lost token cannot be shown again, issue a new one.
    """
    try:
        check_dns_label(name)
    except ValueError as exc:
        fail(str(exc))
    with open_store(db, data_dir) as store:
        if revoke:
            if not store.revoke_token(name):
                fail(f"device {name} has no token", code=1)
            typer.echo(f"revoked the token of device {name}", err=True)
            return
        token = tokens.issue()
        store.put_token(name, tokens.hash_token(token), datetime.now(UTC))
    typer.echo(token)  # stdout holds the token alone, for `> token-file`
    typer.echo(f"issued a token for device {name}; it is not shown again", err=True)


def agent(
    controller: Annotated[str, typer.Option("--controller", help="Controller URL.")],
    device: Annotated[str, typer.Option("--device", help="This device's name.")],
    token_file: Annotated[Path, typer.Option("--token-file", exists=True, dir_okay=False)],
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("/var/lib/hedgerow"),
    poll_interval: Annotated[str, typer.Option("--poll-interval", help="30s, 2m, ...")] = "30s",
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", dir_okay=False, help="CA to trust; REQUESTS_CA_BUNDLE is not."),
    ] = None,
    proxy: Annotated[
        str | None,
        typer.Option("--proxy", help="http(s):// proxy to the controller; HTTPS_PROXY is not."),
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run the device agent against the local Docker engine (DOCKER_HOST)."""
    from agent.main import duration, proxy_url, run  # the agent and its SDK, only when asked for

    try:
        interval = duration(poll_interval)
        if proxy is not None:
            proxy_url(proxy)
    except ValueError as exc:
        fail(str(exc))
    logs.configure(log_format.value if log_format else None)
    run(controller, device, token_file, data_dir, interval, ca_file, proxy)
