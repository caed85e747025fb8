"""Apply: the agent bringing up a release of 3 containers (one depending on another) on one
network with one volume, from local images, against `docker-compose up -d` of the same containers
on the same engine, measured in the same run (median of several alternating rounds).

Both are timed until their containers are started. The agent then goes on watching them for its
start grace (`Engine(start_grace=...)`, 1 s) without holding up the pass, to switch back a release
that crashes at once; the bench waits that out (untimed) and checks nothing crashed.
Target: the agent at most 1.2x docker-compose.

Needs root (it starts a private dockerd, vfs storage, no iptables) and Debian's `docker-compose`;
prints SKIPPED and exits 0 without root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

from agent.converge import converge
from agent.engine import Engine
from agent.steps import MANAGED
from reconciler.demo.engine import Engine as DockerEngine
from reconciler.demo.engine import start_dockerd
from reconciler.demo.images import busybox, rootfs_tar
from reconciler.wire import Container, Deployment, DesiredDocument, Mount, Network, Volume

TARGET = 1.2
SLEEP_CMD = """CMD ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]"""
IMAGES = {"db": "local/db:1", "api": "local/api:1", "web": "local/web:1"}
DEPENDS = {"db": [], "api": ["db"], "web": []}
NETWORK, VOLUME = "benchnet", "benchdata"


def desired() -> DesiredDocument:
    containers = [
        Container(
            name=name,
            image=image,
            restart_policy="no",
            networks=[NETWORK],
            volumes=[Mount(volume=VOLUME, target="/data")] if name == "db" else [],
            depends_on=DEPENDS[name],
        )
        for name, image in IMAGES.items()
    ]
    deployment = Deployment(
        deployment="bench",
        application="bench",
        release="1.0.0",
        state="Running",
        digest="d",
        containers=containers,
        networks=[Network(name=NETWORK)],
        volumes=[Volume(name=VOLUME)],
    )
    return DesiredDocument(device="bench", revision="r1", deployments=[deployment])


def compose_file() -> str:
    lines = ['version: "2.4"', "services:"]
    for name, image in IMAGES.items():
        lines += [f"  {name}:", f"    image: {image}", '    restart: "no"']
        lines += [f"    networks: [{NETWORK}]"]
        if name == "db":
            lines += [f'    volumes: ["{VOLUME}:/data"]']
        if DEPENDS[name]:
            lines += [f"    depends_on: [{', '.join(DEPENDS[name])}]"]
    lines += ["networks:", f"  {NETWORK}: {{}}", "volumes:", f"  {VOLUME}: {{}}"]
    return "\n".join(lines) + "\n"


def running(client: docker.DockerClient, filters: dict[str, str]) -> int:
    listed = client.api.containers(filters={**filters, "status": "running"})
    return len(listed)


def clean_agent(client: docker.DockerClient) -> None:
    """Remove everything the agent made (outside the timing)."""
    api = client.api
    for container in api.containers(all=True, filters={"label": f"{MANAGED}=true"}):
        api.remove_container(container["Id"], force=True, v=True)
    api.remove_network(NETWORK)
    api.remove_volume(VOLUME)


def median(times: list[float]) -> float:
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("SKIPPED: starting a private dockerd needs root")
        return 0
    compose = shutil.which("docker-compose")
    if compose is None:
        print("SKIPPED: docker-compose not found (Debian's docker-compose)")
        return 0
    engine = start_dockerd("hb-")
    try:
        return measure(engine, compose, args.rounds)
    finally:
        engine.stop()


def measure(engine: DockerEngine, compose: str, rounds: int) -> int:
    client = docker.DockerClient(base_url=engine.host, timeout=120)
    tar = rootfs_tar(busybox(), "1")
    for image in IMAGES.values():
        engine.import_image(image, tar, SLEEP_CMD)
    document = desired()
    env = {**os.environ, "DOCKER_HOST": engine.host}
    work = Path(tempfile.mkdtemp(prefix="hb-compose-"))
    (work / "compose.yml").write_text(compose_file())
    counter = [0]

    def agent() -> float:
        engine = Engine(client, device=document.device)
        start = time.perf_counter()
        outcome = converge(engine, document)
        elapsed = time.perf_counter() - start
        assert outcome.ok, outcome.failures
        up = running(client, {"label": f"{MANAGED}=true"})
        assert up == len(IMAGES), f"{up} of {len(IMAGES)} containers running"
        while (wait := engine.next_check()) is not None:  # the start check, untimed
            time.sleep(wait)
            assert engine.failed_starts() == []
        clean_agent(client)
        return elapsed

    def docker_compose() -> float:
        counter[0] += 1
        project = f"bench{counter[0]}"
        command = [compose, "-p", project, "-f", str(work / "compose.yml")]
        start = time.perf_counter()
        subprocess.run([*command, "up", "-d"], env=env, cwd=work, check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        up = running(client, {"label": f"com.docker.compose.project={project}"})
        assert up == len(IMAGES), f"{up} of {len(IMAGES)} compose containers running"
        subprocess.run([*command, "down", "-v"], env=env, cwd=work, check=True, capture_output=True)
        return elapsed

    runs: dict[str, Callable[[], float]] = {"agent": agent, "compose": docker_compose}
    try:
        for run in runs.values():  # warm-up: imports, first container on the network
            run()
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(rounds):
            for key, run in runs.items():
                times[key].append(run())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    agent_time, compose_time = (median(times[k]) for k in runs)
    ratio = agent_time / compose_time
    print(f"release: {len(IMAGES)} containers, 1 network, 1 volume, local images; {rounds} rounds")
    rows = [
        ("docker-compose up -d", f"{compose_time * 1000:8.1f} ms (median)"),
        ("agent pass", f"{agent_time * 1000:8.1f} ms (median)"),
        ("ratio", f"{ratio:8.2f}x  (target <= {TARGET}x)"),
    ]
    for label, value in rows:
        print(f"{label + ':':<30}{value}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
