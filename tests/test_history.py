"""The followed branch's history: a force-push or a branch moved back is applied with a warning
(or rejected with --no-allow-history-rewrite), a branch deleted upstream is reported once, and
`hedgerow status` shows both. A real mirror of a real repository, on both store backends."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent
from typing import Any

import git
import pytest
import structlog
from typer.testing import CliRunner, Result

from reconciler import logs
from reconciler.cli.app import app
from reconciler.controller.controller import Controller
from reconciler.controller.source import Mirror
from reconciler.demo.daemons import free_port
from reconciler.store import EventRecord, Store
from tests.support.repos import BASE, RELEASE_110, commit

UPGRADE = {
    "release-110.yaml": RELEASE_110,
    "deployment.yaml": dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"'),
}
DEVICE_3 = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Device
    metadata: {name: pi-3, labels: {site: paris}}
    spec: {systemModel: rpi4}
    """


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """The controller's log lines (JSON); configure() is process-wide, so it is put back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    logs.configure("json", stream=out)
    yield out
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def events_logged(log: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in log.getvalue().splitlines()]


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


@pytest.fixture
def mirror(upstream: git.Repo, tmp_path: Path) -> Iterator[Mirror]:
    with Mirror(str(upstream.working_dir), "main", tmp_path / "cache") as opened:
        yield opened


def controller(mirror: Mirror, store: Store, *, allow: bool = True) -> Controller:
    """The controller as `hedgerow controller` composes it: the mirror is source and history."""
    clock = iter(datetime(2026, 1, 1, 0, m, s, tzinfo=UTC) for m in range(60) for s in range(60))
    return Controller(
        mirror,
        store,
        identities=[],
        fingerprint_key=b"k" * 32,
        history=mirror,
        allow_history_rewrite=allow,
        now=lambda: next(clock),
    )


def status(url: str, *args: str) -> Result:
    """`hedgerow status` on the store at `url`, as an operator runs it."""
    result = CliRunner().invoke(app, ["status", "--db", url, *args], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result


def status_json(url: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(status(url, "-o", "json").output)
    return loaded


def kinds(store: Store, *wanted: str) -> list[EventRecord]:
    return [e for e in store.events(limit=1000) if e.kind in wanted]


def applied(ctl: Controller) -> str:
    outcome = ctl.sync()
    assert outcome is not None and outcome.applied, outcome
    return outcome.sha


def test_a_force_push_is_applied_with_a_warning_while_it_is_the_applied_revision(
    upstream: git.Repo, mirror: Mirror, store: Store, database_url: str, log: io.StringIO
) -> None:
    ctl = controller(mirror, store)
    first = applied(ctl)
    dropped = commit(upstream, "upgrade", UPGRADE)
    assert applied(ctl) == dropped and kinds(store, "history-rewritten") == []
    upstream.git.reset("-q", "--hard", first)
    forced = commit(upstream, "scale out instead", {"devices-3.yaml": DEVICE_3})
    assert applied(ctl) == forced
    (event,) = kinds(store, "history-rewritten")
    assert event.revision == forced and event.device is None
    assert event.message == (
        f"history rewritten: {forced[:12]} does not descend from the applied revision "
        f"{dropped[:12]} (a force-push); devices are rolled back to what {forced[:12]} holds"
    )
    assert events_logged(log) == ["history rewritten"]
    shown = status_json(database_url)
    assert shown["revision"] == forced and shown["historyRewritten"] == {
        "revision": forced,
        "at": event.at.isoformat(),
        "message": event.message,
    }
    assert f"warning history-rewritten at {event.at:%Y-%m-%d %H:%M:%S}: {event.message}" in (
        status(database_url).output
    )
    after = commit(upstream, "on top", {"devices-3.yaml": DEVICE_3.replace("paris", "lille")})
    assert applied(ctl) == after
    assert len(kinds(store, "history-rewritten")) == 1  # a descendant is ordinary again
    assert status_json(database_url)["historyRewritten"] is None
    assert "history-rewritten" not in status(database_url).output


def test_a_branch_moved_back_is_a_rewrite_too(
    upstream: git.Repo, mirror: Mirror, store: Store, database_url: str
) -> None:
    ctl = controller(mirror, store)
    first = applied(ctl)
    upgraded = commit(upstream, "upgrade", UPGRADE)
    applied(ctl)
    upstream.git.reset("-q", "--hard", first)
    assert applied(ctl) == first and store.applied_revision() == first
    (event,) = kinds(store, "history-rewritten")
    assert event.revision == first
    assert f"moved back from {upgraded[:12]} to its ancestor {first[:12]}" in event.message
    assert status_json(database_url)["historyRewritten"]["message"] == event.message


def test_an_ordinary_history_has_no_warning(
    upstream: git.Repo, mirror: Mirror, store: Store, database_url: str
) -> None:
    ctl = controller(mirror, store)
    first = applied(ctl)
    commit(upstream, "upgrade", UPGRADE)
    applied(ctl)
    upstream.git.checkout("-q", "-b", "side", first)
    commit(upstream, "scale out", {"devices-3.yaml": DEVICE_3})
    upstream.git.checkout("-q", "main")
    upstream.git.merge("-q", "--no-ff", "side", "-m", "merge side")  # two parents, one applied
    applied(ctl)
    assert kinds(store, "history-rewritten") == []
    shown = status_json(database_url)
    assert shown["historyRewritten"] is None and shown["branchDeleted"] is None


def test_with_rewrites_refused_a_force_push_is_rejected_and_the_last_good_stays(
    upstream: git.Repo, mirror: Mirror, store: Store, database_url: str
) -> None:
    ctl = controller(mirror, store, allow=False)
    first = applied(ctl)
    good = commit(upstream, "upgrade", UPGRADE)
    applied(ctl)
    upstream.git.reset("-q", "--hard", first)
    forced = commit(upstream, "scale out instead", {"devices-3.yaml": DEVICE_3})
    outcome = ctl.sync()
    assert outcome is not None and not outcome.applied
    (error,) = outcome.errors
    assert error.message.startswith(
        f"history rewritten: {forced[:12]} does not descend from the applied revision {good[:12]}"
    )
    assert "refused by --no-allow-history-rewrite" in error.message
    assert store.applied_revision() == good and ctl.applied is not None and ctl.applied.sha == good
    (rejected,) = store.rejected()
    assert rejected.sha == forced and rejected.errors[0]["message"] == error.message
    assert kinds(store, "history-rewritten") == []
    assert ctl.sync() is None  # considered once, like any invalid commit
    text = status(database_url).output
    assert f"rejected {forced[:12]}" in text and f"\n  {error.message}\n" in text
    on_top = commit(upstream, "still not a descendant", {"devices-3.yaml": DEVICE_3 + " "})
    refused = ctl.sync()
    assert refused is not None and refused.sha == on_top and not refused.applied
    upstream.git.reset("-q", "--hard", good)  # the operator restores the branch
    assert applied(ctl) == good


def test_a_deleted_branch_is_reported_once_and_its_revision_stays(
    upstream: git.Repo, mirror: Mirror, store: Store, database_url: str, log: io.StringIO
) -> None:
    ctl = controller(mirror, store)
    first = applied(ctl)
    upstream.git.checkout("-q", "-b", "elsewhere")
    upstream.git.branch("-D", "main")
    assert ctl.sync() is None and ctl.sync() is None  # two intervals
    (event,) = kinds(store, "branch-deleted")
    assert event.revision == first
    assert "branch 'main' was deleted upstream" in event.message and first[:12] in event.message
    assert events_logged(log) == ["followed branch deleted upstream"]  # not at every interval
    shown = status_json(database_url)
    assert shown["revision"] == first and shown["branchDeleted"]["message"] == event.message
    assert "warning branch-deleted at" in status(database_url).output

    restarted = controller(mirror, store)  # the store remembers it was reported
    restarted.resume()
    assert restarted.sync() is None and len(kinds(store, "branch-deleted")) == 1
    assert restarted.applied is not None and restarted.applied.sha == first

    upstream.git.branch("main")
    assert restarted.sync() is None  # back at the commit it had: nothing new to apply
    assert events_logged(log)[-1] == "followed branch restored"
    (back,) = kinds(store, "branch-restored")
    assert back.revision == first
    assert status_json(database_url)["branchDeleted"] is None
    upstream.git.checkout("-q", "main")
    upgraded = commit(upstream, "upgrade", UPGRADE)
    assert applied(restarted) == upgraded


@pytest.mark.e2e  # a controller process
def test_hedgerow_controller_refuses_a_rewrite_when_told_to(
    upstream: git.Repo, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    args = [sys.executable, "-m", "reconciler", "controller", "--repo", upstream.working_dir,
            "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}", "--watch",
            "--interval", "3600", "--no-allow-history-rewrite"]  # fmt: skip
    with (tmp_path / "controller.log").open("wb") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def shown() -> dict[str, Any]:
        result = CliRunner().invoke(app, ["status", "--data-dir", str(data), "-o", "json"])
        loaded: dict[str, Any] = json.loads(result.output) if result.exit_code == 0 else {}
        return loaded

    def wait(check: Callable[[dict[str, Any]], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if check(shown()):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} ({tmp_path / 'controller.log'})")

    try:
        first = upstream.head.commit.hexsha
        wait(lambda s: s.get("revision") == first, "the first revision")
        good = commit(upstream, "upgrade", UPGRADE)
        wait(lambda s: s.get("revision") == good, "the upgrade")
        upstream.git.reset("-q", "--hard", first)
        forced = commit(upstream, "scale out instead", {"devices-3.yaml": DEVICE_3})
        wait(lambda s: bool(s.get("rejected")), "the rejection")
        state = shown()
        assert state["revision"] == good and state["rejected"][0]["revision"] == forced
        assert (
            "refused by --no-allow-history-rewrite" in state["rejected"][0]["errors"][0]["message"]
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
