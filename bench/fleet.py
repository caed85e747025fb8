"""A simulated fleet against the real `hedgerow controller`: devices that hold long polls with
their ETags over raw HTTP/1.1 and send status reports (tests/support/simulator.py), on the
repository layout of bench/plan.py (three deployments per device, one by label selector).

It prints, for N devices:
- fan-out: a commit that changes every device's document → each long-polling device's 200
  (p50, p99, max, and how many were not answered within 75 s);
- reports: converged reports with one event at an offered rate → achieved rate and p50/p99;
- memory: the controller's RSS with the fleet and no connection, and per held long poll;
- start-up: a restart until a device holding its ETag is answered.

Run from the repository's root: `python -m bench.fleet --devices 1000`; `--postgres` runs it
on a throwaway PostgreSQL server, and `--replicas 3` on three controller processes sharing it
(the simulated devices spread over them, failing over as agents do).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import commit, make_repo, revision, rss_kib, settle, stop, wait
from bench.plan import GROUP, repository
from reconciler.demo.daemons import free_port
from reconciler.secrets import tokens
from reconciler.server.connections import default_max_connections
from reconciler.server.webhook import sign
from reconciler.store import Store, sqlite_url
from tests.support.postgres import new_server
from tests.support.simulator import Fleet, percentile, raise_open_files, simulated

SECRET = b"bench-fleet-secret"


def files(devices: int, a0: str = "1.0.0", a2: str = "1.0.0") -> dict[str, str]:
    """The repository, with every device's own a0 deployment at release `a0`, and every
    group's a2 deployment (by label selector) at `a2`."""
    out = {}
    for path, content in repository(devices, None):
        text = content.decode()
        if path.startswith("deployments/a0/"):
            text = text.replace('release: "1.0.0"', f'release: "{a0}"')
        elif path.startswith("deployments/a2/"):
            text = text.replace('release: "1.0.0"', f'release: "{a2}"')
        out[path] = text
    return out


# The commits whose fan-out is measured, in turn, each changing every device's document: the
# label-selected deployments (one a group of 100 devices: few, short files), then every
# device's own deployment (a file of 100 deployments a group: the whole fleet's re-parsed).
CHANGES = (
    ("every a2 (by selector) to 1.1.0", {"a2": "1.1.0"}),
    ("every a0 (per device) to 1.1.0", {"a0": "1.1.0", "a2": "1.1.0"}),
)


