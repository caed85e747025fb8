"""The dashboard at fleet size: a real `hedgerow controller` process following a repository of
10,000 devices, asked over HTTP for the devices page (a page of 50, filtered by label) and the
overview, each beside the operator API's JSON answering the same query in the same run, so the
template layer's cost shows as a ratio. Targets: each page under 100 ms (the median, and the
95th percentile printed beside it)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import controller, make_repo
from tests.support.fleet import fleet_manifests

TARGET_MS = 100.0
OPERATOR = "hdr_bench-operator-token"
SITES = ("lyon", "nantes", "paris")


def manifests(devices: int) -> dict[str, str]:
    """The one-container fleet, its devices 100 a file, deployed by selector to site=lyon."""
    files = fleet_manifests("1.0.0")
    del files["device.yaml"]
    for group in range(0, devices, 100):
        files[f"devices/{group // 100:03d}.yaml"] = "".join(
            f"---\napiVersion: hedgerow.dev/v1alpha1\nkind: Device\nmetadata:\n"
            f"  name: d-{n:05d}\n  labels: {{site: {SITES[n % 3]}}}\n"
            f"spec: {{systemModel: {'rpi4' if n % 2 else 'orin'}}}\n"
            for n in range(group, min(group + 100, devices))
        )
    files["deployment.yaml"] = (
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Deployment\nmetadata: {name: web-lyon}\n"
        "spec: {application: web, release: '1.0.0', selector: {matchLabels: {site: lyon}},"
        " state: Running}\n"
    )
    return files


def timed(client: httpx.Client, url: str, rounds: int, **kwargs: object) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        answer = client.get(url, **kwargs)  # type: ignore[arg-type]
        times.append((time.perf_counter() - start) * 1000)
        answer.raise_for_status()
    return times


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "operator").write_text(OPERATOR + "\n")
        repo = make_repo(work / "repo", manifests(args.devices))
        flags = ("--operator-token-file", str(work / "operator"))
        started = controller(repo, work, *flags, ready_within=300)
        with started as ctl, httpx.Client(timeout=30) as client:
            login = client.post(f"{ctl.url}/login", data={"token": OPERATOR, "next": "/"})
            assert login.status_code in (200, 303), login.text
            bearer = {"Authorization": f"Bearer {OPERATOR}"}
            pairs = {
                "devices page, label site=lyon, page 2 of 50": (
                    f"{ctl.url}/devices?label=site%3Dlyon&page=2",
                    f"{ctl.url}/v1/devices?label=site%3Dlyon&page=2",
                ),
                "overview": (f"{ctl.url}/", f"{ctl.url}/v1/overview"),
            }
            for page, _ in pairs.values():  # the rows are built once, then kept current
                client.get(page).raise_for_status()
            time.sleep(2)
            print(f"dashboard, {args.devices:,} devices, {args.rounds} requests each "
                  "(ms: median, p95)")  # fmt: skip
            failed = False
            for name, (page, api) in pairs.items():
                html = timed(client, page, args.rounds)
                json = timed(client, api, args.rounds, headers=bearer)
                median = statistics.median(html)
                ok = median < TARGET_MS and p95(html) < 2 * TARGET_MS
                failed |= not ok
                print(
                    f"  {name}: page {median:.1f} / {p95(html):.1f}; JSON API "
                    f"{statistics.median(json):.1f} / {p95(json):.1f}; page ÷ API "
                    f"{median / statistics.median(json):.2f}; target < {TARGET_MS:.0f} ms: "
                    f"{'met' if ok else 'MISSED'}"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
