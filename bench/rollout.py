"""A rollout's cost to the controller, on a simulated fleet against the real `hedgerow
controller`: devices act as agents (tests/support/simulator.py) and report each release they
are given Ready.

It prints, for N devices (10,000 by default), one deployment by label selector:
- the controller's CPU time per status report while a new release goes to every device at
  once (the baseline, measured in the same run), and while the next one rolls out in three
  waves (a canary selector, 20%, the rest) with `maxInFlight: 5%` — and their ratio
  (target: within 2x);
- for each move from one wave to the next (`bakeSeconds: 0`), the time from the last Ready
  report of a wave to the first device of the next one answered its new document (target:
  under 1 s).

Run from the repository's root: `python -m bench.rollout`; `--postgres` runs it on a
throwaway PostgreSQL server.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from pathlib import Path

from bench.common import commit, cpu_seconds, make_repo, revision, settle, wait
from bench.fleet import Controller, issue_tokens
from reconciler.core.rollout import waves
from reconciler.manifests.model.deployment import Rollout
from reconciler.store import sqlite_url
from tests.support.postgres import new_server
from tests.support.simulator import Fleet, percentile, raise_open_files, simulated

VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
CANARY_EVERY = 100  # one device in a hundred is in the canary ring
ROLLOUT = {
    "waves": [
        {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}},
        {"name": "early", "percent": 20},
        {"name": "rest"},
    ],
    "maxInFlight": "5%",
    "bakeSeconds": 0,
}


def _rollout_yaml() -> str:
    return """\
  rollout:
    waves:
    - {name: canary, selector: {matchLabels: {ring: canary}}}
    - {name: early, percent: 20}
    - {name: rest}
    maxInFlight: 5%
    bakeSeconds: 0
"""


def deployment(version: str, rollout: bool) -> str:
    return f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: shop}}
spec:
  application: shop
  release: "{version}"
  selector: {{matchLabels: {{fleet: shops}}}}
  readiness: {{minReadySeconds: 0}}
{_rollout_yaml() if rollout else ""}"""


def labels(device: int) -> dict[str, str]:
    return {"fleet": "shops", "ring": "canary" if device % CANARY_EVERY == 0 else "main"}


def files(devices: int) -> dict[str, str]:
    found = {
        "app.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: shop}\n"
        ),
        "deployment.yaml": deployment(VERSIONS[0], rollout=False),
    }
    for version in VERSIONS:
        found[f"releases/{version}.yaml"] = f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: shop-{version.replace(".", "-")}}}
spec:
  application: shop
  version: "{version}"
  containers:
  - {{name: server, image: "local/shop:{version}"}}
