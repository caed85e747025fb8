"""Application secrets on a real engine, through the agent's loop: a Secret's values reach a
container as an env value and as a read-only file on a tmpfs, never the device's disk; a
restarted agent that cannot reach the controller does not make a container needing one (it has
no value to give it) and makes it once the controller answers; removing the container removes
its files. Also what `docker inspect` shows, which the README states."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.client import ControllerUnreachable, Fetched
from agent.engine import Engine
from agent.errors import EngineError
from agent.poll import Agent
from agent.secretfiles import SecretFiles, filesystem_of
from agent.steps import MANAGED, SECRETS
from reconciler.wire import Deployment, DesiredDocument, SecretValue, StatusReport
from tests.support.docker import DockerEngine, Images
from tests.support.leaks import APP_SECRET
from tests.test_agent_health import until

pytestmark = pytest.mark.e2e
PASSWORD = APP_SECRET


class Controller:
    device = "pi-1"

    def __init__(self, document: DesiredDocument) -> None:
        self.document = document
        self.reports: list[StatusReport] = []
        self.down = False

    def desired(self, etag: str | None, wait: float) -> Fetched:
        if self.down:
            raise ControllerUnreachable("controller down (test)")
        return Fetched(self.document, f"e{id(self.document)}")

    def report(self, report: StatusReport) -> int | None:
        if self.down:
            raise ControllerUnreachable("controller down (test)")
        self.reports.append(report)
        return report.events[-1].seq if report.events else None


def document(images: Images, deployments: bool = True) -> DesiredDocument:
    app = {
        "deployment": "web",
        "application": "web",
        "release": "1.0.0",
        "state": "Running",
        "digest": "d1",
        "containers": [
            {
                "name": "server",
                "image": images.sleeper,
                "env": {"PLAIN": "1"},
                "secretEnv": {"DB_PASSWORD": {"secret": "db", "key": "password"}},
                "secrets": [
                    {"secret": "db", "key": "password", "target": "/run/secrets/password",
                     "mode": 0o444},
                ],
            }
        ],
    }  # fmt: skip
    return DesiredDocument(
        device="pi-1",
        revision="r",
        deployments=[msgspec.convert(app, Deployment)] if deployments else [],
        secrets=[SecretValue(secret="db", key="password", value=PASSWORD)] if deployments else [],
    )


@pytest.fixture
def folder() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="hedgerow-secrets-", dir="/dev/shm"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def engine_for(docker_engine: DockerEngine, folder: Path) -> Engine:
    return Engine(
        docker_engine.client, device="pi-1", stop_timeout=2, secret_files=SecretFiles(folder)
    )


@pytest.fixture
def cleanup(docker_engine: DockerEngine) -> Iterator[None]:
    yield
    api = docker_engine.client.api
    for container in api.containers(all=True, filters={"label": f"{MANAGED}=true"}):
        api.remove_container(container["Id"], force=True, v=True)


def server(docker_engine: DockerEngine) -> dict[str, Any] | None:
    api = docker_engine.client.api
    found = api.containers(all=True, filters={"label": f"{MANAGED}=true"})
    info: dict[str, Any] | None = api.inspect_container(found[0]["Id"]) if found else None
    return info


def run_in(docker_engine: DockerEngine, container: str, command: str) -> str:
    api = docker_engine.client.api
    exec_id = api.exec_create(container, ["sh", "-c", command])
    output: bytes = api.exec_start(exec_id["Id"])
    return output.decode().strip()


def running(docker_engine: DockerEngine) -> bool:
    info = server(docker_engine)
    return info is not None and info["State"]["Running"]


def test_secret_values_reach_a_container_as_env_and_file_and_never_the_disk(
    tmp_path: Path, docker_engine: DockerEngine, images: Images, folder: Path, cleanup: None
) -> None:
    controller = Controller(document(images))
    data = tmp_path / "agent"
    agent = Agent(controller, engine_for(docker_engine, folder), data, interval=30)  # type: ignore[arg-type]
    until(agent, lambda: running(docker_engine), "the server running", 30)
    info = server(docker_engine)
    assert info is not None
    name = info["Name"].lstrip("/")
    assert run_in(docker_engine, name, "echo $DB_PASSWORD") == PASSWORD
    assert run_in(docker_engine, name, "cat /run/secrets/password") == PASSWORD
    assert run_in(docker_engine, name, "echo x > /run/secrets/password 2>&1; echo $?") != "0"

    # on the device: the file on the tmpfs only, nothing on disk, nothing in labels
    (written,) = [p for p in folder.rglob("*") if p.is_file()]
    assert filesystem_of(written) == "tmpfs" and written.stat().st_mode & 0o777 == 0o444
    for path in data.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in str(info["Config"]["Labels"])
    # what `docker inspect` shows anyone with the Docker socket: the env value, not the file's
    assert f"DB_PASSWORD={PASSWORD}" in info["Config"]["Env"]
    assert any(m["Destination"] == "/run/secrets/password" and not m["RW"] for m in info["Mounts"])

    # a reboot: the tmpfs is empty and the agent starts again without the controller
    docker_engine.client.api.stop(name, timeout=1)
    shutil.rmtree(folder / info["Config"]["Labels"][SECRETS])
    controller.down = True
    again = Agent(controller, engine_for(docker_engine, folder), data, interval=30)  # type: ignore[arg-type]
    again.step(0)
    assert not running(docker_engine), "no value to give the files: it waits"
    assert any("has not come from the controller yet" in e for e in again.errors.values())
    controller.down = False
    until(again, lambda: running(docker_engine), "made again once the controller answers", 30)
    remade = server(docker_engine)
    assert remade is not None
    remade_name = remade["Name"].lstrip("/")
    assert run_in(docker_engine, remade_name, "cat /run/secrets/password") == PASSWORD

    controller.document = document(images, deployments=False)
    until(again, lambda: server(docker_engine) is None, "removed", 30)
    assert list(folder.iterdir()) == [], "its files go with it"


def test_a_folder_on_disk_is_refused_for_secret_files(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not a tmpfs"):
        SecretFiles(tmp_path / "secrets")


def test_the_filesystem_of_a_path_is_read_from_mountinfo() -> None:
    mountinfo = (
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "30 22 0:26 / /dev/shm rw - tmpfs tmpfs rw\n"
        "31 22 0:27 / /run rw - tmpfs tmpfs rw\n"
    )
    assert filesystem_of(Path("/run/hedgerow/secrets"), mountinfo) == "tmpfs"
    assert filesystem_of(Path("/var/lib/hedgerow"), mountinfo) == "ext4"
    assert filesystem_of(Path("/runner"), mountinfo) == "ext4", "a prefix is not a mount"
