"""Parity with compose, measured on the engine: one service using every container field Hedgerow
takes from compose is created by Debian's docker-compose and by the agent, on the same engine,
and the two containers' `docker inspect` must say the same.

`volumeDriver`, which compose files of version 2.2 and later no longer take, is checked on the
agent's container alone. The compose side runs first and is taken down before the agent's (a
fixed subnet can exist once on an engine). Names differ by design (compose's `parity_app_1`,
the agent's per device), so labels are compared without each tool's own, and mounts and
networks by what they are, not by the names of the volumes and networks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from agent.converge import converge
from agent.engine import Engine
from agent.steps import MANAGED
from reconciler.core.desired import desired_fleet
from reconciler.core.document import Applied, desired_document
from reconciler.manifests.validate import validate_files
from tests.support.docker import DockerEngine, Images

pytestmark = pytest.mark.e2e

SUBNET, ADDRESS = "10.254.7.0/24", "10.254.7.10"
RUN = "trap 'exit 0' INT TERM; sleep 1000000 & wait"

COMPOSE = f"""
version: "2.4"
services:
  db:
    image: IMAGE
    restart: "no"
    healthcheck: {{test: ["CMD", "sh", "-c", "exit 0"], interval: 1s, retries: 3}}
    networks: [front]
  job:
    image: IMAGE
    restart: "no"
    entrypoint: ["sh", "-c", "exit 0"]
  app:
    image: IMAGE
    entrypoint: ["sh", "-c", "{RUN}", "--"]
    command: serve --port "8080"
    user: "1000:1000"
    working_dir: /srv
    group_add: ["2000"]
    environment: {{GREETING: hello}}
    labels: {{org.example.team: edge}}
    tty: true
    init: true
    sysctls: {{net.core.somaxconn: 1024}}
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}, nproc: 512}}
    security_opt: ["no-new-privileges:true"]
    shm_size: 64m
    stop_signal: SIGINT
    stop_grace_period: 5s
    dns: [192.0.2.53]
    dns_search: [example.internal]
    pid: host
    ipc: shareable
    logging: {{driver: local, options: {{max-size: 10m}}}}
    restart: on-failure:3
    healthcheck:
      test: ["CMD-SHELL", "test -d /srv"]
      interval: 2s
      timeout: 1s
      retries: 2
      start_period: 1s
    volumes: ["data:/data:ro", "cache:/cache"]
    networks:
      front: {{ipv4_address: {ADDRESS}, aliases: [api]}}
    depends_on:
      db: {{condition: service_healthy}}
      job: {{condition: service_completed_successfully}}
networks:
  front:
    ipam: {{config: [{{subnet: {SUBNET}, gateway: 10.254.7.1}}]}}
volumes:
  data: {{}}
  cache: {{}}
"""

RELEASE = f"""
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: parity-1-0-0}}
spec:
  application: parity
  version: "1.0.0"
  containers:
  - name: db
    image: IMAGE
    restartPolicy: "no"
    healthcheck: {{test: ["CMD", "sh", "-c", "exit 0"], interval: 1s, retries: 3}}
    networks: [front]
  - name: job
    image: IMAGE
    restartPolicy: "no"
    entrypoint: ["sh", "-c", "exit 0"]
  - name: app
    image: IMAGE
    entrypoint: ["sh", "-c", "{RUN}", "--"]
    command: serve --port "8080"
    user: "1000:1000"
    workingDir: /srv
    groupAdd: ["2000"]
    env: {{GREETING: hello}}
    labels: {{org.example.team: edge}}
    tty: true
    init: true
    sysctls: {{net.core.somaxconn: 1024}}
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}, nproc: 512}}
    securityOpt: ["no-new-privileges:true"]
    shmSize: 64Mi
    stopSignal: SIGINT
    stopGracePeriod: 5s
    dns: [192.0.2.53]
    dnsSearch: [example.internal]
    pidMode: host
    ipcMode: shareable
    logging: {{driver: local, options: {{max-size: 10m}}}}
    restartPolicy: on-failure
    maxRetries: 3
    volumeDriver: local
    healthcheck:
      test: ["CMD-SHELL", "test -d /srv"]
      interval: 2s
      timeout: 1s
      retries: 2
      startPeriod: 1s
    volumes: [{{volume: data, target: /data, readOnly: true}}, {{volume: cache, target: /cache}}]
    networks: [{{network: front, ipv4Address: {ADDRESS}, aliases: [api]}}]
    dependsOn:
      db: {{condition: healthy}}
      job: {{condition: completedSuccessfully}}
"""

REPOSITORY = {
    "app.yaml": "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: parity}\n",
    "network.yaml": f"""
apiVersion: hedgerow.dev/v1alpha1
kind: Network
metadata: {{name: front}}
spec: {{ipam: [{{subnet: {SUBNET}, gateway: 10.254.7.1}}]}}
""",
    "volumes.yaml": """
apiVersion: hedgerow.dev/v1alpha1
kind: Volume
metadata: {name: data}
---
apiVersion: hedgerow.dev/v1alpha1
kind: Volume
metadata: {name: cache}
""",
    "device.yaml": """
