"""Real stacks, compose against Hedgerow on one engine: each of five real compose files
(tests/compose, CC0) is brought up by Debian's docker-compose, then imported with `hedgerow
import compose` and deployed by the agent; every service's two containers must agree in
`docker inspect` on what tests/test_compose_parity.py compares (command, entrypoint, user,
env, healthcheck, sysctls, ulimits, restart policy, mounts, addresses, labels, ...).

Each stack is copied to a temporary folder first: compose and the import resolve relative binds
against the file's folder, and Docker makes a missing bind source as an empty folder. Images are
local busybox imports tagged with the names the stack uses, running whatever they are given.
(pihole-cloudflared-DoH publishes port 53 on every address: it is imported and validated by
tests/test_import_compose.py, not brought up here.) A missing absolute bind source, which
Docker makes as an empty folder on the host, is removed again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml
from typer.testing import CliRunner

from agent.converge import converge
from agent.engine import Engine
from agent.steps import MANAGED
from reconciler.cli.app import app
from reconciler.core.desired import desired_fleet
from reconciler.core.document import Applied, desired_document
from reconciler.demo import images as demo_images
from reconciler.manifests.load import read_tree
from reconciler.manifests.validate import validate_files
from tests.support.docker import DockerEngine
from tests.test_compose_parity import compared

pytestmark = pytest.mark.e2e

STACKS = Path(__file__).parent / "compose"
BROUGHT_UP = [
    "elasticsearch-logstash-kibana",
    "gitea-postgres",
    "nextcloud-redis-mariadb",
    "prometheus-grafana",
    "wireguard",
]
IDENTITY = pyrage.x25519.Identity.generate()
KEEP_RUNNING = 'ENTRYPOINT ["sh", "-c", "trap \'exit 0\' TERM; sleep 1000000 & wait", "--"]'
DEVICE = "apiVersion: hedgerow.dev/v1alpha1\nkind: Device\nmetadata: {name: pi-1}\nspec: {systemModel: rpi4}\n"  # noqa: E501


def by_service(docker_engine: DockerEngine, label: str) -> dict[str, dict[str, Any]]:
    api = docker_engine.client.api
    found = api.containers(all=True, filters={"label": label})
    return {
        c["Labels"].get("com.docker.compose.service") or c["Labels"]["hedgerow.container"]:
        api.inspect_container(c["Id"]) for c in found
    }  # fmt: skip


def absent_bind_sources(services: dict[str, Any]) -> list[Path]:
    """The topmost missing folder of each absolute bind source (wireguard's
    /usr/share/appdata/...): Docker makes them, and the test removes them afterwards."""
    found = []
    for service in services.values():
        for entry in service.get("volumes") or []:
            source = str(entry).split(":")[0]
            if not source.startswith("/"):
                continue
            path = Path(source)
            top = None
            while not path.exists():
                top, path = path, path.parent
            if top is not None:
                found.append(top)
    return found


@pytest.mark.parametrize("stack", BROUGHT_UP)
def test_a_real_stack_runs_the_same_under_compose_and_hedgerow(
    tmp_path: Path, docker_engine: DockerEngine, stack: str
) -> None:
    compose = shutil.which("docker-compose")
    assert compose is not None, "docker-compose is missing: tests/system-deps.sh installs it"
    folder = tmp_path / stack
    shutil.copytree(STACKS / stack, folder)
    file = folder / "compose.yaml"
    services = yaml.safe_load(file.read_text())["services"]
    images = sorted({str(s["image"]) for s in services.values()})
    made_by_docker = absent_bind_sources(services)
    tar = demo_images.rootfs_tar(demo_images.busybox(), "stack")
    for image in images:
        docker_engine.engine.import_image(image if ":" in image else f"{image}:latest", tar,
                                          KEEP_RUNNING)  # fmt: skip
    api = docker_engine.client.api
    image_env = set(api.inspect_image(images[0])["Config"].get("Env") or [])  # type: ignore[no-untyped-call]
    env = {**os.environ, "DOCKER_HOST": docker_engine.host}
    run = [compose, "-p", "stack", "-f", str(file)]
    try:
        up = subprocess.run([*run, "up", "-d"], env=env, capture_output=True, text=True,
                            timeout=180, cwd=folder)  # fmt: skip
        assert up.returncode == 0, up.stderr
        theirs = by_service(docker_engine, "com.docker.compose.project=stack")
    finally:
        subprocess.run([*run, "down", "-v"], env=env, capture_output=True, timeout=120, cwd=folder)

    out = tmp_path / "manifests"
    imported = CliRunner().invoke(
        app,
        ["import", "compose", str(file), "--device", "pi-1", "-o", str(out),
         "--age", str(IDENTITY.to_public())],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    (out / "device.yaml").write_text(DEVICE)
    report = validate_files(read_tree(out), [IDENTITY])
    assert report.errors == []
    desired = desired_document(
        Applied("a" * 40, report, desired_fleet(report.catalog)), "pi-1", set(), "r"
    )
    engine = Engine(docker_engine.client, device="pi-1", stop_timeout=2)
    engine.hold_secrets(desired.secrets)
    try:
        deadline = time.monotonic() + 90
        while True:
            outcome = converge(engine, desired)
            assert outcome.ok, [f.message for f in outcome.failures]
            if {c.container for c in engine.read().containers if c.up} == set(services):
                break
            assert time.monotonic() < deadline, "every service running"
            time.sleep(0.5)
        ours = by_service(docker_engine, f"{MANAGED}=true")
    finally:
        docker_engine.remove_managed()
        for image in images:
            api.remove_image(image, force=True)
        for path in made_by_docker:  # Docker makes a missing bind source: not left behind
            shutil.rmtree(path, ignore_errors=True)

    assert sorted(ours) == sorted(theirs) == sorted(services)
    for service in services:
        assert compared(ours[service], image_env) == compared(theirs[service], image_env), service
