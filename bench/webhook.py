"""Commit → new desired document at a long-polling device, through the webhook.

A real `hedgerow controller` process follows a git repository; a device long-polls its desired
document with If-None-Match. Each round commits a new release, POSTs the signed webhook and
measures the time from the commit until the long poll returns the new document. The baseline,
measured in the same run, is the commit alone (`git commit`, the part outside the controller).
Target: every round (the max) under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import commit, controller, make_repo
from tests.support.fleet import fleet_manifests

TARGET = 1.0
DEVICE = "pi-1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    latencies: list[float] = []
    commits: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = make_repo(work / "repo", fleet_manifests("1.0.0"))
        with controller(repo, work) as ctl, httpx.Client(timeout=70) as client:
            auth = {"Authorization": f"Bearer {ctl.token(DEVICE)}"}
            url = f"{ctl.url}/v1/devices/{DEVICE}/desired"
            tag = client.get(url, headers=auth).raise_for_status().headers["etag"]
            for n in range(1, args.rounds + 1):
                version = f"1.{n}.0"
                answer: list[httpx.Response] = []
                returned: list[float] = []

                def poll(
                    etag: str = tag, got: list[httpx.Response] = answer, at: list[float] = returned
                ) -> None:
                    headers = {**auth, "If-None-Match": etag}
                    got.append(client.get(url, params={"wait": 60}, headers=headers))
                    at.append(time.perf_counter())

                poller = threading.Thread(target=poll)
                poller.start()
                time.sleep(0.3)  # the long poll is waiting in the controller
                start = time.perf_counter()
                sha = commit(repo, f"release {version}", fleet_manifests(version))
                commits.append(time.perf_counter() - start)
                ctl.hook(sha)
                poller.join(70)
                (response,) = answer
                assert response.status_code == 200, response.status_code
                assert f'"{version}"' in response.text, f"{version} not in the document"
                latencies.append(returned[0] - start)
                tag = response.headers["etag"]
    median, worst = statistics.median(latencies), max(latencies)
    print(f"rounds:               {args.rounds}")
    print(f"git commit (median):  {statistics.median(commits) * 1000:8.1f} ms")
    print(f"commit → document:    {median * 1000:8.1f} ms median, {worst * 1000:.1f} ms max")
    print(f"ratio to the commit:  {median / statistics.median(commits):8.1f}x (median)")
    print(f"target:               max < {TARGET * 1000:.0f} ms")
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
