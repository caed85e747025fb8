"""The controller's HTTP edge under abuse, on a real `hedgerow controller` over real sockets:
bodies capped before they are buffered, idle and slow connections closed, long polls kept, a
cap on connections, file descriptors running out, and the small start-up checks."""

from __future__ import annotations

import json
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import git
import httpx
import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app as cli
from reconciler.demo.daemons import free_port
from reconciler.server.connections import Sparse, default_max_connections
from reconciler.server.limits import BodyCaps
from reconciler.server.webhook import sign
from tests.support.repos import commit

SECRET = b"webhook-secret-for-hardening-tests"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Running:
    """A controller process: where it listens, its pid, log and data folder."""

    port: int
    pid: int
    log: Path
    data: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss(self) -> int:
        """The process's peak resident memory (VmHWM), in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        assert found, status
        return int(found.group(1)) * 1024

    def open_files_limit(self) -> tuple[int, int]:
        limits = Path(f"/proc/{self.pid}/limits").read_text()
        found = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
        assert found, limits
        return int(found.group(1)), int(found.group(2))


Start = Callable[..., Running]
# The tests of the HTTP edge run on both of uvicorn's protocols the controller may use.
BOTH_PARSERS = pytest.mark.parametrize("http", ["httptools", "h11"], indirect=True)


@pytest.fixture
def http(request: pytest.FixtureRequest) -> str:
    """The controller's `--http`: auto (httptools where installed) unless parametrized."""
    return str(getattr(request, "param", "auto"))


@pytest.fixture
def start(tmp_path: Path, upstream: git.Repo, http: str) -> Iterator[Start]:
    """Start `hedgerow controller` on `upstream` as operators do, with `--http http` and
    `flags`, optionally under an open-file limit (soft, hard); stopped by pid when the test
    ends, its log printed."""
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def run(*flags: str, nofile: tuple[int, int] | None = None) -> Running:
        port = free_port()
        data = tmp_path / f"data-{port}"
        (tmp_path / "secret").write_bytes(SECRET + b"\n")
        for device in ("pi-1", "pi-2"):
            token = CliRunner().invoke(cli, ["device", "token", device, "--data-dir", str(data)])
            assert token.exit_code == 0, token.output
            (tmp_path / f"{device}.token").write_text(token.stdout.strip())
        log = tmp_path / f"controller-{port}.log"
        logs.append(log)

        def limit() -> None:  # in the child, before exec
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        args = [sys.executable, "-m", "reconciler", "controller", "--repo", upstream.working_dir,
                "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--interval", "3600",
                "--webhook-secret-file", str(tmp_path / "secret"), "--log-format", "json",
                "--http", http, *flags]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=limit
            )
        processes.append(process)
        running = Running(port, process.pid, log, data)

        def up() -> bool:
            assert process.poll() is None, f"the controller exited: {log.read_text()[-2000:]}"
            return _applied(running.url)

        _wait(up, 30, f"controller up, its first revision applied ({log})")
        return running

    yield run
    for process in processes:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for log in logs:
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def _applied(url: str) -> bool:
    """The port answers and the first revision is applied (the port opens before it is)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).json().get("revision") is not None
    except (httpx.HTTPError, ValueError):
        return False


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read_response(sock: socket.socket, seconds: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read off `sock`: status, headers (lower-case names), body."""
    sock.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _statuses(sock: socket.socket, count: int, seconds: float) -> list[int]:
    """The statuses of `count` responses read off `sock` (pipelined answers may come in one
    segment, which `_read_response` would partly drop)."""
    sock.settimeout(seconds)
    data, statuses = b"", list[int]()
    while len(statuses) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        declared = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(declared.group(1)) if declared else 0  # a 304 has none
        if found and len(rest) >= length:
            statuses.append(int(head.split()[1]))
            data = rest[length:]
            continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {statuses}: {data!r}"
        data += chunk
    assert not data, data
    return statuses


