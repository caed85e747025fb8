"""The controller as operators run it: a real process following a real repository."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import git
import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.controller import runner as runner_module
from reconciler.controller.controller import Controller
from reconciler.controller.runner import Runner
from reconciler.demo.daemons import free_port
from reconciler.server.app import create_app
from reconciler.server.webhook import sign
from reconciler.store import Store
from tests.support.repos import commit

SECRET = b"webhook-secret-for-tests"


class _Nothing:
    def fetch(self) -> str:
        raise AssertionError("not fetched in this test")

    def files(self, sha: str) -> Any:
        return []


def test_webhook_checks_the_signature_before_fetching(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        runner = Runner(Controller(_Nothing(), store, identities=[], fingerprint_key=b"k"))
        client = TestClient(create_app(runner, webhook_secret=SECRET, operator_token=None))
        body = b'{"ref": "refs/heads/main"}'
        bad = client.post("/v1/hooks/git", content=body, headers={"X-Hub-Signature-256": "x"})
        assert bad.status_code == 401 and not runner._wake.is_set()
        tampered = client.post(
            "/v1/hooks/git",
            content=body + b" ",
            headers={"X-Hub-Signature-256": sign(SECRET, body)},
        )
        assert tampered.status_code == 401 and not runner._wake.is_set()
        missing = client.post("/v1/hooks/git", content=body)
        assert missing.status_code == 401
        good = client.post(
            "/v1/hooks/git", content=body, headers={"X-Hub-Signature-256": sign(SECRET, body)}
        )
        assert good.status_code == 202 and runner._wake.is_set()
        closed = create_app(runner, webhook_secret=None, operator_token=None)
        off = TestClient(closed).post("/v1/hooks/git", content=body)
        assert off.status_code == 404
        assert client.get("/healthz").json() == {"status": "ok", "revision": None, "role": "leader"}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start `hedgerow controller` as operators do; stopped by pid when the test ends."""
    processes: list[subprocess.Popen[bytes]] = []

    def run(repo: git.Repo, *flags: str) -> tuple[str, Path]:
        port = free_port()
        data = tmp_path / f"data-{port}"
        (tmp_path / "secret").write_bytes(SECRET + b"\n")
        log = (tmp_path / f"controller-{port}.log").open("wb")
        args = [sys.executable, "-m", "reconciler", "controller", "--repo", repo.working_dir,
                "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                "--webhook-secret-file", str(tmp_path / "secret"), *flags]  # fmt: skip
        processes.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _health(url) is not None, 20, f"controller up ({log.name})")
        return url, data

    yield run
    for process in processes:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _health(url: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = httpx.get(f"{url}/healthz", timeout=1).json()
        return data
    except httpx.HTTPError:
        return None


def _wait(check: Callable[[], bool], seconds: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _revision(url: str) -> str | None:
    health = _health(url)
    return health["revision"] if health else None


@pytest.mark.e2e  # a controller process
def test_a_pushed_commit_is_applied_within_a_second_through_the_webhook(
    upstream: git.Repo, start: Callable[..., tuple[str, Path]]
) -> None:
    url, data = start(upstream, "--interval", "3600")
    _wait(lambda: _revision(url) == upstream.head.commit.hexsha, 20, "first revision")
    sha = commit(upstream, "scale out", {"devices-3.yaml": DEVICE_3})
    body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    sent = time.monotonic()
    response = httpx.post(
        f"{url}/v1/hooks/git", content=body, headers={"X-Hub-Signature-256": sign(SECRET, body)}
    )
    assert response.status_code == 202
    _wait(lambda: _revision(url) == sha, 1.0, "revision applied within 1 s of the webhook")
    assert time.monotonic() - sent < 1.0
    forged = httpx.post(f"{url}/v1/hooks/git", content=body, headers={"X-Hub-Signature-256": "0"})
    assert forged.status_code == 401
    _wait(lambda: _statuses(data) == 1, 5, "the deployment's status")


@pytest.mark.e2e  # a controller process
def test_watch_sees_a_local_commit_within_a_second_and_rejections_show_in_status(
    upstream: git.Repo, start: Callable[..., tuple[str, Path]]
) -> None:
    url, data = start(upstream, "--interval", "3600", "--watch")
    good = upstream.head.commit.hexsha
    _wait(lambda: _revision(url) == good, 20, "first revision")
    sha = commit(upstream, "scale out", {"devices-3.yaml": DEVICE_3})
    _wait(lambda: _revision(url) == sha, 1.0, "revision applied within 1 s of the commit")
    bad = commit(upstream, "broken", {"broken.yaml": "kind: [\n"})
    _wait(lambda: _status(data)["rejected"] != [], 5, "the rejection recorded")
    status = _status(data)
    assert status["revision"] == sha
    (rejected,) = status["rejected"]
    assert rejected["revision"] == bad and rejected["errors"][0]["file"] == "broken.yaml"
    events = CliRunner().invoke(app, ["events", "--data-dir", str(data), "-o", "json"])
    kinds = [e["event"] for e in json.loads(events.output)]
    assert kinds.count("applied") == 2 and kinds.count("rejected") == 1
    table = CliRunner().invoke(app, ["status", "--data-dir", str(data)])
    assert f"rejected {bad[:12]}" in table.output and "broken.yaml:2" in table.output


def _status(data: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["status", "--data-dir", str(data), "-o", "json"])
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.output)
    return loaded


def _statuses(data: Path) -> int:
    return len(_status(data)["deployments"])


DEVICE_3 = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Device
    metadata: {name: pi-3, labels: {site: paris}}
    spec: {systemModel: rpi4}
    """


def test_status_and_events_on_an_empty_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "(none applied yet)" in result.output
    events = CliRunner().invoke(app, ["events", "--data-dir", str(tmp_path), "-o", "json"])
    assert json.loads(events.output) == []


def test_planning_waits_while_the_loop_is_busy_serving_and_not_for_ever() -> None:
    """A commit's plans wait for its fan-out: each round of the event loop that takes longer
    than BUSY_LAG holds planning back, up to MAX_DEFER."""

    async def scenario() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runner_module._serving_first()  # an idle loop: at once
        idle = loop.time() - started

        def busy(rounds: int) -> None:  # serving: each round of the loop takes 30 ms
            time.sleep(0.03)
            if rounds:
                loop.call_soon(busy, rounds - 1)

        loop.call_soon(busy, 10)
        started = loop.time()
        await runner_module._serving_first()
        waited = loop.time() - started
        loop.call_soon(busy, 10_000)
        started = loop.time()
        await runner_module._serving_first()
        return idle, waited, loop.time() - started

    with mock.patch.object(runner_module, "MAX_DEFER", 1.0):
        idle, waited, bounded = asyncio.run(scenario())
    assert idle < runner_module.BUSY_LAG
    assert 0.3 <= waited < 0.6  # the ten busy rounds, then no longer
    assert 1.0 <= bounded < 1.2  # held back no longer than MAX_DEFER
