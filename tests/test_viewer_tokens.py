"""Read-only viewer tokens (`hedgerow operator token --read-only NAME`) on the operator API, and
the commit subject kept with each revision for people."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reconciler.cli.app import app as cli
from reconciler.controller.controller import Controller
from reconciler.secrets import tokens
from reconciler.server.app import create_app
from reconciler.server.auth import OperatorAuth
from reconciler.store import Store, sqlite_url
from tests.test_api import OPERATOR, BranchSource, Env, commit, env

__all__ = ["env"]


def test_a_viewer_token_reads_the_operator_api_until_revoked(env: Env) -> None:
    data = str(Path(env.store.url.removeprefix("sqlite:///")).parent)
    made = CliRunner().invoke(
        cli, ["operator", "token", "alice", "--read-only", "--data-dir", data]
    )
    assert made.exit_code == 0, made.output
    viewer = made.stdout.strip()
    assert viewer.startswith("hdr_") and "not shown again" in made.stderr
    client = TestClient(env.app)
    assert (
        client.get("/v1/status", headers={"Authorization": f"Bearer {viewer}"}).status_code == 200
    )
    assert (
        client.get("/v1/status", headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 200
    )
    wrong = client.get("/v1/status", headers={"Authorization": "Bearer hdr_nope"})
    assert wrong.status_code == 401 and "viewer token" in wrong.json()["detail"]
    twice = CliRunner().invoke(
        cli, ["operator", "token", "alice", "--read-only", "--data-dir", data]
    )
    assert twice.exit_code == 1 and "exists already" in twice.stderr
    revoked = CliRunner().invoke(
        cli, ["operator", "token", "alice", "--revoke", "--data-dir", data]
    )
    assert revoked.exit_code == 0
    fresh = TestClient(create_app(env.runner, webhook_secret=None, operator_token=OPERATOR))
    assert fresh.get("/v1/status", headers={"Authorization": f"Bearer {viewer}"}).status_code == 401


def test_revocation_reaches_a_running_controller_within_its_refresh(tmp_path: Path) -> None:
    clock = [0.0]
    with Store.open(sqlite_url(tmp_path)) as store:
        store.create_viewer_token("bob", tokens.hash_token("hdr_bob"), datetime.now(UTC))
        auth = OperatorAuth(None, store, refresh=5.0, clock=lambda: clock[0])
        assert asyncio.run(auth.who("hdr_bob")) == "viewer bob"
        store.revoke_viewer_token("bob")
        clock[0] = 4.0
        assert asyncio.run(auth.who("hdr_bob")) == "viewer bob", "read again only after refresh"
        clock[0] = 5.0
        assert asyncio.run(auth.who("hdr_bob")) is None
        assert "--operator-token-file" in str(auth.refused().detail)


def test_operator_token_without_read_only_says_where_the_operator_token_is(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["operator", "token", "carol", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--operator-token-file" in result.stderr


class Described(BranchSource):
    def message(self, sha: str) -> str:
        return str(self.repo.commit(sha).summary)


def test_each_revision_keeps_its_commit_subject(env: Env) -> None:
    controller = Controller(
        Described(Path(env.repo.working_dir)),
        env.store,
        identities=env.controller.identities,
        fingerprint_key=b"k" * 32,
    )
    controller.sync()
    applied = env.store.last_attempt()
    assert applied is not None and applied.message == "initial"
    commit(env.repo, "break it\n\nthe body is not kept", {"devices.yaml": "kind: [\n"})
    controller.sync()
    rejected = env.store.last_attempt()
    assert rejected is not None and not rejected.valid and rejected.message == "break it"
