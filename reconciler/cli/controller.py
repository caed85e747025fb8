"""`hedgerow controller` (the composition of git, store, controller and HTTP) and
`hedgerow openapi` (its API, as a document)."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler import logs
from reconciler.cli.options import DataDir, Db, LogFormatOption, store_url, wait_for_store
from reconciler.cli.output import fail, identities, read_token
from reconciler.manifests.incremental import Keyed
from reconciler.manifests.problems import Problem


class Http(StrEnum):
    """uvicorn's HTTP/1.1 parser: httptools where installed (auto), or h11 (to compare)."""

    auto = "auto"
    httptools = "httptools"
    h11 = "h11"


class Forge(StrEnum):
    """How a repository's web page links to a file and line."""

    github = "github"
    gitlab = "gitlab"
    gitea = "gitea"


class Loop(StrEnum):
    """The event loop: asyncio's, or uvloop (see `connections.event_loop` for why not at once)."""

    asyncio = "asyncio"
    uvloop = "uvloop"


def controller(
    repo: Annotated[str, typer.Option("--repo", help="Path, file://, https:// or ssh:// URL.")],
    branch: Annotated[str, typer.Option("--branch", help="Branch to follow.")] = "main",
    path: Annotated[str, typer.Option("--path", help="Folder of the manifests.")] = "",
    db: Db = None,
    listen: Annotated[str, typer.Option("--listen", help="HTTP address.")] = "127.0.0.1:8080",
    data_dir: DataDir = Path(".hedgerow"),
    interval: Annotated[float, typer.Option("--interval", help="Seconds between fetches.")] = 30,
    watch: Annotated[
        bool, typer.Option("--watch", help="See commits to a local repository at once.")
    ] = False,
    webhook_secret_file: Annotated[
        Path | None, typer.Option("--webhook-secret-file", help="Enables POST /v1/hooks/git.")
    ] = None,
    age_key_file: Annotated[
        Path | None, typer.Option("--age-key-file", help="age identities for credentials.")
    ] = None,
    operator_token_file: Annotated[
        Path | None,
        typer.Option("--operator-token-file", help="Enables the operator API (/v1/status...)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain): serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    allow_history_rewrite: Annotated[
        bool,
        typer.Option(
            "--allow-history-rewrite/--no-allow-history-rewrite",
            help="Apply a branch force-pushed or moved back, with a warning; or reject it.",
        ),
    ] = True,
    max_report_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-report-bytes",
            min=1,
            show_default="1 MiB",
            help="Largest device status report, in bytes; a larger one is 413.",
        ),
    ] = None,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            min=0.1,
            help="Seconds a connection has to send a request's headers, from its opening or "
            "its previous response; then it is closed.",
        ),
    ] = 10.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            min=1,
            show_default="the open-file limit less 128",
            help="Connections held at once; one more is answered 503.",
        ),
    ] = None,
    http: Annotated[
        Http,
        typer.Option("--http", envvar="HEDGEROW_HTTP", help="HTTP/1.1 parser: httptools or h11."),
    ] = Http.auto,
    loop: Annotated[
        Loop,
        typer.Option(
            "--loop",
            envvar="HEDGEROW_LOOP",
            help="Event loop: asyncio, or uvloop (resets connections when out of descriptors).",
        ),
    ] = Loop.asyncio,
    offline_after: Annotated[
        float,
        typer.Option(
            "--offline-after",
            min=1,
            help="Seconds without a report after which a rollout counts a device Offline "
            "(three of the agent's 30 s poll intervals).",
        ),
    ] = 90.0,
    fingerprint_key_file: Annotated[
        Path | None,
        typer.Option(
            "--fingerprint-key-file",
            envvar="HEDGEROW_FINGERPRINT_KEY_FILE",
            dir_okay=False,
            help="The key (32 random bytes or more) credentials and Secrets are fingerprinted "
            "with; replicas must share one. Default: made once in --data-dir.",
        ),
    ] = None,
    dashboard_prefix: Annotated[
        str,
        typer.Option(
            "--dashboard-prefix", help="Where the dashboard is served: / or a path such as /ui."
        ),
    ] = "/",
    no_dashboard: Annotated[
        bool, typer.Option("--no-dashboard", help="Serve no dashboard (the API only).")
    ] = False,
    repo_web_url: Annotated[
        str | None,
        typer.Option(
            "--repo-web-url",
            help="The repository's web page (https://github.com/org/fleet): the dashboard links "
            "each thing to the file and line that declares it.",
        ),
    ] = None,
    repo_web_kind: Annotated[
        Forge | None,
        typer.Option("--repo-web-kind", help="Its URL pattern; default: told from the host name."),
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Follow a branch, apply each valid commit whole, and reconcile every device."""
    # Imported here, not at the top: `hedgerow validate` and friends never load the server.
    import uvicorn

    from reconciler.controller.controller import Controller
    from reconciler.controller.keys import fingerprint_key, shared_key
    from reconciler.controller.runner import Runner
    from reconciler.controller.source import Mirror, SourceError, watch_refs
    from reconciler.server import connections
    from reconciler.server.app import Dashboard, create_app
    from reconciler.server.dashboard.data import Links
    from reconciler.server.dashboard.model import forge_of
    from reconciler.server.dashboard.sessions import session_key
    from reconciler.server.limits import BodyCaps

    host, _, port = listen.rpartition(":")
    prefix = dashboard_prefix.rstrip("/")
    if prefix and (not prefix.startswith("/") or prefix.startswith("/v1") or "//" in prefix):
        fail("--dashboard-prefix: / or a path such as /ui (not under /v1)")
    if repo_web_url is not None and not repo_web_url.startswith(("https://", "http://")):
        fail("--repo-web-url: an http(s):// URL")
    try:
        parser = connections.http_implementation(http.value)
        loop_name, loop_factory = connections.event_loop(loop.value)
    except ValueError as exc:
        fail(f"{exc}: pip install 'hedgerow[controller]' on CPython, or leave the choice to auto")
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    operator_token = read_token(operator_token_file) if operator_token_file else None
    keys = identities(age_key_file)
    try:
        mirror = Mirror(repo, branch, data_dir / "git")
    except SourceError as exc:
        fail(str(exc))
    secret = read_secret(webhook_secret_file) if webhook_secret_file else None
    try:
        key = (
            shared_key(fingerprint_key_file) if fingerprint_key_file else fingerprint_key(data_dir)
        )
    except (OSError, ValueError) as exc:
        fail(f"--fingerprint-key-file: {exc}")
    logs.configure(log_format.value if log_format else None)
    open_files = raise_open_file_limit()
    log = logs.get_logger("hedgerow.controller")
    try:
        store = wait_for_store(store_url(db, data_dir), log)
    except KeyboardInterrupt:
        raise typer.Exit(1) from None

    class Source:
        def fetch(self) -> str:
            return mirror.fetch()

        def files(self, sha: str) -> Iterator[tuple[str, bytes | Problem]]:
            return mirror.files(sha, path)

        def blobs(self, sha: str) -> Iterator[Keyed]:
            return mirror.blobs(sha, path)

        def message(self, sha: str) -> str:
            return mirror.message(sha)

    cluster = None
    if store.dialect == "postgresql":  # every controller on one database is a replica
        from reconciler.store.cluster import Cluster

        cluster = Cluster(store.url)
        store.replica = cluster.name
    runner = Runner(
        Controller(
            Source(),
            store,
            identities=keys,
            fingerprint_key=key,
            history=mirror,
            allow_history_rewrite=allow_history_rewrite,
            offline_after=offline_after,
        ),
        interval=interval,
        cluster=cluster,
    )
    app = create_app(
        runner,
        webhook_secret=secret,
        operator_token=operator_token,
        body_caps=BodyCaps(report=max_report_bytes) if max_report_bytes else BodyCaps(),
        dashboard=Dashboard(
            enabled=not no_dashboard,
            prefix=prefix,
            links=Links(
                repo_web_url,
                (repo_web_kind.value if repo_web_kind else None) or forge_of(repo_web_url or ""),
            ),
            session_key=session_key(key),
            offline_after=offline_after,
        ),
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host or "127.0.0.1", port=int(port), log_level="warning",
                       log_config=None,  # our handler (reconciler.logs) renders its lines
                       ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                       # long polls would otherwise hold a stop for up to a minute
                       timeout_graceful_shutdown=3, backlog=connections.BACKLOG,
                       http=connections.protocol(
                           http=parser, header_timeout=header_timeout,
                           max_connections=max_connections
                           or connections.default_max_connections(open_files)))
    )  # fmt: skip

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(connections.ExhaustionLog())
        stop = asyncio.Event()
        extra = [server.serve()]
        if watch:
            extra.append(watch_refs(Path(repo), runner.wake, stop=stop))
        try:
            await runner.run(*extra)
        finally:
            stop.set()

    scheme = "https" if tls_cert else "http"
    dashboard = "" if no_dashboard else f"; dashboard {scheme}://{listen}{prefix}/"
    typer.echo(
        f"hedgerow controller: following {mirror.display_url} {branch}; {scheme}://{listen}"
        f"{dashboard}"
    )
    log.info("serving", http=parser, loop=loop_name)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner_loop:
            runner_loop.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


def read_secret(path: Path) -> bytes:
    """The webhook secret: the file's bytes without surrounding whitespace, not empty (an
    empty key signs anything anyone sends)."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if not secret:
        fail(f"{path} is empty")
    return secret


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one, and return the soft limit now. Every
    connection is a descriptor, and a service's soft limit is often 1,024 under a far higher
    hard one (systemd's defaults): the controller of a fleet needs the higher."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # a platform with a lower ceiling: keep the soft
            logs.get_logger("hedgerow.controller").warning(
                "cannot raise the open-file limit", soft=soft, hard=hard, error=str(exc)
            )
        else:
            soft = hard
    return soft


def openapi(
    output: Annotated[Path, typer.Option("--output", help="Where the document lives.")] = Path(
        "docs/openapi.json"
    ),
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 when the file is stale or invalid; write nothing."),
    ] = False,
) -> None:
    """Write the controller's OpenAPI document, generated from the app and validated."""
    from reconciler.server.app import render_openapi
    from reconciler.server.openapi import invalid

    text = render_openapi()
    reason = invalid(json.loads(text))
    if reason is not None:
        typer.echo(f"the generated OpenAPI document is invalid: {reason}", err=True)
        raise typer.Exit(1)
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            typer.echo(f"{output} is stale: run `hedgerow openapi`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")
