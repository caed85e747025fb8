"""The controller's connections: a header timeout uvicorn lacks, a cap on connections, and one
log line, not thousands, when file descriptors run out.

Every open connection is a file descriptor. uvicorn's `timeout_keep_alive` runs only between
requests and any byte cancels it, so a client that connects and sends nothing, or one header
byte every few seconds, held its descriptor for ever: 1,100 of them exhausted a limit of 1,024,
and `/healthz` and the polls timed out. `protocol` makes uvicorn's HTTP/1.1 protocol (httptools'
where it is installed, else h11's; one mixin, hooked where each parser has a request's headers
in) close a connection that has not completed its request's headers within `header_timeout`
of connecting or of its previous response, and answer 503 on a connection opened beyond
`max_connections`. A request whose headers are in is never cut by the timeout: a long poll
waits up to a minute.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed (PyPy, or uvicorn without it): h11 then
    HTTPTOOLS = False
else:
    HTTPTOOLS = True
try:
    import uvloop
except ImportError:  # not installed (Windows, PyPy): asyncio's own loop then
    UVLOOP = False
else:
    UVLOOP = True

from reconciler.logs import get_logger
from reconciler.server.errors import error_response

log = get_logger("hedgerow.server")

HEADER_TIMEOUT = 10.0
# The listen queue: uvicorn's 2,048 overflowed when 100,000 devices reconnected at once (1.3
# million dropped SYNs, each retried after seconds); the kernel caps it at net.core.somaxconn.
BACKLOG = 4096
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


class _Limits(asyncio.Protocol):
    """The header timeout and the connection cap, for either of uvicorn's HTTP/1.1 protocols
    (see the module). Each subclass disarms the timer where its parser has a request's headers
    in, and arms it after a response when no request with its headers in is left to run."""

    header_timeout: ClassVar[float] = HEADER_TIMEOUT
    max_connections: ClassVar[int | None] = None
    refused: ClassVar[Sparse] = Sparse("over the connection cap: answered 503", level="warning")

    _header_timer: asyncio.TimerHandle | None = None

    if TYPE_CHECKING:  # set by uvicorn's protocols, which come after this class in the MRO
        app: ASGI3Application
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        connections: set[Any]
        flow: Any  # uvicorn's FlowControl
        cycle: Any  # each protocol's RequestResponseCycle, or None before a first request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.flow._is_writable_event = lighter(self.flow._is_writable_event)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.app = self._unavailable  # type: ignore[assignment]  # whenever a request comes
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _idle(self) -> bool:
        """No request whose headers are in is running or waiting to run."""
        return self.cycle is None or bool(self.cycle.response_complete)

    def _lighten(self) -> None:
        """The new request's body event made lighter, before its task first runs."""
        self.cycle.message_event = lighter(self.cycle.message_event)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._idle():
            self.transport.close()

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refused.note(max_connections=self.max_connections)
        detail = f"the controller holds its maximum of {self.max_connections} connections"
        headers = {"Connection": "close", "Retry-After": "1"}
        await error_response(503, f"{detail}; try again", headers)(scope, receive, send)


class GuardedH11(_Limits, H11Protocol):
    """h11 parses a request only once the previous response is complete: a new cycle after
    `handle_events` is a request whose headers are in."""

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are in: no timeout while it runs
            self._disarm()
            self._lighten()

    def on_response_complete(self) -> None:
        self._arm()  # before uvicorn goes on to a pipelined request, which disarms it
        super().on_response_complete()


if HTTPTOOLS:  # its module imports httptools

    class GuardedHttpTools(_Limits, HttpToolsProtocol):
        """httptools parses all it is given, pipelined requests too: their headers are in as soon
        as `on_headers_complete`, and uvicorn queues them until the running response completes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pipeline = _Pipeline()  # type: ignore[assignment]

        def on_headers_complete(self) -> None:
            cycle = self.cycle
            super().on_headers_complete()
            self._disarm()
            if self.cycle is not cycle:  # not an upgrade, which uvicorn refuses
                self._lighten()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # starts the next pipelined request, if any
            if self._idle() and not self.transport.is_closing():
                self._arm()


class _Event(asyncio.Event):
    """asyncio.Event with its waiters in a list: asyncio's deque takes about 700 bytes before
    any waiter comes, and uvicorn keeps two events a connection (writing paused, the request's
    body), through every held long poll. asyncio only appends, removes and iterates them."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: Any = []


def lighter(event: asyncio.Event) -> asyncio.Event:
    """An `_Event` in the state of `event`, for one nothing waits on yet."""
    light = _Event()
    if event.is_set():
        light.set()
    return light


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests as a list (a deque takes about 700 bytes empty,
    a connection's whole life): it only calls `appendleft`, `pop` and `bool` on it."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


HttpName = Literal["httptools", "h11"]


def http_implementation(wanted: str | None = None) -> HttpName:
    """httptools where it imports (it parses in C; h11 was a fifth of the CPU serving 10k long
    polls), else h11; `wanted` ("httptools", "h11" or "auto"/None) overrides."""
    if wanted == "h11":
        return "h11"
    if wanted == "httptools" and not HTTPTOOLS:
        raise ValueError("httptools is not installed")
    if wanted not in (None, "", "auto", "httptools"):
        raise ValueError(f"unknown HTTP implementation {wanted!r}: auto, httptools or h11")
    return "httptools" if HTTPTOOLS else "h11"


def protocol(
    *, header_timeout: float, max_connections: int | None, http: str | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (for `uvicorn.Config(http=...)`) with these limits: the
    httptools one where it imports, else h11's (see `http_implementation`)."""
    httptools = http_implementation(http) == "httptools"
    base: type[_Limits] = GuardedHttpTools if httptools else GuardedH11

    class Guarded(base):  # type: ignore[valid-type,misc]
        pass

    Guarded.header_timeout = header_timeout
    Guarded.max_connections = max_connections
    return Guarded


LoopName = Literal["uvloop", "asyncio"]


def event_loop(
    wanted: str | None = None,
) -> tuple[LoopName, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop to serve on, and a factory for it (for `asyncio.Runner`): asyncio's unless
    uvloop is `wanted`. Not uvloop by default: it measured no faster here once httptools parses,
    and libuv's accept differs where descriptors run out. A connection that comes then is
    accepted and closed at once, with no log line (asyncio leaves it waiting in the backlog,
    answered once a descriptor is free, and `ExhaustionLog` says so), and any other accept
    error (ENOBUFS, ENOMEM) closes the listening socket for good, silently."""
    if wanted in (None, "", "asyncio"):
        return "asyncio", asyncio.new_event_loop
    if wanted != "uvloop":
        raise ValueError(f"unknown event loop {wanted!r}: asyncio or uvloop")
    if not UVLOOP:
        raise ValueError("uvloop is not installed")
    return "uvloop", uvloop.new_event_loop
