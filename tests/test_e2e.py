"""End to end on real parts: a controller process following a git repository, an agent process,
and a real Docker engine. Each test drives a change through git and waits for the device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.demo.daemons import free_port
from tests.support.docker import DockerEngine, Images
from tests.support.e2e import SECRET, Fleet, healthy, wait
from tests.support.fleet import fleet_manifests
from tests.support.repos import commit, write_tree

pytestmark = pytest.mark.usefixtures("git_identity")


@pytest.fixture
def fleet(
    tmp_path: Path,
    docker_engine: DockerEngine,
    images: Images,
) -> Iterator[Fleet]:
    port = free_port()
    repo = git.Repo.init(tmp_path / "fleet", initial_branch="main")
    write_tree(Path(repo.working_dir), {})
    commit(repo, "v1", fleet_manifests("1.0.0", images.v1, port=port))
    data, agent_data = tmp_path / "controller", tmp_path / "agent"
    (tmp_path / "secret").write_bytes(SECRET)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], name: str, env: dict[str, str] | None = None) -> None:
        log = (logs / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
            )
        )

    start(["reconciler", "controller", "--repo", str(repo.working_dir), "--data-dir", str(data),
           "--listen", f"127.0.0.1:{http}", "--webhook-secret-file", str(tmp_path / "secret"),
           "--interval", "3600"], "controller")  # fmt: skip
    try:
        wait(lambda: healthy(url), "the controller")
        token = CliRunner().invoke(app, ["device", "token", "pi-1", "--data-dir", str(data)])
        assert token.exit_code == 0, token.output
        (tmp_path / "token").write_text(token.stdout.strip())
        start(["agent", "--controller", url, "--device", "pi-1", "--token-file",
               str(tmp_path / "token"), "--data-dir", str(agent_data), "--poll-interval", "2s"],
              "agent", {"DOCKER_HOST": docker_engine.host})  # fmt: skip
        yield Fleet(repo, url, data, docker_engine, port)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for container in docker_engine.client.containers.list(
            all=True, filters={"label": "hedgerow.deployment=web-pi-1"}
        ):
            container.remove(force=True)
        for log in sorted(logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def test_deploy_upgrade_stop_and_delete_through_git(fleet: Fleet, images: Images) -> None:
    wait(lambda: fleet.containers() == {"1.0.0": "running"}, "deploy → running")
    wait(lambda: fleet.served() == "1", "the release serving")
    wait(lambda: fleet.conditions().get("Ready") == "True", "Ready")

    fleet.push("upgrade", fleet_manifests("1.1.0", images.v2, port=fleet.port))
    wait(
        lambda: fleet.containers() == {"1.0.0": "exited", "1.1.0": "running"},
        "upgrade: new running, old kept stopped",
    )
    wait(lambda: fleet.served() == "2", "the new release serving")

    fleet.push("stop", fleet_manifests("1.1.0", images.v2, port=fleet.port, state="Stopped"))
    wait(lambda: fleet.containers() == {"1.0.0": "exited", "1.1.0": "exited"}, "stopped")
    fleet.push("start", fleet_manifests("1.1.0", images.v2, port=fleet.port))
    wait(lambda: fleet.containers().get("1.1.0") == "running", "started again")

    Path(fleet.repo.working_dir, "deployment.yaml").unlink()
    fleet.push("delete", {})
    wait(lambda: fleet.containers() == {}, "delete: containers gone")

    def kinds() -> set[str]:
        events = CliRunner().invoke(
            app, ["events", "--device", "pi-1", "--data-dir", str(fleet.data), "-o", "json"]
        )
        return {e["event"] for e in json.loads(events.output)}

    # the agent reports its events after the pass that removed the containers
    wait(lambda: {"started", "stopped", "deleting"} <= kinds(), "the events reported")


def test_a_failing_upgrade_switches_back_and_is_degraded(fleet: Fleet, images: Images) -> None:
    wait(lambda: fleet.served() == "1", "the release serving")
    fleet.push("bad upgrade", fleet_manifests("1.2.0", images.failing, port=fleet.port))
    wait(lambda: fleet.conditions().get("Degraded") == "True", "Degraded", 90)
    assert fleet.containers().get("1.0.0") == "running"
    assert fleet.served() == "1"


def test_a_container_removed_by_hand_comes_back(fleet: Fleet) -> None:
    wait(lambda: fleet.containers() == {"1.0.0": "running"}, "deploy → running")
    (container,) = fleet.engine.client.containers.list(
        filters={"label": "hedgerow.deployment=web-pi-1"}
    )
    container.remove(force=True)
    wait(lambda: fleet.containers() == {"1.0.0": "running"}, "the container back")
    assert (
        fleet.engine.client.containers.list(filters={"label": "hedgerow.deployment=web-pi-1"})[0].id
        != container.id
    )