"""
    for start in range(0, devices, 100):
        found[f"devices/{start // 100:04}.yaml"] = "---\n".join(
            f"apiVersion: hedgerow.dev/v1alpha1\nkind: Device\nmetadata:\n  name: dev-{d}\n"
            f"  labels: {{fleet: shops, ring: {labels(d)['ring']}}}\n"
            "spec: {systemModel: rpi4}\n"
            for d in range(start, min(devices, start + 100))
        )
    return found


def ready_on(fleet: Fleet, version: str) -> dict[str, float]:
    """device → when it first reported `version` Ready."""
    found = {}
    for device, reports in fleet.ready().items():
        times = [t for t, release in reports if release == version]
        if times:
            found[device] = min(times)
    return found


def reports_made(fleet: Fleet) -> int:
    return sum(len(reports) for reports in fleet.ready().values())


def upgrade(
    fleet: Fleet, controller: Controller, repo: Path, version: str, rollout: bool, devices: int
) -> tuple[float, int, float, str]:
    """Commit `version` and wait until every device reports it Ready: the controller's CPU
    seconds over that time (until it is idle again), the reports made, the wall time, and
    the commit."""
    pid = controller.pid()
    before, made = cpu_seconds(pid), reports_made(fleet)
    started = time.monotonic()
    sha = commit(repo, f"shop {version}", {"deployment.yaml": deployment(version, rollout)})
    controller.hook(sha)
    wait(lambda: len(ready_on(fleet, version)) == devices, 900, f"every device on {version}", 0.5)
    took = time.monotonic() - started
    settle([pid], 120)
    return cpu_seconds(pid) - before, reports_made(fleet) - made, took, sha


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2, help="simulator processes")
    parser.add_argument("--db", default=None, help="a PostgreSQL URL; default SQLite")
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL server of its own"
    )
    args = parser.parse_args()
    raise_open_files()
    names = [f"dev-{d}" for d in range(args.devices)]
    with tempfile.TemporaryDirectory(prefix="hb-rollout-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        db = args.db
        if args.postgres:
            server = new_server(stack.callback)
            db = server.url(server.create_database())
        repo = make_repo(work / "repo", files(args.devices))
        issued = issue_tokens(db or sqlite_url(work / "data-controller"), names)
        controller = Controller(repo, work, db)
        # no device goes quiet long enough to count as offline, however slow the machine
        controller.command += ["--offline-after", "3600"]
        stack.callback(controller.stop)
        controller.start()
        wait(lambda: revision(controller.url) is not None, 600, "the first apply", 0.2)
        settle([controller.pid()], 600)
        with simulated(
            controller.url, list(issued.items()), args.processes, wait=60, behaviours={}
        ) as fleet:
            fleet.hold()
            wait(lambda: len(ready_on(fleet, "1.0.0")) == args.devices, 900, "1.0.0", 0.5)
            settle([controller.pid()], 300)
            backend = "PostgreSQL" if db else "SQLite"
            print(f"devices: {args.devices} ({backend}), one deployment by label selector")

            cpu_a, made_a, took_a, _ = upgrade(fleet, controller, repo, "1.1.0", False, len(names))
            cpu_b, made_b, took_b, sha = upgrade(fleet, controller, repo, "1.2.0", True, len(names))
            per_a, per_b = cpu_a / made_a * 1e3, cpu_b / made_b * 1e3
            print(
                f"at once (baseline):  {took_a:6.1f} s, {made_a} reports, "
                f"{per_a:6.3f} ms of controller CPU a report"
            )
            print(
                f"rolled out, 3 waves: {took_b:6.1f} s, {made_b} reports, "
                f"{per_b:6.3f} ms of controller CPU a report"
            )
            print(f"CPU a report, rollout / baseline: {per_b / per_a:5.2f}x  (target <= 2x)")

            targets = {name: labels(int(name.removeprefix("dev-"))) for name in names}
            plan = waves(Rollout.model_validate(ROLLOUT), targets)
            ready = ready_on(fleet, "1.2.0")
            moved = {
                device: min(t for t, r in docs if r == sha)
                for device, docs in fleet.seen().items()
                if any(r == sha for _, r in docs)
            }
            gaps = []
            for done, following in itertools.pairwise(plan):
                last_ready = max(ready[d] for d in done.devices)
                first_move = min(moved[d] for d in following.devices)
                gaps.append(first_move - last_ready)
                print(
                    f"wave {done.name} ({len(done.devices)}) → {following.name} "
                    f"({len(following.devices)}): last Ready report to first new document "
                    f"{(first_move - last_ready) * 1000:7.1f} ms  (target < 1 s)"
                )
            rounds = [moved[d] - min(moved.values()) for d in moved]
            print(f"moves after the commit: p50 {percentile(rounds, 0.5):5.1f} s, last "
                  f"{max(rounds):5.1f} s")  # fmt: skip
            errors = fleet.errors()
            if errors:
                print(f"{len(errors)} failed requests, the first: {errors[0]}")
            met = per_b / per_a <= 2 and all(g < 1 for g in gaps) and not errors
            print("targets met" if met else "TARGETS MISSED")
            return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
