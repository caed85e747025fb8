"""The harness of the end-to-end tests: a fleet (git repository, controller, agent, Docker
engine) driven through git and the webhook, and waiting for what the device shows.

`test_e2e` builds its fleet with it and `test_e2e_more` extends it with processes the test
stops and starts; it lives here so neither test module imports the other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import httpx
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.server.webhook import sign
from tests.support.docker import DockerEngine
from tests.support.repos import commit

SECRET = b"e2e-webhook-secret"


@dataclass
class Fleet:
    repo: git.Repo
    url: str
    data: Path
    engine: DockerEngine
    port: int

    def push(self, message: str, files: dict[str, str]) -> str:
        sha = commit(self.repo, message, files)
        body = json.dumps({"after": sha}).encode()
        headers = {"X-Hub-Signature-256": sign(SECRET, body)}
        assert httpx.post(f"{self.url}/v1/hooks/git", content=body, headers=headers).is_success
        return sha

    def containers(self) -> dict[str, str]:
        """Release → state of the containers this test's deployment owns.

        The list alone, without inspecting each container as `containers.list` does: one the
        agent removes meanwhile is not an error (Podman's removal is not instant)."""
        found = self.engine.client.api.containers(
            all=True, filters={"label": "hedgerow.deployment=web-pi-1"}
        )
        return {c["Labels"]["hedgerow.release"]: c["State"] for c in found}

    def status(self) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["status", "--data-dir", str(self.data), "-o", "json"])
        loaded: dict[str, Any] = json.loads(result.output)
        return loaded

    def conditions(self) -> dict[str, str]:
        deployments = self.status()["deployments"]
        if not deployments:
            return {}
        return {c["type"]: c["status"] for c in deployments[0]["conditions"]}

    def served(self) -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/VERSION", timeout=1).text.strip()
        except httpx.HTTPError:
            return None


def wait(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    """The controller at `url` answers and has applied a revision."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).json()["revision"] is not None
    except httpx.HTTPError:
        return False