def too_many(devices: int, replicas: int) -> str | None:
    """Why `devices` long polls cannot be held on `replicas` controllers under this machine's
    descriptor limit, or None. A connection is a descriptor, and a replica keeps HEADROOM of
    them for its database, git and log; an unprivileged process cannot raise its hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    share, room = -(-devices // replicas), default_max_connections(hard)
    if share <= room:
        return None
    fits = -(-devices // room)
    return (
        f"{devices} devices on {replicas} replica(s) is {share} held polls each, and a replica "
        f"holds at most {room} under the hard limit of {hard} open files: use --replicas {fits}"
    )


class Controller:
    """`hedgerow controller` on a data folder, started and restarted by pid."""

    def __init__(
        self,
        repo: Path,
        work: Path,
        db: str | None,
        name: str = "controller",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work, self.name = work, name
        (work / "secret").write_bytes(SECRET)
        self.command = [
            sys.executable, "-m", "reconciler", "controller", "--repo", str(repo),
            "--data-dir", str(work / f"data-{name}"), "--listen", f"127.0.0.1:{self.port}",
            "--webhook-secret-file", str(work / "secret"), "--interval", "3600",
            "--log-format", "json", *(["--db", db] if db else []),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.work / f"{self.name}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGINT, grace=60)

    def hook(self, sha: str) -> None:
        body = f'{{"after": "{sha}"}}'.encode()
        headers = {"X-Hub-Signature-256": sign(SECRET, body)}
        httpx.post(f"{self.url}/v1/hooks/git", content=body, headers=headers).raise_for_status()

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_mib(self) -> float:
        return rss_kib(self.pid()) / 1024


def issue_tokens(db: str, devices: list[str]) -> dict[str, str]:
    """A token for each device, stored where the controller will read it; device → token."""
    issued = {name: tokens.issue() for name in devices}
    with Store.open(db) as store:
        store.put_tokens({n: tokens.hash_token(t) for n, t in issued.items()}, datetime.now(UTC))
    return issued


def answered(url: str, device: str, token: str) -> bool:
    """Whether `device`'s document is served (200) at `url`."""
    try:
        response = httpx.get(
            f"{url}/v1/devices/{device}/desired",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def fan_out(
    fleet: Fleet,
    devices: int,
    controllers: list[Controller],
    repo: Path,
    message: str,
    tree: dict[str, str],
) -> None:
    """Commit `tree`, and print how long until every replica applied it and until each
    holding device had its 200."""
    sha = commit(repo, message, tree)
    committed = time.time()
    for controller in controllers:  # a follower passes the webhook to the leader
        controller.hook(sha)
    wait(lambda: all(revision(c.url) == sha for c in controllers), 300, "the commit", 0.02)
    applied_after = time.time() - committed

    def arrived() -> int:
        return sum(1 for docs in fleet.seen().values() if any(r == sha for _, r in docs))

    deadline = time.monotonic() + 75
    while arrived() < devices and time.monotonic() < deadline:
        time.sleep(1)
    latencies = [
        min(t for t, r in docs if r == sha) - committed
        for docs in fleet.seen().values()
        if any(r == sha for _, r in docs)
    ]
    print(f"commit: {message}")
    print(f"  commit → applied:     {applied_after:6.2f} s (every replica)")
    print(
        f"  fan-out, commit → 200: p50 {percentile(latencies, 0.5):6.2f} s  "
        f"p99 {percentile(latencies, 0.99):6.2f} s  "
        f"max {max(latencies, default=float('nan')):6.2f} s  "
        f"not answered in 75 s: {devices - len(latencies)}"
    )
    settle([c.pid() for c in controllers], 300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1, help="simulator processes")
    parser.add_argument("--report-rate", type=float, default=200.0, help="reports per second")
    parser.add_argument("--report-seconds", type=float, default=10.0)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL; default SQLite")
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL server of its own"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="controller processes on one PostgreSQL"
    )
    args = parser.parse_args()
    if args.devices % GROUP:
        parser.error(f"--devices must be a multiple of {GROUP}")
    raise_open_files()
    if reason := too_many(args.devices, args.replicas):
        parser.error(reason)
    if args.replicas > 1 and not (args.db or args.postgres):
        args.postgres = True  # replicas share a PostgreSQL database
    names = [f"dev-{d}" for d in range(args.devices)]
    with tempfile.TemporaryDirectory(prefix="hb-fleet-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        db = args.db
        if args.postgres:
            server = new_server(stack.callback)
            db = server.url(server.create_database())
        repo = make_repo(work / "repo", files(args.devices))
        issued = issue_tokens(db or sqlite_url(work / "data-controller-0"), names)
        controllers = [Controller(repo, work, db, f"controller-{i}") for i in range(args.replicas)]
        for controller in controllers:
            stack.callback(controller.stop)
        started = time.monotonic()
        for controller in controllers:
            controller.start()
        first = controllers[0]
        wait(lambda: all(revision(c.url) for c in controllers), 1200, "the first apply", 0.2)
        first_apply = time.monotonic() - started
        planned = settle([c.pid() for c in controllers], 600)  # the first plan of every device
        idle = [c.rss_mib() for c in controllers]
        backend = "PostgreSQL" if db else "SQLite"
        print(f"devices:                {args.devices} ({backend}, {args.replicas} replica(s))")
        print(f"first start and apply:  {first_apply:8.1f} s (then {planned:.1f} s planning)")
        print(f"RSS, no connection:     {max(idle):8.1f} MiB (the largest replica)")
        urls = ",".join(c.url for c in controllers)
        with simulated(urls, list(issued.items()), args.processes) as fleet:
            fleet.hold()
            wait(lambda: fleet.settled() == args.devices, 1200, "every device's document", 1)
            settle([c.pid() for c in controllers], 120)
            held = [c.rss_mib() for c in controllers]
            per_poll = sum(h - i for h, i in zip(held, idle, strict=True)) * 1024 / args.devices
            print(
                f"RSS, every device held: {max(held):8.1f} MiB (the largest replica; "
                f"{per_poll:.1f} KiB a poll)"
            )
            for message, releases in CHANGES:
                tree = files(args.devices, **releases)
                fan_out(fleet, args.devices, controllers, repo, message, tree)
            # every device reports once first: its state is then known and planned (the
            # controllers are let settle), and the measured reports are a converged fleet's
            # (the same state, one new event each)
            fleet.reports(args.report_rate, args.devices / args.report_rate)
            pids = [c.pid() for c in controllers]
            print(f"first reports re-planned: {settle(pids, 600):6.1f} s after the last")
            sent = fleet.reports(args.report_rate, args.report_seconds)
            rate = len(sent) / args.report_seconds
            print(
                f"reports at {args.report_rate:.0f}/s offered: {rate:7.1f}/s done, "
                f"p50 {percentile(sent, 0.5) * 1000:6.1f} ms  "
                f"p99 {percentile(sent, 0.99) * 1000:6.1f} ms"
            )
            errors = fleet.errors()
            print(f"simulator errors:       {len(errors)} {errors[:5]}")
        if args.replicas == 1:
            first.stop()
            holder = names[0]
            restarted = time.monotonic()
            first.start()
            wait(lambda: answered(first.url, holder, issued[holder]), 600, "a restart", 0.05)
            print(f"restart → first document: {time.monotonic() - restarted:6.2f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
