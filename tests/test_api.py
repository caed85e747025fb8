"""The device and operator APIs over a real controller: a git repository, SQLite, age keys.

In-process tests use FastAPI's TestClient, or httpx's ASGITransport on the loop that runs the
controller's Runner (long polls, re-planning through the queue). The last tests start
`hedgerow controller` itself with TLS on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent
from typing import Any

import git
import httpx
import msgspec
import pyrage
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reconciler.cli.app import app as cli
from reconciler.controller.controller import Controller
from reconciler.controller.runner import Runner
from reconciler.controller.source import open_repo, resolve, tree_files
from reconciler.core.document import canonical_json
from reconciler.core.status import ConditionType, DeploymentStatus
from reconciler.demo.daemons import free_port
from reconciler.manifests.credentials import DEFAULT_RULES, CreationRule, render_credential
from reconciler.manifests.problems import Problem
from reconciler.secrets import tokens
from reconciler.secrets.secret import Secret
from reconciler.server.app import create_app, render_openapi
from reconciler.store import Store, sqlite_url
from reconciler.wire import DesiredDocument, RegistryAuth
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.repos import BASE, RELEASE_110, ROOT, write_tree
from tests.support.tls import self_signed

PASSWORD = PLAINTEXT_SECRETS[0]
OPERATOR = "hdr_operator-token-for-tests"
SERVER = "registry.example:5000/web/server:1.0.0"
CREDENTIAL = "registry-creds"

RELEASE = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Release
    metadata: {name: web-1-0-0}
    spec:
      application: web
      version: "1.0.0"
      supportedSystemModels: [rpi4]
      containers:
        - name: server
          image: registry.example:5000/web/server:1.0.0
          imageCredential: registry-creds
          memory: 64Mi
          env: {PORT: "8080"}
          networks: [front]
          volumes:
            - {volume: data, target: /data}
        - name: proxy
          image: nginx:1.27
          dependsOn: [server]
          portBindings: ["80:80"]
    """
RESOURCES = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Network
    metadata: {name: front}
    spec: {internal: true}
    ---
    apiVersion: hedgerow.dev/v1alpha1
    kind: Volume
    metadata: {name: data}
    spec: {deletionPolicy: Delete, options: {type: tmpfs}}
    ---
    apiVersion: hedgerow.dev/v1alpha1
    kind: Volume
    metadata: {name: unused}
    """

# -- a controller over a real repository -------------------------------------------------------


class BranchSource:
    def __init__(self, path: Path) -> None:
        self.repo = open_repo(str(path))

    def fetch(self) -> str:
        return resolve(self.repo, "main")

    def files(self, sha: str) -> list[tuple[str, bytes | Problem]]:
        return list(tree_files(self.repo, sha))


def commit(repo: git.Repo, message: str, files: dict[str, str] | None = None) -> str:
    write_tree(Path(repo.working_dir), files or {})
    repo.git.add(A=True)
    repo.git.commit(m=message, allow_empty=True)
    return repo.head.commit.hexsha


def make_upstream(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[git.Repo, Any]:
    """BASE with a credentialed release; returns the repository and the controller's age key."""
    for name, value in (("NAME", "T"), ("EMAIL", "t@example.com")):
        monkeypatch.setenv(f"GIT_AUTHOR_{name}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{name}", value)
    identity = pyrage.x25519.Identity.generate()
    rule = CreationRule((str(identity.to_public()),), DEFAULT_RULES, "test")
    path = f"credentials/{CREDENTIAL}.yaml"
    credential = render_credential(
        CREDENTIAL,
        Secret("robot"),
        Secret(PASSWORD),
        "registry.example:5000",
        rule,
        now=datetime.now(UTC),
        file=path,
    )
    files = {**BASE, "release.yaml": RELEASE, "resources.yaml": RESOURCES, path: credential}
    repo = git.Repo.init(write_tree(root, files), initial_branch="main")
    commit(repo, "initial")
    return repo, identity


@dataclass
class Env:
    repo: git.Repo
    store: Store
    controller: Controller
    runner: Runner
    app: FastAPI
    tokens: dict[str, str]

    def auth(self, device: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[device]}"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    repo, identity = make_upstream(tmp_path / "upstream", monkeypatch)
    with Store.open(sqlite_url(tmp_path / "data")) as store:
        controller = Controller(
            BranchSource(Path(repo.working_dir)),
            store,
            identities=[identity],
            fingerprint_key=b"k" * 32,
        )
        runner = Runner(controller, interval=3600, resync=3600)
        issued = {}
        for device in ("pi-1", "pi-2"):
            issued[device] = tokens.issue()
            store.put_token(device, tokens.hash_token(issued[device]), datetime.now(UTC))
        app = create_app(runner, webhook_secret=None, operator_token=OPERATOR)
        yield Env(repo, store, controller, runner, app, issued)


