"""`hedgerow demo --once` for real: registry, controller and four agent processes on the tests'
engine.

The demo is run as a separate process, as `make demo` runs it, with DOCKER_HOST naming the
session's dockerd so that it does not start a second one. It must bring its four devices to
Ready on the one engine, each with its own containers, with the private image pulled through the
registry with the credential the controller forwarded, and leave nothing behind: no process, no
container, network or volume of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.demo.daemons import port_taken
from tests.support.docker import DockerEngine

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
PULLED = re.compile(r"authorized request.* http\.request\.method=(GET|HEAD) .*"
                    r"http\.request\.uri=/v2/hedgerow/telemetry/manifests/1\.0\.0")  # fmt: skip


def _managed(engine: DockerEngine) -> dict[str, set[str]]:
    api, label = engine.client.api, {"label": "hedgerow.managed=true"}
    return {
        "containers": {c["Id"] for c in api.containers(all=True, filters=label)},
        "networks": {n["Id"] for n in api.networks(filters=label)},
        "volumes": {v["Name"] for v in (api.volumes(filters=label).get("Volumes") or [])},
    }


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(f"{cmdline.parent.name}: {args}")
    return found


DEVICES = ("lyon-orin-01", "lyon-rpi4-01", "lyon-rpi4-02", "lyon-rpi4-03")


def test_demo_once_deploys_four_devices_on_one_engine_and_leaves_nothing_running(
    tmp_path: Path, docker_engine: DockerEngine
) -> None:
    if port_taken(5000):
        pytest.fail(
            "127.0.0.1:5000 is in use: the demo's example credential is for the registry "
            "127.0.0.1:5000, so the demo test needs that port free",
            pytrace=False,
        )
    before = _managed(docker_engine)
    folder = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo", "--once", "--refresh", "2",
         "--manifests", str(MANIFESTS), "--dir", str(folder), "--timeout", "240"],
        env={**os.environ, "DOCKER_HOST": docker_engine.host},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    for device in DEVICES:
        assert f"{device} is Ready" in output, output
    assert "the agents pulled 127.0.0.1:5000/hedgerow/telemetry:1.0.0 as user demo" in output
    assert re.search(
        r"dashboard on http://127\.0\.0\.1:\d+/ : log in with the viewer token hdr_", output
    )
    assert 'git commit -am "telemetry 1.1.0 in Lyon"' in output and str(folder / "repo") in output
    assert 'git commit -am "telemetry 1.2.0 in Lyon"' in output

    # The controller's store, read after the demo ended, agrees.
    status = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "-o", "json",
         "--data-dir", str(folder / "controller")],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deployments: list[dict[str, Any]] = json.loads(status.stdout)["deployments"]
    telemetry = {d["device"]: d for d in deployments if d["deployment"] == "telemetry-lyon"}
    assert sorted(telemetry) == list(DEVICES)
    for found in telemetry.values():
        assert found["observedRelease"] == "1.0.0"
        assert {c["type"]: c["status"] for c in found["conditions"]}["Ready"] == "True"

    # The device pulled the private image with the login (the registry logs authorized requests).
    registry_log = (folder / "registry" / "registry.log").read_text(errors="replace")
    assert PULLED.search(registry_log), registry_log[-3000:]

    # Nothing new is left; the demo's agent may have removed leftovers of earlier tests, as any
    # agent removes what Hedgerow manages on its engine and no deployment wants.
    after = _managed(docker_engine)
    left = {kind: after[kind] - before[kind] for kind in after if after[kind] - before[kind]}
    assert left == {}, "the demo left containers, networks or volumes behind"
    assert _processes_mentioning(str(folder)) == []


def _bridges() -> set[str]:
    return {link.name for link in Path("/sys/class/net").iterdir() if link.name.startswith("br-")}


def test_a_private_dockerd_has_networks_to_spare_and_leaves_no_bridge_behind() -> None:
    """The demo's and the tests' own dockerd: Docker's default pools hold 31 networks for the
    whole host, and bridges outlive a stopped daemon; ours must make more and leave none."""
    import docker

    from reconciler.demo.engine import start_dockerd

    before = _bridges()
    engine = start_dockerd()
    try:
        client = docker.DockerClient(base_url=engine.host)
        try:
            for n in range(40):
                client.networks.create(f"spare-{n}", driver="bridge")
            assert len(_bridges() - before) == 40
        finally:
            client.close()
    finally:
        engine.stop()
    assert _bridges() - before == set()
