"""A fleet simulator: many devices speaking the real wire protocol to a real controller over
raw HTTP/1.1 on asyncio streams — long polls with their ETags, and status reports.

One process holds thousands of devices (one connection each while it long-polls, so at most
the open-file limit, which each worker raises to its hard limit); `Fleet` spreads devices over
worker processes and gathers what they saw. Used by the benchmarks (`bench/fleet.py`) and by
tests that need more devices than agents. Everything is bounded: every wait has a deadline,
and workers stop when their parent says so or goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import random
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from agent.client import backoff

HEADER_END = b"\r\n\r\n"


@dataclass
class SimDevice:
    name: str
    token: str
    etag: str | None = None
    revision: str | None = None
    seq: int = 0
    documents: list[tuple[float, str]] = field(default_factory=list)  # (wall time, revision)
    home: int = 0  # the controller (of several replicas) it talks to now
    pending: list[dict[str, Any]] = field(default_factory=list)  # events not acknowledged
    # As an agent (see `Worker.agents`): Ready on every release it is given, "failing" (it
    # switches back from any release but its first, Degraded) or "offline" (silent).
    behaviour: str = "ready"
    good: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # by deployment
    releases: list[dict[str, Any]] = field(default_factory=list)  # what it reports running
    # (wall time, release Ready) of each report taken that names a Ready release, as an agent
    ready: list[tuple[float, str]] = field(default_factory=list)


ARRIVING = 256  # a worker's devices fetching their first document at once
POLL_INTERVAL = 30.0  # the agent's default: its backoff's ceiling
MAX_EVENTS = 100  # events a report carries at most; the rest wait for the next


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def raise_open_files() -> int:
    """The soft open-file limit raised to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
) -> Answer:
    """One HTTP/1.1 request on an open connection (kept alive), its whole answer."""
    lines = [f"{method} {path} HTTP/1.1", "Host: controller"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    head = await reader.readuntil(HEADER_END)
    status_line, *header_lines = head[: -len(HEADER_END)].decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    length = int(answer_headers.get("content-length", "0"))
    content = await reader.readexactly(length) if length else b""
    return Answer(int(status_line.split()[1]), answer_headers, content)


class Worker:
    """The devices of one process, on one event loop."""

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        devices: Sequence[SimDevice],
        wait: int,
        agents: bool = False,
    ) -> None:
        """`addresses`: the controller's, or its replicas' (each device starts on one of them,
        in turn, and moves to the next when its controller fails, as agents do). With
        `agents`, each device reports after each answer to its poll, as an agent does, the
        releases its document names (by its `behaviour`)."""
        self.addresses, self.wait, self.agents = list(addresses), wait, agents
        self.devices = list(devices)
        for index, device in enumerate(self.devices):
            device.home = index % len(self.addresses)
        self.stopping = asyncio.Event()
        self.errors: list[str] = []
        self.report_latencies: list[float] = []
        self.failovers = 0
        self.reconnects = 0  # kept-alive connections the controller closed while idle
        self.rng = random.Random()
        # devices still without a document, fetching it at the same time: a fleet does not
        # come up in one instant, and 16,000 connections opened at once by one process time
        # out in its own loop before their requests are written
        self.arriving = asyncio.Semaphore(ARRIVING)
        self._agent_pools: list[asyncio.Queue[list[Any]]] | None = None

    def backoff(self, failures: int) -> float:
        """The agent's own wait after `failures` failures in a row: doubling from 1 s up to
        its poll interval, with jitter, so that a fleet reconnecting at once spreads out."""
        return backoff(failures, POLL_INTERVAL, self.rng)

    def fail_over(self, device: SimDevice) -> None:
        device.home = (device.home + 1) % len(self.addresses)
        self.failovers += 1

    async def hold(self, device: SimDevice) -> None:
        """Long-poll forever: the first answer gives the ETag, each 200 is recorded."""
        writer: asyncio.StreamWriter | None = None
        failures = 0
        while not self.stopping.is_set():
            if self.agents and device.behaviour == "offline":
                await _close(writer)
                writer = None
                await asyncio.sleep(0.2)
                continue
            try:
                headers = {"Authorization": f"Bearer {device.token}"}
                if device.etag:
                    headers["If-None-Match"] = device.etag
                wait = self.wait if device.etag else 0
                path = f"/v1/devices/{device.name}/desired?wait={wait}"
                gate = self.arriving if device.etag is None else contextlib.nullcontext()
                reused = writer is not None
                async with gate:
                    if writer is None:
                        address = self.addresses[device.home]
                        reader, writer = await asyncio.open_connection(*address)
                    answer = await request(reader, writer, "GET", path, headers)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if reused and isinstance(exc, ConnectionResetError | asyncio.IncompleteReadError):
                    # The controller closed a kept-alive connection idle past its header
                    # timeout (the device was reporting): an HTTP client opens a new one.
                    await _close(writer)
                    writer = None
                    self.reconnects += 1
                    continue
                self.errors.append(f"{device.name}: {type(exc).__name__}")
                await _close(writer)
                writer = None
                if len(self.addresses) > 1:
                    self.fail_over(device)
                failures += 1
                await asyncio.sleep(self.backoff(failures))
                continue
            if answer.status in (200, 304):
                failures = 0
            if answer.status == 200:
                device.etag = answer.headers.get("etag")
                device.revision = json.loads(answer.body)["revision"]
                device.documents.append((time.time(), device.revision))
                if self.agents:
                    device.releases = run(device, json.loads(answer.body))
            elif answer.status != 304:
                self.errors.append(f"{device.name}: {answer.status}")
                if answer.status >= 500 and len(self.addresses) > 1:
                    self.fail_over(device)
                    await _close(writer)
                    writer = None
                failures += 1
                await asyncio.sleep(self.backoff(failures))
            if answer.headers.get("connection", "").lower() == "close":
                await _close(writer)
                writer = None
            if self.agents and answer.status in (200, 304):
                if self._agent_pools is None:
                    self._agent_pools = self._pools(16)
                await self.report(device, self._agent_pools, new_event=False)
        await _close(writer)

    async def report(
        self, device: SimDevice, pools: list[asyncio.Queue[list[Any]]], new_event: bool = True
    ) -> bool:
        """A converged report with one new event (and any not yet acknowledged), on a pooled
        connection to the device's controller; on a failure, again on the next replica. The
        events are forgotten once acknowledged: each is stored once, whichever replica took
        it. Whether the report was taken."""
        if new_event:
            device.seq += 1
            device.pending.append(
                {
                    "seq": device.seq,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                    "kind": "started",
                    "message": "simulated",
                }
            )
        body = json.dumps(
            {
                "device": device.name,
                "revision": device.revision,
                "events": device.pending[:MAX_EVENTS],
                **({"releases": device.releases} if self.agents else {}),
            }
        ).encode()
        started = time.perf_counter()
        for attempt in range(2 * len(pools) + 1):  # a closed pooled connection, a dead replica
            home = device.home
            connection = await pools[home].get()
            try:
                if not connection:
                    connection.extend(await asyncio.open_connection(*self.addresses[home]))
                answer = await request(
                    connection[0],
                    connection[1],
                    "PUT",
                    f"/v1/devices/{device.name}/status",
                    {"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"},
                    body,
                )
            except (OSError, asyncio.IncompleteReadError):
                await _close(connection[1] if connection else None)
                connection.clear()
                if attempt > 0 and len(pools) > 1:
                    self.fail_over(device)
                continue
            finally:
                pools[home].put_nowait(connection)
            if answer.status >= 500 and len(pools) > 1:
                self.fail_over(device)
                await asyncio.sleep(0.2)
                continue
            if answer.status != 200:
                self.errors.append(f"report {device.name}: {answer.status}")
                return False
            found = json.loads(answer.body)
            last = int(found.get("lastSeq", found.get("last_seq", 0)))
            device.pending = [e for e in device.pending if e["seq"] > last]
            self.report_latencies.append(time.perf_counter() - started)
            if self.agents:
                now = time.time()
                device.ready.extend(
                    (now, r["release"]) for r in device.releases if "error" not in r
                )
            return True
        self.errors.append(f"report {device.name}: connection failed")
        return False

    def _pools(self, size: int) -> list[asyncio.Queue[list[Any]]]:
        pools: list[asyncio.Queue[list[Any]]] = []
        for _ in self.addresses:
            pool: asyncio.Queue[list[Any]] = asyncio.Queue()
            for _ in range(size):
                pool.put_nowait([])
            pools.append(pool)
        return pools

    async def reports(self, rate: float, seconds: float, pool: int = 32) -> None:
        """Reports at `rate` per second for `seconds`, round-robin over the devices."""
        pools = self._pools(pool)
        tasks = set()
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            task = asyncio.create_task(self.report(self.devices[i % len(self.devices)], pools))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
        await _close_pools(pools)

    async def flush(self, deadline: float) -> int:
        """Report until every event is acknowledged or `deadline` (seconds) passes; how many
        events are left unacknowledged."""
        pools = self._pools(8)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            waiting = [d for d in self.devices if d.pending]
            if not waiting:
                break
            await asyncio.gather(*(self.report(d, pools, new_event=False) for d in waiting))
            await asyncio.sleep(0.5)
        await _close_pools(pools)
        return sum(len(d.pending) for d in self.devices)


