"""Tokens and outages, on the real controller process: a re-issued token works at once, a
revoked one gets nothing from a long poll it holds, made-up device names cost nothing, and a
stopped PostgreSQL degrades the service instead of failing it (documents from memory, reports
refused with 503 and Retry-After, /readyz saying why), and the controller waits for its
database at start-up with one line per attempt."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import git
import httpx
import pytest

from reconciler.demo.daemons import free_port
from tests.support.postgres import PostgresServer, start_server
from tests.support.repos import BASE, write_tree

pytestmark = pytest.mark.e2e  # controller processes, and a PostgreSQL server of their own

HEDGEROW = [sys.executable, "-m", "reconciler"]


@dataclass
class Running:
    url: str
    data: Path
    db: str
    log: Path
    process: subprocess.Popen[bytes]

    def token(self, device: str, *extra: str) -> str:
        done = subprocess.run(
            [*HEDGEROW, "device", "token", device, "--db", self.db, *extra],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=90)


def wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).json()["revision"] is not None
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@pytest.fixture
def postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """A server of this test's own: the test stops and starts it."""
    return start_server(request)


@pytest.fixture
def controller(
    tmp_path: Path, git_identity: None, postgres: PostgresServer
) -> Iterator[Callable[..., Running]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(*flags: str, db: str | None = None) -> Running:
        repo = git.Repo.init(write_tree(tmp_path / "repo", BASE), initial_branch="main")
        repo.git.add(A=True)
        repo.git.commit(m="initial")
        url_db = db or postgres.url(postgres.create_database())
        port = free_port()
        log = tmp_path / f"controller-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*HEDGEROW, "controller", "--repo", str(tmp_path / "repo"), "--db", url_db,
                 "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}",
                 "--log-format", "json", *flags],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        processes.append(process)
        return Running(f"http://127.0.0.1:{port}", tmp_path / "data", url_db, log, process)

    yield start
    for process in processes:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def report(device: str, seq: int) -> dict[str, Any]:
    return {
        "device": device,
        "events": [
            {"seq": seq, "at": "2026-12-02T10:00:00+00:00", "kind": "started", "message": "up"}
        ],
    }


def test_a_reissued_token_works_at_once(controller: Callable[..., Running]) -> None:
    """The cache held the revoked hash for up to 5 s, and a new token got 403 'another
    device' meanwhile."""
    running = controller()
    wait(lambda: answers(running.url), 30, "the controller")
    first = running.token("pi-1")
    assert running.get("/v1/devices/pi-1/desired", first).status_code == 200  # now cached
    second = running.token("pi-1")  # replaces the first, from another process
    answered = running.get("/v1/devices/pi-1/desired", second)
    assert answered.status_code == 200, answered.text
    assert running.get("/v1/devices/pi-1/desired", first).status_code == 401


