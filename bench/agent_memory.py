"""Resident memory of an idle agent, installed alone as on a device (`pip install hedgerow` into
a new virtual environment: msgspec, requests, docker and structlog, nothing of the controller's),
against a real controller process, its device running one small deployment on a private dockerd
(root only: skipped otherwise).

Once the container runs and a few polls have passed, VmRSS is read from /proc/PID/status; the
baseline, in the same run, is a bare `python -c "import time; time.sleep(60)"`.
Target: the agent at most 40 MiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    agent_venv,
    busybox_image,
    controller,
    dockerd,
    engine_unavailable,
    make_repo,
    rss_kib,
    stop,
    wait,
)
from tests.support.fleet import fleet_manifests

TARGET_MIB = 40.0
DEVICE = "pi-1"
IMAGE = "local/sleeper:1"


def running(host: str) -> bool:
    import docker

    client = docker.DockerClient(base_url=host)
    try:
        found = client.containers.list(filters={"label": "hedgerow.deployment=web-pi-1"})
        return len(found) == 1
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading")
    args = parser.parse_args()
    why = engine_unavailable()
    if why is not None:
        print(f"agent memory: SKIPPED ({why})")
        return 0
    baseline = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with tempfile.TemporaryDirectory() as tmp, dockerd() as engine:
        work = Path(tmp)
        hedgerow_agent = agent_venv(work / "venv")
        busybox_image(engine, IMAGE)
        repo = make_repo(work / "repo", fleet_manifests("1.0.0", IMAGE))
        with controller(repo, work) as ctl:
            token_file = work / "token"
            token_file.write_text(ctl.token(DEVICE))
            log = (work / "agent.log").open("wb")
            agent = subprocess.Popen(
                [str(hedgerow_agent), "--controller", ctl.url, "--device", DEVICE,
                 "--token-file", str(token_file), "--data-dir", str(work / "agent"),
                 "--poll-interval", "2s"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "DOCKER_HOST": engine.host},
            )  # fmt: skip
            try:
                wait(lambda: running(engine.host), 120, "the container running", 0.5)
                time.sleep(args.idle)  # several polls and reports: the agent is idle
                assert agent.poll() is None, (work / "agent.log").read_text()
                samples = []
                for _ in range(5):
                    samples.append(rss_kib(agent.pid))
                    time.sleep(0.5)
                agent_kib = max(samples)
                base_kib = rss_kib(baseline.pid)
            finally:
                stop(agent)
                log.close()
    stop(baseline)
    agent_mib, base_mib = agent_kib / 1024, base_kib / 1024
    print(f"bare python (sleep):  {base_mib:8.1f} MiB VmRSS")
    print(f"idle agent:           {agent_mib:8.1f} MiB VmRSS  (target <= {TARGET_MIB:.0f} MiB)")
    print(f"ratio:                {agent_mib / base_mib:8.1f}x the bare interpreter")
    return 0 if agent_mib <= TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