def run(device: SimDevice, document: dict[str, Any]) -> list[dict[str, Any]]:
    """What an agent reports once it has applied `document`: each deployment's release
    running and Ready, or, for a failing device given a release other than its first, the
    release it switched back to, with the error and why it is Degraded."""
    releases = []
    for wanted in document["deployments"]:
        name = wanted["deployment"]
        given = (wanted["release"], wanted.get("redeploy"))
        good = device.good.setdefault(name, given)
        failed = device.behaviour == "failing" and given != good
        release, redeploy = good if failed else given
        if not failed:
            device.good[name] = given
        found: dict[str, Any] = {
            "application": wanted["application"],
            "release": release,
            "deployment": name,
            "running": True,
            "complete": True,
            "redeploy": redeploy,
            "ready": True,
        }
        if failed:
            found["error"] = f"release {given[0]} not Ready: switched back to {release}"
            found["degraded"] = {
                "reason": "container server unhealthy",
                "container": "server",
                "health": "exit status 1",
                "log": ["simulated failure"],
            }
        releases.append(found)
    return releases


async def _close_pools(pools: list[asyncio.Queue[list[Any]]]) -> None:
    for pool in pools:
        while not pool.empty():
            connection = pool.get_nowait()
            await _close(connection[1] if connection else None)


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()


