"""Readiness on a real Docker engine, through the agent's loop: a healthcheck that fails is
switched back and reported Degraded with its output and the container's log, also by an agent
restarted meanwhile; a healthcheck that passes after its startPeriod is Ready only then; a
redeploy whose new containers fail switches back to those it set aside, port and all."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.client import Fetched
from agent.engine import Engine
from agent.poll import Agent
from agent.steps import MANAGED
from reconciler.demo.daemons import free_port
from reconciler.wire import Deployment, DesiredDocument, ReleaseReport, StatusReport
from tests.support.docker import DockerEngine, Images

pytestmark = pytest.mark.e2e


class Controller:
    device = "pi-1"

    def __init__(self) -> None:
        self.document: DesiredDocument | None = None
        self.reports: list[StatusReport] = []

    def desired(self, etag: str | None, wait: float) -> Fetched:
        return Fetched(self.document, f"e{id(self.document)}")

    def report(self, report: StatusReport) -> int | None:
        self.reports.append(report)
        return report.events[-1].seq if report.events else None

    def release(self, version: str) -> ReleaseReport | None:
        found = (
            [r for r in self.reports[-1].releases if r.release == version] if self.reports else []
        )
        return found[0] if found else None


def deployment(
    images: Images,
    version: str,
    check: dict[str, Any] | None,
    redeploy: str | None = None,
    port: int | None = None,
) -> Deployment:
    container: dict[str, Any] = {"name": "server", "image": images.sleeper}
    if check is not None:
        container["healthcheck"] = check
    if port is not None:
        container |= {"image": images.v1, "portBindings": [f"127.0.0.1:{port}:8080"]}
    return msgspec.convert(
        {
            "deployment": "web",
            "application": "web",
            "release": version,
            "state": "Running",
            "redeploy": redeploy,
            "digest": f"digest-of-{version}",
            "networks": [],
            "volumes": [],
            "containers": [container],
            "readiness": {"minReadySeconds": 1, "progressDeadlineSeconds": 8},
        },
        Deployment,
    )


def document(d: Deployment) -> DesiredDocument:
    return DesiredDocument(device="pi-1", revision="r", deployments=[d])


@pytest.fixture
def engine(docker_engine: DockerEngine) -> Iterator[Engine]:
    yield Engine(docker_engine.client, device="pi-1", start_grace=0.5, stop_timeout=2)
    api = docker_engine.client.api
    for container in api.containers(all=True, filters={"label": f"{MANAGED}=true"}):
        api.remove_container(container["Id"], force=True, v=True)


def until(agent: Agent, check: Any, what: str, seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        agent.step(0)
        time.sleep(0.3)


def test_a_failing_healthcheck_switches_back_with_its_output_and_log_across_a_restart(
    tmp_path: Path, engine: Engine, images: Images
) -> None:
    controller = Controller()
    controller.document = document(deployment(images, "1.0.0", None))
    agent = Agent(controller, engine, tmp_path, interval=30)  # type: ignore[arg-type]
    until(agent, lambda: (r := controller.release("1.0.0")) is not None and r.ready, "1.0.0 Ready")

    failing = {
        "test": ["CMD-SHELL", "echo probe-says-no; echo probe-log-line > /proc/1/fd/1; exit 1"],
        "interval": "1s",
        "retries": 1,
    }
    controller.document = document(deployment(images, "2.0.0", failing))
    agent.step(0)  # switched to 2.0.0
    assert (r := controller.release("2.0.0")) is not None and r.ready is False
    # the agent restarts before the deadline: the switch record is on disk
    agent = Agent(controller, engine, tmp_path, interval=30)  # type: ignore[arg-type]
    until(agent, lambda: (r := controller.release("2.0.0")) is not None and r.error, "Degraded")

    found = controller.release("2.0.0")
    assert found is not None and found.degraded is not None
    assert "not Ready within 8 s" in found.degraded.reason and "unhealthy" in found.degraded.reason
    assert found.degraded.container == "server"
    assert "probe-says-no" in (found.degraded.health or "")
    assert any("probe-log-line" in line for line in found.degraded.log)
    old = controller.release("1.0.0")
    assert old is not None and old.running, "the release before runs again"
    agent.step(0)
    assert controller.release("1.0.0").running  # type: ignore[union-attr]  # held: no retry


def test_a_healthcheck_passing_after_its_start_period_is_ready_only_then(
    tmp_path: Path, engine: Engine, images: Images
) -> None:
    slow = {  # fails its first check, within the start period; passes from the second
        "test": ["CMD-SHELL", "[ -f /tmp/seen ] || { touch /tmp/seen; exit 1; }"],
        "interval": "2s",
        "retries": 1,
        "startPeriod": "30s",
    }
    controller = Controller()
    controller.document = document(deployment(images, "1.0.0", slow))
    agent = Agent(controller, engine, tmp_path, interval=30)  # type: ignore[arg-type]
    states: list[tuple[str | None, bool | None]] = []

    def ready() -> bool:
        found = controller.release("1.0.0")
        if found is None or not found.containers:
            return False
        states.append((found.containers[0].health, found.ready))
        return bool(found.ready)

    until(agent, ready, "Ready after the start period")
    assert ("starting", False) in states, "not Ready while the check has not passed"
    assert states[-1] == ("healthy", True)
    assert controller.release("1.0.0").degraded is None  # type: ignore[union-attr]


def test_a_redeploy_whose_containers_fail_switches_back_to_those_it_set_aside(
    tmp_path: Path, engine: Engine, images: Images
) -> None:
    port = free_port()
    controller = Controller()
    controller.document = document(deployment(images, "1.0.0", None, port=port))
    agent = Agent(controller, engine, tmp_path, interval=30)  # type: ignore[arg-type]
    until(agent, lambda: (r := controller.release("1.0.0")) is not None and r.ready, "Ready")
    (first,) = [c.id for c in engine.read().containers]

    failing = {"test": ["CMD-SHELL", "echo no-such-thing; exit 1"], "interval": "1s", "retries": 1}
    controller.document = document(deployment(images, "1.0.0", failing, "r2", port))
    agent.step(0)  # the old server set aside and stopped, its port handed to the new one
    by_id = {c.id: c for c in engine.read().containers}
    assert by_id[first].name.endswith("_aside") and not by_id[first].up
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/VERSION", timeout=5) as answer:
        assert answer.status == 200, "the new server has the port"

    until(agent, lambda: (r := controller.release("1.0.0")) is not None and r.error, "Degraded")
    found = controller.release("1.0.0")
    assert found is not None and found.redeploy == "r2" and found.degraded is not None
    assert "no-such-thing" in (found.degraded.health or "")
    running = [c for c in engine.read().containers if c.up]
    assert [c.id for c in running] == [first], "the containers set aside run again"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/VERSION", timeout=5) as answer:
        assert answer.read().decode().strip() == "1", "and serve on their port"
