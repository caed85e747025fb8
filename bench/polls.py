"""Unchanged polls: 304s per second from `GET /v1/devices/{name}/desired` (device token,
If-None-Match) with 1,000 concurrent keep-alive clients on loopback, against a bare Starlette
endpoint answering 304 (`/bench/bare`) added to the same app in the same uvicorn process.

The server (one uvicorn worker over a real Controller, a git repository and SQLite) runs in a
process of its own; the load comes from `wrk` (Debian's `wrk` package), one thread, so that on
two cores the load generator does not take turns with the server on its core. Both endpoints are
measured in the same run, alternately, best of `--rounds`.
Targets: at least 3,500 304s per second, and at least 0.7 of the bare endpoint's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import ROOT, make_repo, stop, wait
from reconciler.demo.daemons import free_port
from tests.support.fleet import fleet_manifests

TARGET_RATIO = 0.7
TARGET_RATE = 3500.0
DEVICE = "pi-1"


def serve(port: int, work: Path, token: str, http: str, loop: str) -> None:
    """The server process: the controller's app over a real repository, plus /bench/bare."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from reconciler.controller.controller import Controller
    from reconciler.controller.runner import Runner
    from reconciler.controller.source import open_repo, resolve, tree_files
    from reconciler.manifests.problems import Problem
    from reconciler.secrets import tokens
    from reconciler.server import connections
    from reconciler.server.app import create_app
    from reconciler.store import Store, sqlite_url

    repo = open_repo(str(make_repo(work / "repo", fleet_manifests())))

    class Source:
        def fetch(self) -> str:
            return resolve(repo, "main")

        def files(self, sha: str) -> list[tuple[str, bytes | Problem]]:
            return list(tree_files(repo, sha))

    async def bare(request: Request) -> Response:
        return Response(status_code=304)

    with Store.open(sqlite_url(work / "data")) as store:
        store.put_token(DEVICE, tokens.hash_token(token), datetime.now(UTC))
        controller = Controller(Source(), store, identities=[], fingerprint_key=b"k" * 32)
        runner = Runner(controller, interval=3600, resync=3600)
        app = create_app(runner, webhook_secret=None, operator_token=None)
        app.router.routes.insert(0, Route("/bench/bare", bare))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        protocol = connections.protocol(  # the controller's: header timeout, connection cap
            http=http,
            header_timeout=connections.HEADER_TIMEOUT,
            max_connections=connections.default_max_connections(soft),
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=protocol)
        )
        with asyncio.Runner(loop_factory=connections.event_loop(loop)[1]) as running:
            running.run(runner.run(server.serve()))


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, headers: dict[str, str], connections: int, seconds: int) -> tuple[float, int]:
    """Requests per second and requests answered; every answer must be a 304."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    if "Non-2xx or 3xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    assert rate is not None and done is not None, out
    return float(rate.group(1)), int(done.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--http", default="auto", help="auto, httptools or h11 (the server's)")
    parser.add_argument("--loop", default="asyncio", help="asyncio or uvloop (the server's)")
    parser.add_argument(
        "--serve", nargs=3, metavar=("PORT", "DIR", "TOKEN"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.serve[2], args.http, args.loop)
        return 0
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk (Debian's package)", file=sys.stderr)
        return 2
    from reconciler.secrets import tokens

    token = tokens.issue()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = (Path(tmp) / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.polls", "--serve", str(port), tmp, token,
             "--http", args.http, "--loop", args.loop],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
        )  # fmt: skip
        try:
            auth = {"Authorization": f"Bearer {token}"}
            desired = f"{base}/v1/devices/{DEVICE}/desired"

            def ready() -> bool:
                try:
                    return httpx.get(desired, headers=auth, timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait(ready, 30, "the server", 0.1)
            tag = httpx.get(desired, headers=auth).headers["etag"]
            headers = {**auth, "If-None-Match": tag}
            assert httpx.get(desired, headers=headers).status_code == 304
            assert httpx.get(f"{base}/bench/bare").status_code == 304
            wrk(f"{base}/bench/bare", headers, args.connections, 2)  # warm up, connections
            wrk(desired, headers, args.connections, 2)
            bare, polls, cpu, answered = 0.0, 0.0, 0.0, 0
            for _ in range(args.rounds):
                rate, _ = wrk(f"{base}/bench/bare", headers, args.connections, args.seconds)
                bare = max(bare, rate)
                before = cpu_seconds(server.pid)
                rate, done = wrk(desired, headers, args.connections, args.seconds)
                cpu += cpu_seconds(server.pid) - before
                polls, answered = max(polls, rate), answered + done
        finally:
            stop(server)
            log.close()
    ratio = polls / bare
    from reconciler.server.connections import event_loop, http_implementation

    print(f"server:               {http_implementation(args.http)}, {event_loop(args.loop)[0]}")
    print(f"connections:          {args.connections}")
    print(f"bare Starlette 304:   {bare:8.0f} /s")
    print(f"desired 304:          {polls:8.0f} /s  (target >= {TARGET_RATE:.0f} /s)")
    print(f"ratio:                {ratio:8.2f}   (target >= {TARGET_RATIO})")
    print(f"server CPU a 304:     {cpu / answered * 1e6:8.0f} µs (desired, all rounds)")
    return 0 if ratio >= TARGET_RATIO and polls >= TARGET_RATE else 1


if __name__ == "__main__":
    sys.exit(main())