def _worker_main(
    pipe: Connection,
    addresses: list[tuple[str, int]],
    devices: list[tuple[str, str]],
    wait: int,
    behaviours: dict[str, str] | None,
) -> None:
    """A worker process: hold the devices' polls, answer its parent's commands."""
    raise_open_files()
    asyncio.run(_serve(pipe, addresses, devices, wait, behaviours))


async def _serve(
    pipe: Connection,
    addresses: list[tuple[str, int]],
    devices: list[tuple[str, str]],
    wait: int,
    behaviours: dict[str, str] | None,
) -> None:
    simulated = [
        SimDevice(name, token, behaviour=(behaviours or {}).get(name, "ready"))
        for name, token in devices
    ]
    worker = Worker(addresses, simulated, wait, agents=behaviours is not None)
    loop = asyncio.get_running_loop()
    holds: list[asyncio.Task[None]] = []
    while True:
        command, argument = await loop.run_in_executor(None, _receive, pipe)
        if command == "hold":
            holds = [asyncio.create_task(worker.hold(d)) for d in worker.devices]
            pipe.send(("ok", None))
        elif command == "settled":  # how many devices hold a document
            pipe.send(("ok", sum(1 for d in worker.devices if d.etag)))
        elif command == "reports":
            rate, seconds = argument
            worker.report_latencies.clear()
            await worker.reports(rate, seconds)
            pipe.send(("ok", worker.report_latencies))
        elif command == "seen":  # (name, [(time, revision), ...]) of every device
            pipe.send(("ok", [(d.name, d.documents) for d in worker.devices]))
        elif command == "errors":
            pipe.send(("ok", list(worker.errors)))
        elif command == "flush":  # events left unacknowledged after `argument` seconds
            pipe.send(("ok", await worker.flush(argument)))
        elif command == "behave":  # new behaviours, by device name
            for device in worker.devices:
                device.behaviour = argument.get(device.name, device.behaviour)
            pipe.send(("ok", None))
        elif command == "running":  # (name, [(deployment, release)]) of every device
            found = [(d.name, [(r["deployment"], r["release"]) for r in d.releases])
                     for d in worker.devices]  # fmt: skip
            pipe.send(("ok", found))
        elif command == "ready":  # (name, [(time, release)]) of every device's Ready reports
            pipe.send(("ok", [(d.name, d.ready) for d in worker.devices]))
        elif command == "sent":  # (name, highest event number made) of every device
            pipe.send(("ok", [(d.name, d.seq) for d in worker.devices]))
        else:  # "stop", or the parent went away
            worker.stopping.set()
            for task in holds:
                task.cancel()
            await asyncio.gather(*holds, return_exceptions=True)
            pipe.send(("ok", None))
            return


