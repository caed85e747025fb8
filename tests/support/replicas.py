"""Controller replicas on loopback for the agent's failover tests: real HTTP servers that serve
one device's document and take its reports from a store they share, as replicas on one
database do, and that can fail (a status for everything), hold a long poll, or die.

Each replica notes the requests it received. The shared store keeps an event once per journal
epoch and number, and refuses another event under a number it holds (409), as the controller's.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from reconciler.wire import DesiredDocument


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    if_none_match: str | None
    authorization: str
    body: dict[str, Any] | None = None  # a report, decoded


@dataclass
class Store:
    """What every replica serves and keeps: one document, and the events reported."""

    document: DesiredDocument
    events: dict[tuple[str | None, int], dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def etag(self) -> str:
        return f'"{self.document.revision}"'

    def append(self, epoch: str | None, events: list[dict[str, Any]]) -> int | None:
        """Keep the events not kept yet; None when a number is held by another event."""
        with self.lock:
            for event in events:
                kept = self.events.setdefault((epoch, event["seq"]), event)
                if kept != event:
                    return None
            return max((seq for e, seq in self.events if e == epoch), default=None)


class Replica:
    """`url`, the requests it saw, and what it does: `status` answers every request with that
    code; `hold` is the longest it keeps a long poll that has nothing new; `lose_answers`
    stores a report and drops the connection before answering. `die()` closes its port and
    drops every connection, a long poll it is holding too."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[Request] = []
        self.status: int | None = None
        self.hold = 0.2
        self.lose_answers = False
        self.holding = threading.Event()  # a long poll is being held
        self.dead = threading.Event()
        self._connections: list[socket.socket] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._serving = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._serving.start()

    def die(self) -> None:
        if self.dead.is_set():
            return
        self.dead.set()
        self._server.shutdown()
        self._server.server_close()
        self._serving.join()
        for connection in list(self._connections):
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def requests(self, method: str) -> list[Request]:
        return [r for r in self.seen if r.method == method]


def _handler(replica: Replica) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the controller: the agent reuses it

        def setup(self) -> None:
            super().setup()
            replica._connections.append(self.connection)

        def do_GET(self) -> None:
            self._note(None)
            if self._failing():
                return
            store = replica.store
            if self.headers.get("If-None-Match") == store.etag:
                wait = float(self.path.partition("wait=")[2] or 0)
                if wait > 0:
                    replica.holding.set()
                    replica.dead.wait(min(wait, replica.hold))
                if replica.dead.is_set():
                    self._drop()
                    return
                self._answer(304, b"", etag=store.etag)
                return
            self._answer(200, msgspec.json.encode(store.document), etag=store.etag)

        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self._note(body)
            if self._failing():
                return
            last = replica.store.append(body.get("epoch"), body.get("events", []))
            if last is None:
                self._answer(409, b'{"detail":"event numbers held by other events"}')
            elif replica.lose_answers:
                self._drop()
            else:
                self._answer(200, json.dumps({"lastSeq": last}).encode())

        def _note(self, body: dict[str, Any] | None) -> None:
            replica.seen.append(
                Request(
                    self.command,
                    self.path,
                    self.headers.get("If-None-Match"),
                    self.headers.get("Authorization", ""),
                    body,
                )
            )

        def _failing(self) -> bool:
            if replica.dead.is_set():
                self._drop()
                return True
            if replica.status is not None:
                self._answer(replica.status, b'{"detail":"replica failing"}', retry_after=True)
                return True
            return False

        def _answer(
            self, status: int, body: bytes, etag: str | None = None, retry_after: bool = False
        ) -> None:
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            if retry_after:
                self.send_header("Retry-After", "5")
            if status != 304:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

        def _drop(self) -> None:
            """Gone without an answer: the client sees the connection closed."""
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests assert on `seen`."""

    return Handler


@contextmanager
def replicas(document: DesiredDocument, count: int = 2) -> Iterator[list[Replica]]:
    """`count` replicas sharing one store; all of them are stopped on exit."""
    store = Store(document)
    started = [Replica(store) for _ in range(count)]
    try:
        yield started
    finally:
        for replica in started:
            replica.die()


def closed_port_url() -> str:
    """An http:// URL on loopback that nothing listens on: connections are refused."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    return f"http://127.0.0.1:{port}"
