"""A device with only an enrollment token and the agent joins by itself, shows as Pending, and
runs its deployment once the Device manifest `hedgerow device manifest` prints is committed:
a real controller process following a git repository, a real agent process, a real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git
import httpx
import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.demo.daemons import free_port
from tests.support.docker import DockerEngine, Images
from tests.support.e2e import SECRET, healthy, wait
from tests.support.fleet import fleet_manifests
from tests.support.repos import commit, write_tree

pytestmark = pytest.mark.usefixtures("git_identity")
DEVICE = "field-unit-7"
DEPLOYMENT = "web-lyon"


def manifests(image: str) -> dict[str, str]:
    """The one-container fleet, deployed by selector (site=lyon) and with no Device yet."""
    files = fleet_manifests("1.0.0", image)
    del files["device.yaml"]
    files["deployment.yaml"] = f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: {DEPLOYMENT}}}
spec:
  application: web
  release: "1.0.0"
  selector: {{matchLabels: {{site: lyon}}}}
  state: Running
"""
    return files


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


class Field:
    def __init__(self, root: Path, engine: DockerEngine) -> None:
        self.root = root
        self.engine = engine
        self.data = root / "controller"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
            )
        )

    def devices(self, *args: str) -> list[dict[str, Any]]:
        shown = cli("device", "list", "--data-dir", str(self.data), "-o", "json", *args)
        found: list[dict[str, Any]] = json.loads(shown.stdout)
        return found

    def running(self) -> bool:
        found = self.engine.client.containers.list(
            filters={"label": f"hedgerow.deployment={DEPLOYMENT}"}
        )
        return [c.status for c in found] == ["running"]

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.engine.remove_managed()
        for log in sorted(self.logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def field(tmp_path: Path, docker_engine: DockerEngine) -> Iterator[Field]:
    started = Field(tmp_path, docker_engine)
    try:
        yield started
    finally:
        started.stop()


def test_a_device_with_an_enrollment_token_joins_is_admitted_by_a_commit_and_runs(
    field: Field, images: Images, tmp_path: Path
) -> None:
    repo = git.Repo.init(tmp_path / "fleet", initial_branch="main")
    write_tree(Path(repo.working_dir), {})
    commit(repo, "web for lyon", manifests(images.v1))
    (tmp_path / "secret").write_bytes(SECRET)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    field.start(["reconciler", "controller", "--repo", str(repo.working_dir), "--data-dir",
                 str(field.data), "--listen", f"127.0.0.1:{http}", "--webhook-secret-file",
                 str(tmp_path / "secret"), "--interval", "1"], "controller")  # fmt: skip
    wait(lambda: healthy(url), "the controller")

    # the operator makes an enrollment token; it goes into the device image
    made = cli("enrollment", "create", "lyon-batch", "--labels", "site=lyon,ring=stable",
               "--max-uses", "5", "--ttl", "72h", "--data-dir", str(field.data))  # fmt: skip
    shared = made.stdout.strip()
    assert shared.startswith("hde_")
    image = tmp_path / "image"
    image.mkdir()
    (image / "enroll-token").write_text(shared + "\n")
    agent_data = image / "var-lib-hedgerow"

    # first boot: the agent enrolls by itself
    field.start(["agent", "--controller", url, "--enroll-token-file", str(image / "enroll-token"),
                 "--device", DEVICE, "--system-model", "rpi4", "--data-dir", str(agent_data),
                 "--poll-interval", "2s"], "agent", {"DOCKER_HOST": field.engine.host})  # fmt: skip
    wait(lambda: [d["device"] for d in field.devices("--pending")] == [DEVICE], "Pending")
    token_file = agent_data / "device-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    own = token_file.read_text().strip()
    assert own.startswith("hdr_") and own != shared
    (pending,) = field.devices("--pending")
    assert pending["systemModel"] == "rpi4" and pending["labels"] == {"site": "lyon",
                                                                      "ring": "stable"}  # fmt: skip
    facts = pending["facts"]
    assert facts["engine"] == "docker" and facts["engineVersion"] and facts["architecture"]
    assert facts["memoryBytes"] > 0 and facts["diskFreeBytes"] >= 0
    # it polls and gets an empty document: nothing runs
    wait(lambda: field.devices("--pending")[0]["lastReport"] is not None, "a report")
    assert not field.running()
    status = json.loads(cli("status", "--data-dir", str(field.data), "-o", "json").stdout)
    assert [p["device"] for p in status["pending"]] == [DEVICE]

    # the enrollment token is used once: the agent restarted keeps its own token
    (image / "enroll-token").unlink()

    # admission is a commit: the manifest the CLI prints
    manifest = cli("device", "manifest", DEVICE, "--data-dir", str(field.data)).stdout
    commit(repo, f"admit {DEVICE}", {f"devices/{DEVICE}.yaml": manifest})
    wait(field.running, "the deployment running on the admitted device", 90)
    assert field.devices("--pending") == []
    shown = cli("status", "--device", DEVICE, "--data-dir", str(field.data)).stdout
    assert "Admitted" in shown and "docker" in shown and "free disk" in shown

    # a second device claiming the same name is refused
    refused = httpx.post(
        f"{url}/v1/enroll",
        json={"device": DEVICE, "systemModel": "rpi4"},
        headers={"Authorization": f"Bearer {shared}"},
    )
    assert refused.status_code == 409, refused.text

    # restarted without the enrollment token, the agent goes on with its own
    agent = field.processes.pop()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    field.start(["agent", "--controller", url, "--data-dir", str(agent_data), "--poll-interval",
                 "2s"], "agent", {"DOCKER_HOST": field.engine.host})  # fmt: skip
    before = field.devices()[0]["lastReport"]
    wait(lambda: field.devices()[0]["lastReport"] != before, "a report after the restart")
    logs = "".join(p.read_text(errors="replace") for p in field.logs.iterdir())
    assert "device enrolled" in logs and "enrolled" in logs
    assert shared not in logs and own not in logs, "a token reached a log line"