def _closed_after(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (reading and dropping what comes)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def _is_closed(sock: socket.socket) -> bool:
    """Without waiting: whether the server has closed `sock`."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _detail(body: bytes) -> str:
    loaded = json.loads(body)
    assert set(loaded) == {"detail"}, loaded
    detail: str = loaded["detail"]
    return detail


# -- request bodies ----------------------------------------------------------------------------


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_a_declared_body_over_its_cap_is_refused_before_it_is_read(start: Start) -> None:
    running = start("--max-report-bytes", "4096")
    before = running.peak_rss()
    cases = [
        ("POST", "/v1/hooks/git", 300_000_000),  # over 25 MiB
        ("PUT", "/v1/devices/pi-1/status", 4097),  # over --max-report-bytes
        ("POST", "/healthz", 64 * 1024 + 1),  # over the default
        ("GET", "/v1/devices/pi-1/desired", 64 * 1024 + 1),
    ]
    for method, path, length in [*cases, *[cases[0]] * 3]:  # four 300 MB webhook POSTs
        with _connect(running.port) as sock:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                "Content-Type: application/json\r\n\r\n".encode()
            )
            sock.sendall(b"{" * 1000)  # a start of the body: the rest never comes
            status, headers, body = _read_response(sock, 5)
            assert (status, headers["connection"]) == (413, "close"), (path, body)
            assert "larger than" in _detail(body)
            assert _closed_after(sock, 5)
    assert running.peak_rss() - before < 16 * MIB
    # under their caps, the same routes answer as before
    token = (running.data.parent / "pi-1.token").read_text()
    auth = {"Authorization": f"Bearer {token}"}
    report = httpx.put(f"{running.url}/v1/devices/pi-1/status", content=b"x" * 4096, headers=auth)
    assert report.status_code == 422  # read, and not JSON
    webhook = b'{"ref": "refs/heads/main"}' + b" " * 100_000
    signed = {"X-Hub-Signature-256": sign(SECRET, webhook)}
    assert httpx.post(f"{running.url}/v1/hooks/git", content=webhook, headers=signed).is_success
    unsigned = httpx.post(f"{running.url}/v1/hooks/git", content=webhook + b" ", headers=signed)
    assert unsigned.status_code == 401


def _send_chunked(port: int, method: str, path: str, total: int, headers: str = "") -> bytes:
    """A chunked body of `total` bytes in 64 KiB chunks, never finished (no last chunk); what
    the server answers, or b"" when it closes without a response."""
    with _connect(port) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{headers}\r\n"
            .encode()
        )  # fmt: skip
        chunk = b"%x\r\n" % (64 * 1024) + b"a" * 64 * 1024 + b"\r\n"
        sent = 0
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += 64 * 1024
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were sending
        sock.settimeout(10)
        received = b""
        try:
            while part := sock.recv(65536):
                received += part
        except ConnectionResetError:
            pass
        return received


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_a_chunked_body_is_counted_and_answered_413_when_it_crosses_its_cap(
    start: Start,
) -> None:
    running = start("--max-report-bytes", "100000")
    token = (running.data.parent / "pi-1.token").read_text()
    status = "/v1/devices/pi-1/status"
    auth = f"Authorization: Bearer {token}\r\n"
    answer = _send_chunked(running.port, "PUT", status, 256 * 1024, auth)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"larger than" in answer and b"100000 bytes" in answer
    # answered before the body is read (no token; a route that reads no body): then closed,
    # not left reading and dropping the rest of a body that need never end
    unread = _send_chunked(running.port, "PUT", status, 256 * 1024)
    assert unread.startswith(b"HTTP/1.1 401 "), unread[:200]
    ignored = _send_chunked(running.port, "POST", "/healthz", 128 * 1024)
    assert ignored.startswith(b"HTTP/1.1 405 "), ignored[:200]

    # four webhook bodies of 26 MiB at once: each cut at 25 MiB, and never held in memory
    before = running.peak_rss()
    answers: list[bytes] = []
    hook = "X-Hub-Signature-256: sha256=" + "0" * 64 + "\r\n"

    def send() -> None:
        answers.append(_send_chunked(running.port, "POST", "/v1/hooks/git", 26 * MIB, hook))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a[:13] for a in answers] == [b"HTTP/1.1 413 "] * 4, [a[:200] for a in answers]
    assert running.peak_rss() - before < 32 * MIB


# -- idle and slow connections -----------------------------------------------------------------


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_connections_that_send_no_request_are_closed_after_the_header_timeout(
    start: Start,
) -> None:
    running = start("--header-timeout", "2")
    opened = time.monotonic()
    idle = [_connect(running.port) for _ in range(50)]
    half = _connect(running.port)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    time.sleep(1)
    assert not any(_is_closed(sock) for sock in [*idle, half]), "cut before the timeout"
    assert all(_closed_after(sock, 6 - (time.monotonic() - opened)) for sock in [*idle, half])
    # after a response, the next request's headers are due within the timeout too
    with _connect(running.port) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(kept, 5)[0] == 200
        kept.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _closed_after(kept, 5)
    for sock in idle:
        sock.close()
    half.close()
    assert _health(running.url) == 200


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_headers_sent_one_byte_a_second_are_cut_at_the_header_timeout(start: Start) -> None:
    running = start("--header-timeout", "2")
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    slow = [_connect(running.port) for _ in range(10)]
    opened = time.monotonic()
    closed: dict[int, float] = {}
    for byte in request:
        if len(closed) == len(slow) or time.monotonic() - opened > 8:
            break
        for index, sock in enumerate(slow):
            if index in closed:
                continue
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed[index] = time.monotonic() - opened
                continue
            if _is_closed(sock):
                closed[index] = time.monotonic() - opened
        time.sleep(1)
    for sock in slow:
        sock.close()
    assert len(closed) == len(slow), f"still open after 8 s: {len(slow) - len(closed)}"
    assert min(closed.values()) > 1.5 and max(closed.values()) < 5, closed


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_pipelined_requests_behind_a_long_poll_are_answered_in_order_and_never_cut(
    start: Start,
) -> None:
    """httptools parses a pipelined request while the one before it runs (h11 waits for the
    response): either way, headers that are in are never cut by the timeout."""
    running = start("--header-timeout", "2")
    token = (running.data.parent / "pi-1.token").read_text()
    desired = f"{running.url}/v1/devices/pi-1/desired"
    tag = httpx.get(desired, headers={"Authorization": f"Bearer {token}"}).headers["etag"]
    poll = (
        f"GET /v1/devices/pi-1/desired?wait=5 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nIf-None-Match: {tag}\r\n\r\n"
    ).encode()
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(running.port) as sock:
        sent = time.monotonic()
        sock.sendall(poll + health + health)  # three requests in one write
        assert _statuses(sock, 3, 10) == [304, 200, 200]
        assert time.monotonic() - sent > 4.5  # the poll held, past two header timeouts
        # kept alive: the next request is served on the same connection
        sock.sendall(health)
        assert _read_response(sock, 5)[0] == 200
        # and its successor's headers are due within the timeout of that response
        answered = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _closed_after(sock, 5)
        assert 1.5 < time.monotonic() - answered < 4


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process, a 30 s long poll
def test_long_polls_outlive_a_short_header_timeout(start: Start, upstream: git.Repo) -> None:
    running = start("--header-timeout", "2", "--watch")
    tokens = {d: (running.data.parent / f"{d}.token").read_text() for d in ("pi-1", "pi-2")}
    desired = f"{running.url}/v1/devices/{{}}/desired"
    tags = {}
    for device, token in tokens.items():
        first = httpx.get(desired.format(device), headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 200, first.text
        tags[device] = first.headers["etag"]
    results: dict[str, tuple[int, float]] = {}

    def poll(device: str) -> None:
        headers = {"Authorization": f"Bearer {tokens[device]}", "If-None-Match": tags[device]}
        sent = time.monotonic()
        answer = httpx.get(
            desired.format(device), params={"wait": "30"}, headers=headers, timeout=45
        )
        results[device] = (answer.status_code, time.monotonic() - sent)

    threads = [threading.Thread(target=poll, args=(d,)) for d in tokens]
    for thread in threads:
        thread.start()
    time.sleep(20)  # ten header timeouts
    commit(upstream, "nantes too", {"nantes.yaml": NANTES})  # pi-2's document changes
    for thread in threads:
        thread.join(40)
    assert results["pi-1"][0] == 304 and results["pi-1"][1] >= 29, results
    assert results["pi-2"][0] == 200 and 19 < results["pi-2"][1] < 29, results


NANTES = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Deployment
    metadata: {name: web-nantes}
    spec:
      application: web
      release: "1.0.0"
      selector: {matchLabels: {site: nantes}}
    """


# -- connections and file descriptors ----------------------------------------------------------


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_connections_over_the_cap_are_answered_503(start: Start) -> None:
    running = start("--max-connections", "8", "--header-timeout", "3")
    idle = [_connect(running.port) for _ in range(10)]
    time.sleep(0.5)
    with _connect(running.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(sock, 5)
        assert (status, headers["connection"]) == (503, "close")
        assert "connections" in _detail(body)
    _wait(lambda: all(_is_closed(sock) for sock in idle), 6, "the idle connections cut")
    for sock in idle:
        sock.close()
    assert _health(running.url) == 200


@BOTH_PARSERS
@pytest.mark.e2e  # a controller process
def test_running_out_of_file_descriptors_is_survived_and_logged_sparingly(
    start: Start,
) -> None:
    running = start("--header-timeout", "2", nofile=(256, 256))
    idle = [_connect(running.port) for _ in range(400)]  # beyond the controller's limit
    time.sleep(1)
    asked = time.monotonic()
    answer = httpx.get(f"{running.url}/healthz", timeout=20)
    assert answer.status_code in (200, 503) and time.monotonic() - asked < 15
    time.sleep(3)
    for sock in idle:
        sock.close()
    _wait(lambda: _health(running.url) == 200, 10, "healthy again")
    log = running.log.read_text(errors="replace")
    about = [
        line
        for line in log.splitlines()
        if re.search(r"descriptor|open files|out of system resource", line, re.I)
    ]
    assert 1 <= len(about) <= 5, f"{len(about)} lines, {len(log)} bytes: {about[:3]}"
    assert len(log) < 100_000


@pytest.mark.e2e  # a controller process
def test_the_controller_raises_its_soft_open_file_limit_to_the_hard_one(start: Start) -> None:
    running = start(nofile=(256, 4096))
    assert running.open_files_limit() == (4096, 4096)


# -- start-up ------------------------------------------------------------------------------------


@pytest.mark.e2e  # a controller process
def test_an_empty_webhook_secret_file_is_a_start_up_error(
    tmp_path: Path, upstream: git.Repo
) -> None:
    (tmp_path / "empty").write_bytes(b" \n")
    args = [sys.executable, "-m", "reconciler", "controller", "--repo", upstream.working_dir,
            "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}",
            "--webhook-secret-file", str(tmp_path / "empty")]  # fmt: skip
    done = subprocess.run(args, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done
    assert done.stderr.decode().splitlines() == [f"error: {tmp_path / 'empty'} is empty"]


@pytest.mark.e2e  # a controller process
def test_the_running_controller_serves_no_api_documentation(start: Start) -> None:
    running = start()
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        answer = httpx.get(f"{running.url}{path}")
        assert answer.status_code == 404 and _detail(answer.content), path


# -- the parts, without a process ----------------------------------------------------------------


def test_each_route_has_its_cap() -> None:
    caps = BodyCaps(report=10)
    assert caps.for_path("/v1/hooks/git") == 25 * MIB
    assert caps.for_path("/v1/devices/pi-1/status") == 10
    assert caps.for_path("/v1/devices/pi-1/desired") == 64 * 1024
    assert caps.for_path("/v1/devices/a/b/status") == 64 * 1024
    assert caps.for_path("/healthz") == 64 * 1024


def test_the_default_connection_cap_leaves_descriptors_for_the_rest() -> None:
    assert default_max_connections(1024) == 1024 - 128
    assert default_max_connections(256) == 128
    assert default_max_connections(100) == 50
    assert default_max_connections(1 << 20) == (1 << 20) - 128


def test_a_flood_of_one_event_is_one_line_per_period_with_a_count() -> None:
    now = [0.0]
    sparse = Sparse("out of file descriptors", every=10, clock=lambda: now[0])
    logged = []
    for step in range(3000):  # 30 s of 100 a second
        now[0] = step / 100
        if sparse.note():
            logged.append(now[0])
    assert logged == [0.0, 10.0, 20.0]
    assert sparse.suppressed == 999