def test_a_revoked_token_gets_nothing_from_the_long_poll_it_holds(
    controller: Callable[..., Running], tmp_path: Path
) -> None:
    running = controller("--watch")
    wait(lambda: answers(running.url), 30, "the controller")
    token = running.token("pi-1")
    first = running.get("/v1/devices/pi-1/desired", token)
    tag = first.headers["etag"]
    answer: dict[str, httpx.Response] = {}

    def hold() -> None:
        answer["poll"] = running.get(
            "/v1/devices/pi-1/desired?wait=30", token, **{"If-None-Match": tag}
        )

    poll = threading.Thread(target=hold)
    poll.start()
    time.sleep(1)
    revoked = subprocess.run(
        [*HEDGEROW, "device", "token", "pi-1", "--revoke", "--db", running.db],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    # A commit changes pi-1's document while the poll waits: it wakes with something to send.
    repo = git.Repo(tmp_path / "repo")
    write_tree(tmp_path / "repo", {"deployment.yaml": BASE["deployment.yaml"] + "  redeploy: x\n"})
    repo.git.commit(a=True, m="redeploy")  # --watch sees it at once
    poll.join(60)
    assert not poll.is_alive()
    assert answer["poll"].status_code == 401, answer["poll"].text
    assert "deployments" not in answer["poll"].text


def test_made_up_device_names_are_refused_before_any_lookup(
    controller: Callable[..., Running],
) -> None:
    running = controller()
    wait(lambda: answers(running.url), 30, "the controller")
    long_name = "a" * 8000
    for name in (long_name, "Not_A_Label", "a" * 64):
        refused = running.get(f"/v1/devices/{name}/desired", "hdr_bogus")
        assert refused.status_code == 404, (name[:20], refused.status_code)
        assert refused.json()["detail"].startswith("not a device name")
    pid = running.process.pid
    before = _rss_kib(pid)
    with httpx.Client(timeout=10) as client:
        for i in range(3000):
            client.get(
                f"{running.url}/v1/devices/x{i}-{'b' * 40}/desired",
                headers={"Authorization": "Bearer hdr_bogus"},
            )
    grown = _rss_kib(pid) - before
    assert grown < 20_000, f"{grown} KiB more after 3,000 unknown names"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_stopped_database_degrades_the_service(
    controller: Callable[..., Running], postgres: PostgresServer
) -> None:
    running = controller("--interval", "3600")
    wait(lambda: answers(running.url), 60, "the controller")
    token, stranger = running.token("pi-1"), running.token("pi-2")
    document = running.get("/v1/devices/pi-1/desired", token)
    tag = document.headers["etag"]
    assert running.get("/v1/devices/pi-1/desired", token, **{"If-None-Match": tag}).status_code
    assert httpx.put(
        f"{running.url}/v1/devices/pi-1/status", json=report("pi-1", 1),
        headers={"Authorization": f"Bearer {token}"},
    ).status_code == 200  # fmt: skip
    assert running.get("/readyz").status_code == 200

    postgres.halt()
    try:
        time.sleep(6)  # past the token cache's freshness: the store would be asked
        unchanged = running.get("/v1/devices/pi-1/desired", token, **{"If-None-Match": tag})
        assert unchanged.status_code == 304, unchanged.text
        again = running.get("/v1/devices/pi-1/desired", token)
        assert again.status_code == 200 and again.content == document.content
        stored = httpx.put(
            f"{running.url}/v1/devices/pi-1/status", json=report("pi-1", 2),
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert stored.status_code == 503, stored.text
        assert stored.headers["retry-after"] == "5" and set(stored.json()) == {"detail"}
        never_seen = running.get("/v1/devices/pi-2/desired", stranger)  # never verified
        assert never_seen.status_code == 503
        assert running.get("/healthz").status_code == 200  # liveness: the process is fine
        ready = running.get("/readyz")
        assert ready.status_code == 503
        assert not ready.json()["checks"]["store"]["ok"]
        assert ready.json()["checks"]["revision"]["ok"]
    finally:
        postgres.start(postgres.port)
    wait(lambda: running.get("/readyz").status_code == 200, 30, "ready again")
    resent = httpx.put(
        f"{running.url}/v1/devices/pi-1/status", json=report("pi-1", 2),
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert resent.status_code == 200 and resent.json()["lastSeq"] == 2
    lines = running.log.read_text().splitlines()
    assert not [line for line in lines if "Traceback" in line]


def test_the_controller_waits_for_its_database_at_start_up(
    controller: Callable[..., Running], postgres: PostgresServer
) -> None:
    database = postgres.create_database()
    url = postgres.url(database)
    postgres.halt()
    running = controller(db=url)
    try:
        wait(lambda: running.log.read_text().count("waiting for the store") >= 2, 30, "retries")
        assert running.process.poll() is None  # still waiting, not dead
    finally:
        postgres.start(postgres.port)
    wait(lambda: answers(running.url), 60, "the controller, once the database answers")
    text = running.log.read_text().splitlines()
    lines = [json.loads(line) for line in text if line.startswith("{")]  # not the banner
    waits = [line for line in lines if line["event"] == "waiting for the store"]
    assert waits and all("error" in line and "retry_in" in line for line in waits)
    assert not [line for line in running.log.read_text().splitlines() if "Traceback" in line]


def test_a_corrupt_sqlite_file_is_one_line_naming_it(tmp_path: Path, git_identity: None) -> None:
    repo = git.Repo.init(write_tree(tmp_path / "repo", BASE), initial_branch="main")
    repo.git.add(A=True)
    repo.git.commit(m="initial")
    data = tmp_path / "data"
    data.mkdir()
    (data / "hedgerow.db").write_bytes(b"this is not a database" * 100)
    for command in (["status"], ["events"]):
        done = subprocess.run(
            [*HEDGEROW, *command, "--data-dir", str(data)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert str(data / "hedgerow.db") in done.stderr and "Traceback" not in done.stderr
    started = subprocess.run(
        [*HEDGEROW, "controller", "--repo", str(tmp_path / "repo"), "--data-dir", str(data),
         "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert started.returncode == 1
    assert str(data / "hedgerow.db") in started.stderr and "Traceback" not in started.stderr


def test_a_restarted_controller_serves_stored_documents_before_validating_again(
    tmp_path: Path, git_identity: None
) -> None:
    """The port used to stay closed while the whole revision was validated again (16 s with
    42,000 files). Now a device holding its ETag gets its 304 before validation ends."""
    many = "---\n".join(
        f"apiVersion: hedgerow.dev/v1alpha1\nkind: Device\n"
        f"metadata: {{name: d{i}, labels: {{site: far}}}}\nspec: {{systemModel: rpi4}}\n"
        for i in range(6000)
    )
    repo = git.Repo.init(
        write_tree(tmp_path / "repo", {**BASE, "many.yaml": many}), initial_branch="main"
    )
    repo.git.add(A=True)
    repo.git.commit(m="a fleet")
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*HEDGEROW, "controller", "--repo", str(tmp_path / "repo"), "--data-dir",
               str(data), "--listen", f"127.0.0.1:{port}", "--log-format", "json"]  # fmt: skip

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def stop(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    first = start(tmp_path / "first.log")
    try:
        wait(lambda: answers(url), 120, "the first start")
        token = subprocess.run(
            [*HEDGEROW, "device", "token", "pi-1", "--data-dir", str(data)],
            capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
        ).stdout.strip()  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        before = httpx.get(f"{url}/v1/devices/pi-1/desired", headers=auth, timeout=10)
        assert before.status_code == 200
    finally:
        stop(first)

    log = tmp_path / "second.log"
    second = start(log)
    try:
        answered: httpx.Response | None = None
        while answered is None:
            try:
                answered = httpx.get(
                    f"{url}/v1/devices/pi-1/desired",
                    headers={**auth, "If-None-Match": before.headers["etag"]},
                    timeout=10,
                )
            except httpx.TransportError:
                time.sleep(0.01)
        answered_at = time.time()
        assert answered.status_code == 304, answered.text
        wait(lambda: b'"resumed"' in log.read_bytes(), 120, "the revision validated again")
        entries = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
        (resumed,) = [e for e in entries if e["event"] == "resumed"]
        resumed_at = datetime.fromisoformat(resumed["timestamp"]).timestamp()
        assert answered_at < resumed_at, (
            f"answered {resumed_at - answered_at:.2f} s after validation ended"
        )
        after = httpx.get(f"{url}/v1/devices/pi-1/desired", headers=auth, timeout=10)
        assert after.headers["etag"] == before.headers["etag"]  # the same bytes, validated
        assert after.content == before.content
    finally:
        stop(second)
