"""The floor under the fleet's fan-out: what this machine can do at all, with nothing of
Hedgerow in the way.

The same simulated fleet as `bench/fleet.py` (tests/support/simulator.py, the same processes)
holds its long polls against a bare ASGI app under the same uvicorn (httptools, one process):
no validation, no store, no token, no document built. `POST /release` answers every held poll
at once with a fixed body. The time from that POST to each device's 200 is the least any
controller in this stack could take to wake its fleet, before it does any work of its own.

Run from the repository's root: `python -m bench.floor --devices 19500 --processes 2`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from bench.common import stop, wait
from reconciler.demo.daemons import free_port
from tests.support.simulator import percentile, raise_open_files, simulated

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Floor:
    """Holds `GET .../desired?wait=S` polls; a poll with the current ETag waits for the next
    release (or its wait, then 304); `POST /release` moves every held poll on at once."""

    def __init__(self) -> None:
        self.generation = 0
        self.released = asyncio.Event()

    def body(self, device: str) -> bytes:
        return f'{{"device":"{device}","revision":"r{self.generation}"}}'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            self.generation += 1
            released, self.released = self.released, asyncio.Event()
            released.set()
            await _answer(send, 200, b"{}", self.etag())
            return
        device = scope["path"].split("/")[3]
        held = dict(scope["headers"]).get(b"if-none-match", b"").decode()
        if held == self.etag():
            released = self.released
            try:
                await asyncio.wait_for(released.wait(), 60)
            except TimeoutError:
                await _answer(send, 304, b"", self.etag())
                return
        await _answer(send, 200, self.body(device), self.etag())

    def etag(self) -> str:
        return f'"r{self.generation}"'


async def _answer(send: Send, status: int, body: bytes, tag: str) -> None:
    headers = [(b"etag", tag.encode()), (b"content-type", b"application/json")]
    if status == 200:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(port: int) -> None:
    """The bare app in this process (the benchmark starts it as a child)."""
    import uvicorn

    raise_open_files()
    uvicorn.run(
        Floor(), host="127.0.0.1", port=port, http="httptools", log_level="warning",
        backlog=4096, timeout_keep_alive=75,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=19500)
    parser.add_argument("--processes", type=int, default=2, help="simulator processes")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    raise_open_files()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bench.floor", "--serve", str(port)]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        wait(lambda: _up(url), 30, "the bare app")
        devices = [(f"dev-{d}", "token") for d in range(args.devices)]
        with simulated(url, devices, args.processes) as fleet:
            fleet.hold()
            wait(lambda: fleet.settled() == args.devices, 600, "every device's first answer", 1)
            time.sleep(3)
            released = time.time()
            httpx.post(f"{url}/release", timeout=30).raise_for_status()
            deadline = time.monotonic() + 75
            latencies: list[float] = []
            while time.monotonic() < deadline:
                seen = fleet.seen()
                latencies = [
                    min(t for t, r in docs if r == "r1") - released
                    for docs in seen.values()
                    if any(r == "r1" for _, r in docs)
                ]
                if len(latencies) == args.devices:
                    break
                time.sleep(1)
            print(f"devices:               {args.devices} (a bare uvicorn app, httptools)")
            print(
                f"release → 200:         p50 {percentile(latencies, 0.5):6.2f} s  "
                f"p99 {percentile(latencies, 0.99):6.2f} s  "
                f"max {max(latencies, default=float('nan')):6.2f} s  "
                f"not answered in 75 s: {args.devices - len(latencies)}"
            )
            print(f"simulator errors:      {len(fleet.errors())}")
    finally:
        stop(server)
    return 0


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/devices/probe/desired", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
