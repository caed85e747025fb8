"""The controller's connections: a header timeout uvicorn lacks, a cap on connections, and one
log line, not thousands, when file descriptors run out.

Every open connection is a file descriptor. uvicorn's `timeout_keep_alive` runs only between
requests and any byte cancels it, so a client that connects and sends nothing, or one header
byte every few seconds, held its descriptor for ever: 1,100 of them exhausted a limit of 1,024,
and `/healthz` and the polls timed out. `protocol` makes uvicorn's h11 protocol close a
connection that has not completed its request's headers within `header_timeout` of connecting
or of its previous response, and answer 503 on a connection opened beyond `max_connections`.
A request whose headers are in is never cut by the timeout: a long poll waits up to a minute.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from reconciler.logs import get_logger
from reconciler.server.errors import error_response

log = get_logger("hedgerow.server")

HEADER_TIMEOUT = 10.0
# Descriptors kept for all but connections: the database (a pool of up to 15 for PostgreSQL),
# git's pipes, the mirror's files, the log, the watcher, the listening sockets.
HEADROOM = 128
# The errors of accept() when the process or the system is out of descriptors or memory.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def default_max_connections(open_files: int) -> int:
    """The connections a process with `open_files` descriptors may hold: all but HEADROOM,
    and at least half of them."""
    return max(open_files - HEADROOM, open_files // 2)


class Sparse:
    """A log line at most once every `every` seconds, counting the ones it held back: a flood
    of the same event (thousands a second) is one line now and then, not megabytes."""

    def __init__(
        self,
        event: str,
        every: float = 10.0,
        *,
        level: str = "error",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event = event
        self.level = level
        self.every = every
        self.clock = clock
        self.last: float | None = None
        self.suppressed = 0

    def note(self, **fields: Any) -> bool:
        """Log the event now, or count it; whether it was logged."""
        now = self.clock()
        if self.last is not None and now - self.last < self.every:
            self.suppressed += 1
            return False
        getattr(log, self.level)(
            self.event, **fields, suppressed=self.suppressed, every_seconds=self.every
        )
        self.last, self.suppressed = now, 0
        return True


class ExhaustionLog:
    """An event loop exception handler. asyncio's accept loop reports every failed accept()
    with a traceback, up to `backlog` (2,048) times a turn once descriptors run out, and each
    schedules a retry that fails again once the server is closed: 55 MB of log in 25 s. Those
    become one line every few seconds; anything else goes to asyncio's own handler."""

    def __init__(self, every: float = 10.0) -> None:
        self.sparse = Sparse("out of file descriptors: new connections wait", every)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in _EXHAUSTED:
            self.sparse.note(error=os.strerror(error.errno))
        elif isinstance(error, ValueError) and _retried_accept(context.get("handle")):
            self.sparse.suppressed += 1  # a retry of the above, after the server closed
        else:
            loop.default_exception_handler(context)


def _retried_accept(handle: object) -> bool:
    callback = getattr(handle, "_callback", None)
    return getattr(callback, "__name__", None) == "_start_serving"


class _Guarded(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a connection cap (see the module)."""

    header_timeout: ClassVar[float] = HEADER_TIMEOUT
    max_connections: ClassVar[int | None] = None
    refused: ClassVar[Sparse] = Sparse("over the connection cap: answered 503", level="warning")

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.app = self._unavailable  # this connection's request, whenever it comes
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are in: no timeout while it runs
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before uvicorn goes on to a pipelined request, which disarms it
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refused.note(max_connections=self.max_connections)
        detail = f"the controller holds its maximum of {self.max_connections} connections"
        headers = {"Connection": "close", "Retry-After": "1"}
        await error_response(503, f"{detail}; try again", headers)(scope, receive, send)


def protocol(*, header_timeout: float, max_connections: int | None) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol (for `uvicorn.Config(http=...)`) with these limits. h11 always,
    even where httptools is installed: the timeout hooks its events."""

    class Guarded(_Guarded):
        pass

    Guarded.header_timeout = header_timeout
    Guarded.max_connections = max_connections
    return Guarded