def desired(device: str) -> str:
    return f"/v1/devices/{device}/desired"


def status(device: str) -> str:
    return f"/v1/devices/{device}/status"


def report(images: list[str] | None = None, events: range = range(0), **extra: Any) -> Any:
    """pi-1's status report: web 1.0.0 running and complete, with numbered events."""
    release = {
        "application": "web",
        "release": "1.0.0",
        "deployment": "web-lyon",
        "running": True,
        "complete": True,
        "containers": [{"name": "server", "state": "running", "imagePresent": True}],
    }
    return {
        "device": "pi-1",
        "releases": [release],
        "images": images or [],
        "events": [
            {"seq": n, "at": "2026-01-01T00:00:00Z", "kind": "started", "message": f"event {n}",
             "deployment": "web-lyon"}
            for n in events
        ],
        **extra,
    }  # fmt: skip


def run_with_runner(env: Env, body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run the controller's loops and the app on one event loop, as `hedgerow controller` does."""

    async def main() -> None:
        task = asyncio.create_task(env.runner.run())
        try:
            await asyncio.wait_for(env.runner.synced.wait(), 10)
            transport = httpx.ASGITransport(app=env.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://hedgerow.test", timeout=30
            ) as client:
                await body(client)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


# -- the desired document ----------------------------------------------------------------------


def test_the_desired_document_holds_the_release_its_resources_and_state(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    response = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    assert response.status_code == 200
    document = msgspec.json.decode(response.content, type=DesiredDocument)
    assert document.device == "pi-1" and document.revision == env.repo.head.commit.hexsha
    (deployment,) = document.deployments
    assert (deployment.deployment, deployment.application, deployment.release) == (
        "web-lyon",
        "web",
        "1.0.0",
    )
    assert deployment.state == "Running" and deployment.redeploy is None
    assert env.controller.applied is not None
    assert deployment.digest == env.controller.applied.fleet["pi-1"]["web"].digest
    server, proxy = deployment.containers
    assert (server.name, server.image, server.memory) == ("server", SERVER, 64 * 1024 * 1024)
    assert server.env == {"PORT": "8080"} and server.networks == ["front"]
    assert [(m.volume, m.target) for m in server.volumes] == [("data", "/data")]
    assert proxy.depends_on == ["server"] and proxy.port_bindings == ["80:80"]
    assert "imageCredential" not in response.text and CREDENTIAL not in response.text
    (volume,) = deployment.volumes  # `unused` is used by no container
    assert (volume.name, volume.driver, volume.deletion_policy) == ("data", "local", "Delete")
    assert volume.options == {"type": "tmpfs"}
    (network,) = deployment.networks
    assert (network.name, network.driver, network.internal) == ("front", "bridge", True)
    sent = response.json()["deployments"][0]["containers"]
    assert sent[1]["portBindings"] == ["80:80"], "camelCase on the wire"
    assert "restartPolicy" not in sent[0], "a default is left out: the agent knows it"
    assert server.restart_policy == "unless-stopped"

    idle = client.get(desired("pi-2"), headers=env.auth("pi-2"))
    assert idle.status_code == 200 and idle.json()["deployments"] == []
    env.store.put_token("pi-9", tokens.hash_token("hdr_pi-9"), datetime.now(UTC))
    missing = client.get(desired("pi-9"), headers={"Authorization": "Bearer hdr_pi-9"})
    assert missing.status_code == 404


def test_the_etag_is_stable_and_if_none_match_answers_304(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    first = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    second = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    tag = first.headers["etag"]
    assert tag == second.headers["etag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'
    assert first.content == second.content and first.headers["cache-control"] == "no-store"
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        same = client.get(desired("pi-1"), headers={**env.auth("pi-1"), "If-None-Match": header})
        assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == tag
    changed = client.get(desired("pi-1"), headers={**env.auth("pi-1"), "If-None-Match": '"x"'})
    assert changed.status_code == 200 and changed.headers["etag"] == tag
    too_long = client.get(desired("pi-1"), params={"wait": 61}, headers=env.auth("pi-1"))
    assert too_long.status_code == 422


def test_a_long_poll_answers_within_a_second_of_a_new_revision_or_304_at_its_timeout(
    env: Env,
) -> None:
    deployment = dedent(BASE["deployment.yaml"]) + '  redeploy: "2"\n'

    async def long_poll(client: httpx.AsyncClient, tag: str) -> httpx.Response:
        headers = {**env.auth("pi-1"), "If-None-Match": tag}
        return await client.get(desired("pi-1"), params={"wait": 20}, headers=headers)

    async def body(client: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()
        headers = env.auth("pi-1")
        tag = (await client.get(desired("pi-1"), headers=headers)).headers["etag"]
        poll = asyncio.create_task(long_poll(client, tag))
        await asyncio.sleep(0.3)
        assert not poll.done()
        sha = await asyncio.to_thread(commit, env.repo, "redeploy", {"deployment.yaml": deployment})
        started = loop.time()
        env.runner.wake()
        answer = await asyncio.wait_for(poll, 5)
        assert loop.time() - started < 1.0
        assert answer.status_code == 200 and answer.headers["etag"] != tag
        assert answer.json()["revision"] == sha
        assert answer.json()["deployments"][0]["redeploy"] == "2"

        new = answer.headers["etag"]
        started = loop.time()
        timeout = await client.get(
            desired("pi-1"), params={"wait": 0.3}, headers={**headers, "If-None-Match": new}
        )
        assert timeout.status_code == 304 and timeout.content == b""
        assert 0.3 <= loop.time() - started < 1.5

        # the device reports its image: its document loses the credentials, and says so at once
        poll = asyncio.create_task(long_poll(client, new))
        await asyncio.sleep(0.3)
        assert not poll.done()
        started = loop.time()
        put = await client.put(status("pi-1"), json=report([SERVER]), headers=headers)
        assert put.status_code == 200
        answer = await asyncio.wait_for(poll, 5)
        assert loop.time() - started < 1.0
        assert answer.status_code == 200 and answer.json()["registryAuth"] == []

    run_with_runner(env, body)


def test_a_commit_changes_the_documents_of_the_devices_it_touches_and_no_other(env: Env) -> None:
    deployment = dedent(BASE["deployment.yaml"]) + '  redeploy: "2"\n'
    first = env.repo.head.commit.hexsha

    async def body(client: httpx.AsyncClient) -> None:
        before = {d: await client.get(desired(d), headers=env.auth(d)) for d in ("pi-1", "pi-2")}
        assert all(answer.json()["revision"] == first for answer in before.values())
        tag = before["pi-2"].headers["etag"]
        untouched = asyncio.create_task(
            client.get(
                desired("pi-2"),
                params={"wait": 1.5},
                headers={**env.auth("pi-2"), "If-None-Match": tag},
            )
        )
        await asyncio.sleep(0.3)
        sha = await asyncio.to_thread(commit, env.repo, "redeploy", {"deployment.yaml": deployment})
        env.runner.wake()
        answer = await asyncio.wait_for(untouched, 5)
        assert answer.status_code == 304, "nothing of pi-2 changed: its long poll times out"
        after = {d: await client.get(desired(d), headers=env.auth(d)) for d in ("pi-1", "pi-2")}
        assert after["pi-1"].json()["revision"] == sha != first
        assert after["pi-1"].headers["etag"] != before["pi-1"].headers["etag"]
        assert (
            after["pi-2"].content == before["pi-2"].content and after["pi-2"].headers["etag"] == tag
        )

    run_with_runner(env, body)


def test_registry_auth_until_the_device_reports_the_image_and_never_the_credential_name(
    env: Env, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    env.controller.sync()
    client = TestClient(env.app)
    first = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    (auth,) = first.json()["registryAuth"]  # nginx:1.27 has no credential: pulled anonymously
    assert set(auth) == {"image", "serveraddress", "username", "password"}
    assert auth["image"] == SERVER and auth["serveraddress"] == "registry.example:5000"
    assert auth["username"] == "robot"
    assert auth["password"] == PASSWORD, "the password is not the credential's"
    assert CREDENTIAL not in first.text

    other = client.put(status("pi-1"), json=report(["nginx:1.27"]), headers=env.auth("pi-1"))
    assert other.status_code == 200
    still = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    assert [a["image"] for a in still.json()["registryAuth"]] == [SERVER]
    assert still.headers["etag"] == first.headers["etag"]

    client.put(status("pi-1"), json=report([SERVER, "nginx:1.27"]), headers=env.auth("pi-1"))
    pulled = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    assert pulled.json()["registryAuth"] == [] and PASSWORD not in pulled.text
    assert pulled.headers["etag"] != first.headers["etag"]

    client.put(status("pi-1"), json=report([]), headers=env.auth("pi-1"))  # image pruned
    again = client.get(desired("pi-1"), headers=env.auth("pi-1"))
    assert [a["image"] for a in again.json()["registryAuth"]] == [SERVER]

    operator = {"Authorization": f"Bearer {OPERATOR}"}
    for path in ("/v1/status", "/v1/events", "/v1/deployments", "/v1/observed", "/metrics"):
        response = client.get(path, headers=operator)
        assert response.status_code == 200
        assert PASSWORD not in response.text and CREDENTIAL not in response.text
    assert PASSWORD not in msgspec.json.encode(env.store.observed_all()).decode()
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert PASSWORD not in text
        assert not any(token in text for token in env.tokens.values())


# -- status reports ----------------------------------------------------------------------------


def test_a_status_report_is_stored_once_per_event_and_the_device_is_replanned(env: Env) -> None:
    async def body(client: httpx.AsyncClient) -> None:
        headers = env.auth("pi-1")
        sha = env.repo.head.commit.hexsha
        digest = (await client.get(desired("pi-1"), headers=headers)).json()["deployments"][0][
            "digest"
        ]
        sent = report([SERVER], range(1, 3), revision=sha)
        sent["releases"][0]["digest"] = digest
        response = await client.put(status("pi-1"), json=sent, headers=headers)
        assert response.status_code == 200
        assert response.json() == {"accepted": True, "lastSeq": 2}

        stored = env.store.get_observed("pi-1")
        assert stored is not None
        observed, _ = stored
        assert observed.events == [] and observed.revision == sha
        assert observed.releases[0].digest == digest and observed.images == [SERVER]

        async def ready() -> DeploymentStatus:
            for _ in range(250):
                records = await asyncio.to_thread(env.store.statuses)
                for record in records:
                    if record.status.condition(ConditionType.READY).true:
                        return record.status
                await asyncio.sleep(0.02)
            raise AssertionError("pi-1 was not re-planned after its report")

        settled = await ready()
        assert settled.condition(ConditionType.READY).reason == "Running"
        assert settled.condition(ConditionType.PROGRESSING).reason == "Settled"

        def agent_events() -> list[tuple[int | None, str, str | None]]:
            return [
                (e.agent_seq, e.message, e.revision)
                for e in env.store.events(device="pi-1")
                if e.agent_seq is not None
            ]

        assert agent_events() == [(1, "event 1", sha), (2, "event 2", sha)]
        retried = await client.put(status("pi-1"), json=sent, headers=headers)
        assert retried.json() == {"accepted": True, "lastSeq": 2}
        assert len(agent_events()) == 2
        more = report([SERVER], range(2, 4), revision=sha)
        more["releases"][0]["digest"] = digest
        assert (await client.put(status("pi-1"), json=more, headers=headers)).json()["lastSeq"] == 3
        assert [seq for seq, _, _ in agent_events()] == [1, 2, 3]

        metrics = (await client.get("/metrics")).text
        count = next(
            line
            for line in metrics.splitlines()
            if line.startswith("hedgerow_reconcile_seconds_count")
        )
        assert float(count.split()[-1]) >= 3  # pi-1 and pi-2 after the sync, pi-1 after reports
        assert 'hedgerow_deployments{condition="Ready",status="True"} 1.0' in metrics

    run_with_runner(env, body)


def test_a_report_for_another_device_or_with_a_naive_time_is_refused(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    wrong = client.put(
        status("pi-1"), json={**report(), "device": "pi-2"}, headers=env.auth("pi-1")
    )
    assert wrong.status_code == 422 and "pi-2" in wrong.json()["detail"]
    naive = report(events=range(1, 2))
    naive["events"][0]["at"] = "2026-01-01T00:00:00"
    refused = client.put(status("pi-1"), json=naive, headers=env.auth("pi-1"))
    assert refused.status_code == 422 and "UTC offset" in refused.json()["detail"]
    assert env.store.get_observed("pi-1") is None
    invalid = {"device": "pi-1", "events": [{"seq": 0}]}
    bad = client.put(status("pi-1"), json=invalid, headers=env.auth("pi-1"))
    assert bad.status_code == 422 and "$.events[0].seq" in bad.json()["detail"]  # msgspec's path
    broken = client.put(status("pi-1"), content=b"{", headers=env.auth("pi-1"))
    assert broken.status_code == 422 and "truncated" in broken.json()["detail"]


# -- authentication ----------------------------------------------------------------------------


def test_device_endpoints_need_the_device_s_own_token(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    for headers in ({}, {"Authorization": "Basic cGk6cGk="}, {"Authorization": "Bearer hdr_x"}):
        response = client.get(desired("pi-1"), headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        put = client.put(status("pi-1"), json={"nonsense": 1}, headers=headers)
        assert put.status_code == 401  # the token is checked before the body
    assert client.get(desired("pi-1"), headers=env.auth("pi-2")).status_code == 403
    assert client.put(status("pi-1"), json=report(), headers=env.auth("pi-2")).status_code == 403
    assert client.get(desired("pi-9"), headers=env.auth("pi-1")).status_code == 403
    assert (
        client.get(desired("pi-1"), headers={"Authorization": f"Bearer {OPERATOR}"}).status_code
        == 401
    )
    env.store.revoke_token("pi-1")  # as `hedgerow device token --revoke` does, from elsewhere
    later = time.monotonic() + 6  # token hashes are cached for 5 s, so polls cost no query
    monkeypatch.setattr("reconciler.server.auth.time.monotonic", lambda: later)
    assert client.get(desired("pi-1"), headers=env.auth("pi-1")).status_code == 401
    assert client.get("/healthz").status_code == 200


def test_operator_endpoints_need_the_operator_token(env: Env) -> None:
    env.controller.sync()
    env.controller.reconcile("pi-1")
    client = TestClient(env.app)
    client.put(status("pi-1"), json=report([SERVER], range(1, 2)), headers=env.auth("pi-1"))
    paths = ("/v1/status", "/v1/events", "/v1/deployments", "/v1/observed")
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong"}, env.auth("pi-1")):
            assert client.get(path, headers=headers).status_code == 401
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    sha = env.repo.head.commit.hexsha

    state = client.get("/v1/status", headers=operator).json()
    assert state["revision"] == sha and state["rejected"] == []
    assert [(d["deployment"], d["device"]) for d in state["deployments"]] == [("web-lyon", "pi-1")]

    events = client.get("/v1/events", headers=operator).json()
    assert [e["event"] for e in events] == ["applied", "deploy", "start", "started"]
    page = client.get(
        "/v1/events", params={"after": events[0]["id"], "limit": 2}, headers=operator
    ).json()
    assert [e["event"] for e in page] == ["deploy", "start"]
    mine = client.get(
        "/v1/events", params={"device": "pi-1", "deployment": "web-lyon"}, headers=operator
    ).json()
    assert [e["event"] for e in mine] == ["deploy", "start", "started"]
    assert client.get("/v1/events", params={"limit": 0}, headers=operator).status_code == 422

    fleet = client.get("/v1/deployments", headers=operator).json()
    assert fleet["revision"] == sha and fleet["devices"]["pi-2"] == []
    (wanted,) = fleet["devices"]["pi-1"]
    assert wanted["deployment"] == "web-lyon" and wanted["release"] == "1.0.0"
    assert wanted["state"] == "Running"

    observed = client.get("/v1/observed", headers=operator).json()
    assert list(observed) == ["pi-1"] and observed["pi-1"]["images"] == [SERVER]

    # no --operator-token-file: no operator API
    closed = TestClient(create_app(env.runner, webhook_secret=None, operator_token=None))
    response = closed.get("/v1/status", headers=operator)
    assert response.status_code == 401 and "--operator-token-file" in response.json()["detail"]


# -- metrics and the OpenAPI document ----------------------------------------------------------


def test_metrics_in_prometheus_text_format(env: Env) -> None:
    env.controller.sync()
    env.controller.reconcile("pi-1")
    client = TestClient(env.app)
    client.get(desired("pi-1"), headers=env.auth("pi-1"))
    client.get(desired("pi-1"), headers=env.auth("pi-2"))
    client.get(desired("pi-1"))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    names = ["hedgerow_reconcile_seconds", "hedgerow_queue_depth", "hedgerow_deployments"]
    for name in [*names, "hedgerow_polls_total"]:
        assert f"# TYPE {name} " in text
    for line in (
        'hedgerow_polls_total{code="200"} 1.0',
        'hedgerow_polls_total{code="401"} 1.0',
        'hedgerow_polls_total{code="403"} 1.0',
        'hedgerow_deployments{condition="Synced",status="True"} 1.0',
        'hedgerow_deployments{condition="Ready",status="False"} 1.0',
        "hedgerow_queue_depth 0.0",
    ):
        assert line in text.splitlines(), line


def test_the_committed_openapi_document_is_current() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == render_openapi(), "docs/openapi.json is stale: run `hedgerow openapi`"
    document = json.loads(committed)
    paths = ["/v1/devices/{name}/desired", "/v1/devices/{name}/status", "/v1/status"]
    paths += ["/v1/events", "/v1/deployments", "/v1/observed", "/metrics"]
    assert set(paths) <= set(document["paths"])
    check = CliRunner().invoke(
        cli, ["openapi", "--check", "--output", str(ROOT / "docs/openapi.json")]
    )
    assert check.exit_code == 0, check.output


def test_openapi_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    result = CliRunner().invoke(cli, ["openapi", "--check", "--output", str(stale)])
    assert result.exit_code == 1 and "stale" in result.stderr
    written = CliRunner().invoke(cli, ["openapi", "--output", str(stale)])
    assert written.exit_code == 0 and stale.read_text() == render_openapi()


def test_the_openapi_document_has_the_wire_schemas_of_the_device_routes() -> None:
    """The wire Structs are msgspec's, not pydantic's: their schemas are added by hand."""
    document = json.loads(render_openapi())
    desired_get = document["paths"]["/v1/devices/{name}/desired"]["get"]
    status_put = document["paths"]["/v1/devices/{name}/status"]["put"]
    ok = desired_get["responses"]["200"]["content"]["application/json"]["schema"]
    body = status_put["requestBody"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/DesiredDocument"}
    assert body == {"$ref": "#/components/schemas/StatusReport"}
    assert status_put["requestBody"]["required"] is True
    schemas = document["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs <= set(schemas), "every $ref resolves"
    assert schemas["Event"]["properties"]["seq"]["minimum"] == 1
    assert "registryAuth" in schemas["DesiredDocument"]["properties"]
    assert schemas["ContainerReport"]["required"] == ["name", "state", "imagePresent"]


def test_canonical_json_is_sorted_compact_and_equal_for_equal_documents() -> None:
    auth = RegistryAuth(image="r/é:1", serveraddress="r", username="u", password="p")
    first = DesiredDocument(device="pi-1", revision="abc", deployments=[], registry_auth=[auth])
    again = msgspec.json.decode(msgspec.json.encode(first), type=DesiredDocument)
    assert again is not first and canonical_json(again) == canonical_json(first)
    expected = json.dumps(
        msgspec.to_builtins(first), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert canonical_json(first) == expected  # the bytes (and ETags) of the pydantic version


# -- the controller as operators run it: TLS ---------------------------------------------------


@dataclass
class Served:
    url: str
    repo: git.Repo
    cert: Path
    trust: ssl.SSLContext
    tokens: dict[str, str]
    log: Path

    def get(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.url}{path}", headers=headers, verify=self.trust, **kwargs)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """`hedgerow controller` with TLS, an operator token and device tokens; stopped by pid."""
    repo, identity = make_upstream(tmp_path / "upstream", monkeypatch)
    cert, key = self_signed(tmp_path)
    data = tmp_path / "data"
    issued = {}
    for device in ("pi-1", "pi-2"):
        result = CliRunner().invoke(cli, ["device", "token", device, "--data-dir", str(data)])
        assert result.exit_code == 0
        issued[device] = result.stdout.strip()
    (tmp_path / "operator").write_text(OPERATOR + "\n")
    (tmp_path / "age.txt").write_text(f"{identity}\n")
    port = free_port()
    log = tmp_path / "controller.log"
    args = [sys.executable, "-m", "reconciler", "controller", "--repo", str(repo.working_dir),
            "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--interval", "3600",
            "--tls-cert", str(cert), "--tls-key", str(key),
            "--operator-token-file", str(tmp_path / "operator"),
            "--age-key-file", str(tmp_path / "age.txt")]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    try:
        _wait(lambda: _revision(url, trust) == repo.head.commit.hexsha, 20, f"up ({log})")
        yield Served(url, repo, cert, trust, issued, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _revision(url: str, trust: ssl.SSLContext) -> str | None:
    try:
        revision: str | None = httpx.get(f"{url}/healthz", verify=trust, timeout=1).json()[
            "revision"
        ]
        return revision
    except httpx.HTTPError:
        return None


@pytest.mark.e2e  # a controller process
def test_the_controller_serves_devices_and_operators_over_tls(served: Served) -> None:
    pi1 = served.tokens["pi-1"]
    document = served.get("/v1/devices/pi-1/desired", pi1)
    assert document.status_code == 200 and document.json()["registryAuth"][0]["image"] == SERVER
    assert served.get("/v1/devices/pi-1/desired", served.tokens["pi-2"]).status_code == 403
    sent = httpx.put(
        f"{served.url}/v1/devices/pi-1/status",
        json=report([SERVER], range(1, 2)),
        headers={"Authorization": f"Bearer {pi1}"},
        verify=served.trust,
    )
    assert sent.json() == {"accepted": True, "lastSeq": 1}

    def ready() -> bool:
        state = served.get("/v1/status", OPERATOR).json()
        return any(
            c["type"] == "Ready" and c["reason"] == "Running"
            for d in state["deployments"]
            for c in d["conditions"]
        )

    _wait(ready, 5, "pi-1 re-planned from its report")
    assert served.get("/v1/status", pi1).status_code == 401
    with pytest.raises(httpx.HTTPError):  # plaintext HTTP to the TLS port
        httpx.get(served.url.replace("https", "http") + "/healthz", timeout=2)
    with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused
        httpx.get(f"{served.url}/healthz", timeout=2)
    logged = served.log.read_text()
    for secret in (PASSWORD, OPERATOR, *served.tokens.values()):
        assert secret not in logged


@pytest.mark.e2e  # a controller process
def test_plan_from_what_devices_reported(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pi1 = served.tokens["pi-1"]
    nothing = {"device": "pi-1", "releases": [], "images": []}  # pi-1 runs nothing yet
    headers = {"Authorization": f"Bearer {pi1}"}
    url = f"{served.url}/v1/devices/pi-1/status"
    httpx.put(url, json=nothing, headers=headers, verify=served.trust).raise_for_status()
    repo = served.repo
    repo.git.checkout("-b", "upgrade")
    deployment = dedent(BASE["deployment.yaml"]).replace('"1.0.0"', '"1.1.0"')
    commit(repo, "upgrade", {"release-110.yaml": RELEASE_110, "deployment.yaml": deployment})
    (tmp_path / "op-token").write_text(OPERATOR)
    monkeypatch.setenv("SSL_CERT_FILE", str(served.cert))  # urllib trusts the test certificate
    base = [
        "plan",
        "--repo",
        str(repo.working_dir),
        "--base",
        "main",
        "--head",
        "upgrade",
        "-o",
        "json",
    ]

    converged = CliRunner().invoke(cli, base)
    assert converged.exit_code == 0, converged.output
    actions = json.loads(converged.stdout)["devices"]
    assert [a["action"] for a in actions["pi-1"]] == ["upgrade"]

    remote = ["--controller", served.url, "--token-file", str(tmp_path / "op-token")]
    observed = CliRunner().invoke(cli, [*base, *remote])
    assert observed.exit_code == 0, observed.output
    result = json.loads(observed.stdout)
    keys = {"valid", "errors", "warnings", "releases", "volumes", "networks", "credentials"}
    assert set(result) == {*keys, "devices", "rollouts"}
    assert [(a["action"], a["to"]) for a in result["devices"]["pi-1"]] == [
        ("deploy", "1.1.0"),
        ("start", "1.1.0"),
    ]
    assert "pi-2" not in result["devices"]  # never reported: planned from base, unchanged

    (tmp_path / "bad-token").write_text("wrong")
    refused = CliRunner().invoke(
        cli, [*base, "--controller", served.url, "--token-file", str(tmp_path / "bad-token")]
    )
    assert refused.exit_code == 2 and "401" in refused.stderr and "wrong" not in refused.stderr
    missing = CliRunner().invoke(cli, [*base, "--controller", served.url])
    assert missing.exit_code == 2 and "--token-file" in missing.stderr


def test_tls_options_go_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["controller", "--repo", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem")]
    )
    assert result.exit_code == 2 and "--tls-key" in result.stderr