def _receive(pipe: Connection) -> tuple[str, Any]:
    try:
        message: tuple[str, Any] = pipe.recv()
        return message
    except EOFError:
        return "stop", None


class Fleet:
    """Simulated devices spread over worker processes."""

    def __init__(
        self,
        url: str,
        devices: Sequence[tuple[str, str]],
        processes: int = 1,
        wait: int = 60,
        behaviours: dict[str, str] | None = None,
    ) -> None:
        """`url`: the controller's, or its replicas' separated by commas. With
        `behaviours` (device → ready, failing or offline; ready if absent), the devices act
        as agents (see `Worker`)."""
        addresses = []
        for one in url.split(","):
            host, _, port = one.strip().removeprefix("http://").partition(":")
            addresses.append((host, int(port)))
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for index in range(processes):
            mine = list(devices[index::processes])
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(child, addresses, mine, wait, behaviours),
                daemon=True,
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    def _all(self, command: str, argument: Any = None, timeout: float = 600) -> list[Any]:
        for pipe in self.pipes:
            pipe.send((command, argument))
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a simulator worker did not answer {command!r}")
            answers.append(pipe.recv()[1])
        return answers

    def hold(self) -> None:
        self._all("hold")

    def settled(self) -> int:
        return sum(self._all("settled"))

    def reports(self, rate: float, seconds: float) -> list[float]:
        """Report latencies (seconds) at `rate` per second overall, for `seconds`."""
        share = rate / len(self.pipes)
        return [x for part in self._all("reports", (share, seconds)) for x in part]

    def seen(self) -> dict[str, list[tuple[float, str]]]:
        return {name: docs for part in self._all("seen") for name, docs in part}

    def errors(self) -> list[str]:
        return [e for part in self._all("errors") for e in part]

    def flush(self, seconds: float) -> int:
        """Events still unacknowledged after reporting them for up to `seconds`."""
        return sum(self._all("flush", seconds, timeout=seconds + 60))

    def behave(self, behaviours: dict[str, str]) -> None:
        self._all("behave", behaviours)

    def running(self) -> dict[str, dict[str, str]]:
        """device → deployment → the release it reports running."""
        return {name: dict(found) for part in self._all("running") for name, found in part}

    def ready(self) -> dict[str, list[tuple[float, str]]]:
        """device → (wall time, release) of each report it made of a Ready release."""
        return {name: found for part in self._all("ready") for name, found in part}

    def sent(self) -> dict[str, int]:
        """Each device's highest event number: it made events 1 to it."""
        return {name: seq for part in self._all("sent") for name, seq in part}

    def stop(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError):
            self._all("stop", timeout=30)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


@contextlib.contextmanager
def simulated(
    url: str,
    devices: Sequence[tuple[str, str]],
    processes: int = 1,
    wait: int = 60,
    behaviours: dict[str, str] | None = None,
) -> Iterator[Fleet]:
    fleet = Fleet(url, devices, processes, wait, behaviours)
    try:
        yield fleet
    finally:
        fleet.stop()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