apiVersion: hedgerow.dev/v1alpha1
kind: Device
metadata: {name: pi-1}
spec: {systemModel: rpi4}
""",
    "deployment.yaml": """
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {name: parity}
spec: {application: parity, release: "1.0.0", device: pi-1, state: Running}
""",
}

CONFIG = ["Cmd", "Entrypoint", "User", "WorkingDir", "Healthcheck", "Tty", "StopSignal"]
CONFIG += ["StopTimeout"]
HOST = ["Sysctls", "Ulimits", "SecurityOpt", "ShmSize", "Init", "LogConfig", "Dns", "DnsSearch"]
HOST += ["RestartPolicy", "GroupAdd", "PidMode", "IpcMode"]
OWN_LABELS = ("com.docker.compose.", "hedgerow.")


def compared(info: dict[str, Any], image_env: set[str]) -> dict[str, Any]:
    """What must be equal, from one container's `docker inspect`."""
    config, host = info["Config"], info["HostConfig"]
    networks = info["NetworkSettings"]["Networks"]
    policy = dict(host.get("RestartPolicy") or {})
    policy["Name"] = policy.get("Name") or "no"  # Docker's "" is "no", which Hedgerow writes
    return {
        **{key: config.get(key) for key in CONFIG},
        **{key: host.get(key) for key in HOST},
        "RestartPolicy": policy,
        "Env": sorted(set(config.get("Env") or []) - image_env),
        "Labels": {
            k: v for k, v in (config.get("Labels") or {}).items() if not k.startswith(OWN_LABELS)
        },
        "Mounts": sorted(
            (m["Type"], m["Destination"], m["RW"], m.get("Driver")) for m in info["Mounts"]
        ),
        "Addresses": sorted(
            ((n.get("IPAMConfig") or {}).get("IPv4Address"), "api" in (n.get("Aliases") or []))
            for n in networks.values()
        ),
    }


def inspect_all(docker_engine: DockerEngine, label: str) -> dict[str, dict[str, Any]]:
    api = docker_engine.client.api
    found = api.containers(all=True, filters={"label": label})
    return {c["Labels"].get("com.docker.compose.service") or c["Labels"]["hedgerow.container"]:
            api.inspect_container(c["Id"]) for c in found}  # fmt: skip


def wait_for(check: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_every_compose_field_makes_the_same_container_as_docker_compose(
    tmp_path: Path, docker_engine: DockerEngine, images: Images
) -> None:
    compose = shutil.which("docker-compose")
    assert compose is not None, "docker-compose is missing: tests/system-deps.sh installs it"
    image = images.sleeper
    found: dict[str, Any] = docker_engine.client.api.inspect_image(image)  # type: ignore[no-untyped-call]
    image_env = set(found["Config"].get("Env") or [])
    (tmp_path / "compose.yaml").write_text(COMPOSE.replace("IMAGE", image))
    run = [compose, "-p", "parity", "-f", str(tmp_path / "compose.yaml")]
    env = {**os.environ, "DOCKER_HOST": docker_engine.host}
    up = subprocess.run([*run, "up", "-d"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        theirs = inspect_all(docker_engine, "com.docker.compose.project=parity")
    finally:
        subprocess.run([*run, "down", "-v"], env=env, capture_output=True, timeout=120)

    files = {**REPOSITORY, "release.yaml": RELEASE.replace("IMAGE", image)}
    report = validate_files([(p, dedent(t).encode()) for p, t in files.items()])
    assert report.valid, [p.render() for p in report.errors]
    applied = Applied("a" * 40, report, desired_fleet(report.catalog))
    desired = desired_document(applied, "pi-1", set(), "r")
    engine = Engine(docker_engine.client, device="pi-1", stop_timeout=2)
    try:

        def app_running() -> bool:
            outcome = converge(engine, desired)
            assert outcome.ok, [f.message for f in outcome.failures]
            return any(c.container == "app" and c.up for c in engine.read().containers)

        wait_for(app_running, "the agent to start app once db is healthy and job completed")
        ours = inspect_all(docker_engine, f"{MANAGED}=true")
    finally:
        docker_engine.remove_managed()

    assert sorted(ours) == sorted(theirs) == ["app", "db", "job"]
    for service in ("app", "db", "job"):
        assert compared(ours[service], image_env) == compared(theirs[service], image_env), service
    app = compared(ours["app"], image_env)
    assert app["Cmd"] == ["serve", "--port", "8080"], "a string command split as compose does"
    # compose 2.x files no longer take volume_driver (Edgehog's field): Docker's own check
    assert ours["app"]["HostConfig"]["VolumeDriver"] == "local"
    assert app["Addresses"] == [(ADDRESS, True)]
    assert ours["job"]["State"]["ExitCode"] == 0
    for side in (ours, theirs):  # both start app only once job has completed
        assert side["app"]["State"]["StartedAt"] >= side["job"]["State"]["FinishedAt"]
