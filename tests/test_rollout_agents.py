"""A rollout on real agents: four agent processes, one per device, on the one Docker engine,
and a controller process following a git repository. A new release goes out in two waves,
and the second wave moves only once the first has been Ready for minReadySeconds; a broken
release halts after the canary, which switches itself back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.demo.daemons import free_port
from tests.support.docker import DockerEngine, Images
from tests.support.e2e import SECRET, healthy, wait
from tests.support.repos import commit, write_tree

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("git_identity")]

DEVICES = ("pi-1", "pi-2", "pi-3", "pi-4")  # pi-1 is the canary
MIN_READY = 3


def manifests(version: str, image: str) -> dict[str, str]:
    dashed = version.replace(".", "-")
    files = {
        "app.yaml": "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: web}\n",
        f"releases/{version}.yaml": f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: web-{dashed}}}
spec:
  application: web
  version: "{version}"
  containers:
  - name: server
    image: {image}
    networks: [front]
""",
        "network.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Network\nmetadata: {name: front}\n"
        ),
        "deployment.yaml": f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: web}}
spec:
  application: web
  release: "{version}"
  selector: {{matchLabels: {{fleet: shop}}}}
  readiness: {{minReadySeconds: {MIN_READY}, progressDeadlineSeconds: 30}}
  rollout:
    waves:
    - {{name: canary, selector: {{matchLabels: {{ring: canary}}}}}}
    - {{name: rest}}
    maxInFlight: 3
    onFailure: Halt
""",
    }
    for device in DEVICES:
        ring = "canary" if device == "pi-1" else "main"
        files[f"devices/{device}.yaml"] = f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Device
metadata: {{name: {device}, labels: {{fleet: shop, ring: {ring}}}}}
spec: {{systemModel: rpi4}}
"""
    return files


@dataclass
class Shop:
    repo: git.Repo
    data: Path
    engine: DockerEngine
    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def running(self) -> dict[str, set[str]]:
        """Device → the releases of its running containers, as the engine's labels say; and
        the first time each (device, release) was seen running."""
        found: dict[str, set[str]] = {d: set() for d in DEVICES}
        now = time.monotonic()
        for container in self.engine.client.containers.list(
            filters={"label": "hedgerow.deployment=web"}
        ):
            device, release = (
                container.labels["hedgerow.device"],
                container.labels["hedgerow.release"],
            )
            found.setdefault(device, set()).add(release)
            self.first_seen.setdefault((device, release), now)
        return found

    def on(self, release: str) -> set[str]:
        return {d for d, releases in self.running().items() if releases == {release}}

    def status(self) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["status", "--data-dir", str(self.data), "-o", "json"])
        found: dict[str, Any] = json.loads(result.output)
        return found

    def rollout(self) -> str:
        result = CliRunner().invoke(app, ["rollout", "status", "--data-dir", str(self.data)])
        return result.output


@pytest.fixture
def shop(tmp_path: Path, docker_engine: DockerEngine, images: Images) -> Iterator[Shop]:
    repo = git.Repo.init(tmp_path / "fleet", initial_branch="main")
    write_tree(Path(repo.working_dir), {})
    commit(repo, "v1", manifests("1.0.0", images.v1))
    data = tmp_path / "controller"
    (tmp_path / "secret").write_bytes(SECRET)
    url = f"http://127.0.0.1:{free_port()}"
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
           "--listen", url.removeprefix("http://"), "--webhook-secret-file",
           str(tmp_path / "secret"), "--interval", "1"], "controller")  # fmt: skip
    try:
        wait(lambda: healthy(url), "the controller")
        for device in DEVICES:
            token = CliRunner().invoke(app, ["device", "token", device, "--data-dir", str(data)])
            assert token.exit_code == 0, token.output
            (tmp_path / f"{device}.token").write_text(token.stdout.strip())
            engine = {"DOCKER_HOST": docker_engine.host}
            start(["agent", "--controller", url, "--device", device, "--token-file",
                   str(tmp_path / f"{device}.token"), "--data-dir", str(tmp_path / device),
                   "--poll-interval", "2s"], device, engine)  # fmt: skip
        yield Shop(repo, data, docker_engine)
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
            all=True, filters={"label": "hedgerow.deployment=web"}
        ):
            container.remove(force=True)
        for log in sorted(logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def test_four_agents_on_one_engine_roll_out_in_two_waves(shop: Shop, images: Images) -> None:
    wait(lambda: shop.on("1.0.0") == set(DEVICES), "every device running 1.0.0", 120)

    commit(shop.repo, "v2", manifests("1.1.0", images.v2))
    wait(lambda: shop.on("1.1.0") == set(DEVICES), "every device running 1.1.0", 120)
    canary = shop.first_seen["pi-1", "1.1.0"]
    rest = min(shop.first_seen[d, "1.1.0"] for d in DEVICES[1:])
    # the rest moved only once the canary had been Ready (running) for minReadySeconds
    assert rest - canary >= MIN_READY, (canary, rest)
    # each device's old release is kept, stopped, on its own containers
    for device in DEVICES:
        old = shop.engine.client.containers.list(
            all=True,
            filters={"label": ["hedgerow.deployment=web", f"hedgerow.device={device}"]},
        )
        assert {c.labels["hedgerow.release"]: c.status for c in old} == {
            "1.0.0": "exited",
            "1.1.0": "running",
        }


def test_a_broken_release_halts_after_the_canary(shop: Shop, images: Images) -> None:
    wait(lambda: shop.on("1.0.0") == set(DEVICES), "every device running 1.0.0", 120)

    commit(shop.repo, "broken", manifests("1.2.0", images.failing))
    wait(lambda: "Halted" in shop.rollout(), "the rollout halted", 90)
    assert "pi-1" in shop.rollout()
    wait(lambda: shop.on("1.0.0") == set(DEVICES), "the canary back on 1.0.0", 60)
    time.sleep(3)  # a tick or more of the controller after the halt
    desired = {d["device"]: d["desiredRelease"] for d in shop.status()["deployments"]}
    assert desired == {"pi-1": "1.2.0", "pi-2": "1.0.0", "pi-3": "1.0.0", "pi-4": "1.0.0"}
