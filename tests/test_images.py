"""The container images (`make images`, packaging/): built on the test engine without network
from a Debian base made here, then run. The agent's image, with the engine's socket mounted,
deploys a release from a real controller on the same engine; the controller's image runs as a
non-root user, follows a repository mounted into it, and hands out device tokens.

Building takes a while on vfs: the first run makes the Debian bases with debootstrap (cached in
~/.cache/hedgerow, or $HEDGEROW_CACHE, for the next runs) and both images.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import git
import httpx
import pyrage
import pytest
from docker.models.containers import Container
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.demo.daemons import SandboxError, free_port, need
from tests.support.docker import DockerEngine, Images
from tests.support.e2e import Fleet, healthy, wait
from tests.support.fleet import fleet_manifests
from tests.support.leaks import APP_SECRET
from tests.support.repos import ROOT, commit, write_tree

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("git_identity")]

AGENT_IMAGE = "hedgerow/agent:test"
CONTROLLER_IMAGE = "hedgerow/controller:test"
BUILD_SECONDS = 1200  # debootstrap twice and two builds on vfs: about 2.5 minutes here
CONTROLLER_UID = "10001"
PASSWORD = APP_SECRET  # a value the suite's leak check looks for in every output
SECRET_FILE = "secret: db, key: password, target: /run/secrets/password, mode: 0444"


@dataclass(frozen=True)
class Built:
    agent: str
    controller: str
    seconds: float


@pytest.fixture(scope="module")
def built(docker_engine: DockerEngine) -> Built:
    """Both images, built by the script `make images` runs, on the test engine."""
    try:
        for program, package in (("docker", "docker.io"), ("debootstrap", "debootstrap")):
            need(program, package)
    except SandboxError as error:
        pytest.fail(str(error), pytrace=False)
    env = {
        **os.environ,
        "DOCKER_HOST": docker_engine.host,
        "AGENT_IMAGE": AGENT_IMAGE,
        "CONTROLLER_IMAGE": CONTROLLER_IMAGE,
        "PIP": f"{sys.executable} -m pip",
    }
    started = time.monotonic()
    made = subprocess.run(
        [str(ROOT / "packaging" / "images.sh"), "agent", "controller"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
    )
    seconds = time.monotonic() - started
    assert made.returncode == 0, made.stdout + made.stderr[-4000:]
    print(f"images built in {seconds:.0f} s:\n{made.stdout}")
    return Built(AGENT_IMAGE, CONTROLLER_IMAGE, seconds)


def config(engine: DockerEngine, image: str) -> dict[str, object]:
    inspected = engine.client.api.inspect_image(image)  # type: ignore[no-untyped-call]
    found: dict[str, object] = inspected["Config"]
    return found


def stopped(container: Container) -> str:
    """Stop a container (SIGTERM, then SIGKILL after 20 s), remove it; its logs."""
    try:
        container.stop(timeout=20)
        logs: bytes = container.logs()
        container.remove(force=True)
    except docker.errors.NotFound:
        return "(gone)"
    return logs.decode(errors="replace")


# -- the agent ------------------------------------------------------------------------------------


def test_the_agent_image_is_the_agent_alone(docker_engine: DockerEngine, built: Built) -> None:
    assert config(docker_engine, built.agent)["Entrypoint"] == ["hedgerow-agent"]
    client = docker_engine.client
    command = "from importlib.util import find_spec as f; print(f('fastapi'), f('agent.main'))"
    found = client.containers.run(
        built.agent, ["-c", command], entrypoint="python3", network_mode="none", remove=True
    )
    assert isinstance(found, bytes)
    libraries, agent = found.decode().split(" ", 1)
    assert libraries == "None" and agent.startswith("ModuleSpec")


@pytest.fixture
def controller(tmp_path: Path, docker_engine: DockerEngine, images: Images) -> Iterator[Fleet]:
    """A controller process on loopback, following a repository that deploys `images.v1` to
    device pi-1 with the Secret `db` as the file /run/secrets/password, and pi-1's token in
    tmp_path/token."""
    port = free_port()
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "age.txt").write_text(f"{identity}\n")
    files = fleet_manifests("1.0.0", images.v1, port=port)
    files["releases/1.0.0.yaml"] += f"    secrets: [{{{SECRET_FILE}}}]\n"
    made = CliRunner().invoke(
        app,
        ["secret", "create", "db", "--from-literal", f"password={PASSWORD}",
         "--age", str(identity.to_public()), "-o", str(tmp_path / "db.yaml")],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    files["secrets/db.yaml"] = (tmp_path / "db.yaml").read_text()
    repo = git.Repo.init(tmp_path / "fleet", initial_branch="main")
    write_tree(Path(repo.working_dir), {})
    commit(repo, "v1", files)
    data, http = tmp_path / "controller", free_port()
    url = f"http://127.0.0.1:{http}"
    log = tmp_path / "controller.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "controller", "--repo", str(repo.working_dir),
             "--data-dir", str(data), "--listen", f"127.0.0.1:{http}", "--interval", "3600",
             "--age-key-file", str(tmp_path / "age.txt")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait(lambda: healthy(url), "the controller")
        token = CliRunner().invoke(app, ["device", "token", "pi-1", "--data-dir", str(data)])
        assert token.exit_code == 0, token.output
        (tmp_path / "token").write_text(token.stdout.strip())
        yield Fleet(repo, url, data, docker_engine, port)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"--- controller.log\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def secrets_dir() -> Iterator[Path]:
    """A folder on a tmpfs of the host (/dev/shm), for the agent's Secret files."""
    made = Path(tempfile.mkdtemp(prefix="hedgerow-images-", dir="/dev/shm"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def test_the_agent_in_a_container_deploys_a_release_on_the_engine_it_is_given(
    tmp_path: Path,
    docker_engine: DockerEngine,
    built: Built,
    controller: Fleet,
    secrets_dir: Path,
) -> None:
    """The agent in its container, with the engine's socket mounted and DOCKER_HOST naming it,
    and its Secret folder mounted at the same path as on the host: the engine bind-mounts the
    files from the host's side."""
    socket = docker_engine.host.removeprefix("unix://")
    (tmp_path / "agent").mkdir()
    client = docker_engine.client
    agent = client.containers.run(
        built.agent,
        ["--controller", controller.url, "--device", "pi-1", "--token-file",
         "/etc/hedgerow/token", "--secrets-dir", str(secrets_dir), "--poll-interval", "2s"],
        name="hedgerow-agent-test",
        detach=True,
        read_only=True,  # it writes to its data folder and the Secret folder alone
        network_mode="host",  # the controller listens on the host's loopback
        environment={"DOCKER_HOST": "unix:///run/engine.sock"},
        volumes={
            socket: {"bind": "/run/engine.sock", "mode": "rw"},
            str(tmp_path / "token"): {"bind": "/etc/hedgerow/token", "mode": "ro"},
            str(secrets_dir): {"bind": str(secrets_dir), "mode": "rw"},
            str(tmp_path / "agent"): {"bind": "/var/lib/hedgerow", "mode": "rw"},
        },
    )  # fmt: skip
    logs = ""
    try:
        wait(lambda: controller.containers() == {"1.0.0": "running"}, "deployed → running", 120)
        wait(lambda: controller.served() == "1", "the release serving")
        wait(lambda: controller.conditions().get("Ready") == "True", "Ready, as the agent reports")
        agent.reload()
        assert agent.status == "running"
        (made,) = client.containers.list(filters={"label": "hedgerow.deployment=web-pi-1"})
        assert made.image is not None and Images().v1 in made.image.tags
        code, read = made.exec_run(["cat", "/run/secrets/password"])
        assert code == 0 and read == PASSWORD.encode(), "the Secret file, from the host's tmpfs"
    finally:
        logs = stopped(agent)
        print(f"--- the agent container\n{logs[-3000:]}")
        docker_engine.remove_managed()
    assert "Traceback" not in logs and "warning" not in logs


# -- the controller -------------------------------------------------------------------------------


def test_the_controller_image_runs_hedgerow_as_a_non_root_user(
    docker_engine: DockerEngine, built: Built
) -> None:
    found = config(docker_engine, built.controller)
    assert found["Entrypoint"] == ["hedgerow"]
    assert found["User"] == f"{CONTROLLER_UID}:{CONTROLLER_UID}"
    client = docker_engine.client
    helped = client.containers.run(built.controller, ["--help"], network_mode="none", remove=True)
    assert isinstance(helped, bytes) and b"controller" in helped and b"validate" in helped
    who = client.containers.run(
        built.controller, ["-u"], entrypoint="id", network_mode="none", remove=True
    )
    assert who == f"{CONTROLLER_UID}\n".encode()


def test_the_controller_image_follows_a_mounted_repository(
    tmp_path: Path, docker_engine: DockerEngine, built: Built
) -> None:
    """The default command follows /repo (another user's files: git must accept them) and
    keeps its store in the image's data folder, where `hedgerow device token` finds it; with
    a read-only root filesystem and no capabilities, as a Kubernetes pod might run it."""
    repo = git.Repo.init(tmp_path / "fleet", initial_branch="main")
    write_tree(Path(repo.working_dir), {})
    commit(repo, "v1", fleet_manifests("1.0.0", "local/app:1"))
    http = free_port()
    command = config(docker_engine, built.controller)["Cmd"]
    assert isinstance(command, list)
    listen = [f"127.0.0.1:{http}" if part == "0.0.0.0:8080" else part for part in command]
    assert listen != command, "the default command listens on 0.0.0.0:8080"
    ran = docker_engine.client.containers.run(
        built.controller,
        listen,
        name="hedgerow-controller-test",
        detach=True,
        network_mode="host",
        volumes={str(repo.working_dir): {"bind": "/repo", "mode": "ro"}},
        read_only=True,  # it writes to its data folder alone
        tmpfs={"/var/lib/hedgerow": f"uid={CONTROLLER_UID},gid={CONTROLLER_UID},mode=0700"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        url = f"http://127.0.0.1:{http}"
        wait(lambda: healthy(url), "the controller in its container", 60)
        assert httpx.get(f"{url}/healthz").json()["revision"] == repo.head.commit.hexsha
        code, (out, err) = ran.exec_run(["hedgerow", "device", "token", "pi-1"], demux=True)
        assert code == 0, err
        assert isinstance(out, bytes) and out.decode().startswith("hdr_")
    finally:
        print(f"--- the controller container\n{stopped(ran)[-3000:]}")
