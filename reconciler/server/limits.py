"""Request bodies are capped before they are buffered.

Starlette reads a body whole into memory when a route asks for it, so four unsigned 300 MB
webhook POSTs once took the controller to 1.8 GB. `BodyLimit` is a pure ASGI middleware in
front of every route: a declared `Content-Length` over the route's cap is answered 413 before
a byte of the body is read, and a chunked body (no length) is counted as `receive` hands it
over, 413 as soon as the count crosses the cap. The 413 closes the connection, so the rest of
the body is never read; so does any answer given before a chunked body ended (uvicorn would
otherwise read and drop the rest, however long). A request without a body (every poll) costs
one pass over its headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.errors import HedgerowError
from reconciler.server.errors import error_response

KIB = 1024
MIB = 1024 * KIB
# GitHub does not deliver a webhook payload over 25 MB: a larger one is no push of theirs.
WEBHOOK_BYTES = 25 * MIB
REPORT_BYTES = MIB
DEFAULT_BYTES = 64 * KIB

_REPORT = re.compile(r"/v1/devices/[^/]+/status")
_WEBHOOK = "/v1/hooks/git"
_CLOSE = (b"connection", b"close")


@dataclass(frozen=True)
class BodyCaps:
    """The largest request body, in bytes, of each kind of route."""

    report: int = REPORT_BYTES  # PUT /v1/devices/{name}/status
    webhook: int = WEBHOOK_BYTES  # POST /v1/hooks/git
    default: int = DEFAULT_BYTES  # every other route

    def for_path(self, path: str) -> int:
        if path == _WEBHOOK:
            return self.webhook
        if _REPORT.fullmatch(path):
            return self.report
        return self.default


class BodyTooLarge(HTTPException, HedgerowError):
    """Raised from `receive` when a chunked body crosses its cap. An HTTPException, so that
    FastAPI passes it through unchanged (it turns other errors of reading a body into 400) and
    the one error handler answers it; `BodyLimit` answers it too if it gets that far."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, too_large(cap), headers={"Connection": "close"})


def too_large(cap: int) -> str:
    return f"the request body is larger than this route accepts ({cap} bytes)"


class BodyLimit:
    """The middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, caps: BodyCaps) -> None:
        self.app = app
        self.caps = caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
            elif key == b"transfer-encoding":
                chunked = True
        if length is None and not chunked:  # no body: a GET, a poll
            await self.app(scope, receive, send)
            return
        cap = self.caps.for_path(scope["path"])
        if length is not None and (not length.isdigit() or int(length) > cap):
            await _refuse(cap, scope, receive, send)
            return
        if not chunked:  # the server reads no more than Content-Length
            await self.app(scope, receive, send)
            return
        await _Counted(self.app, cap)(scope, receive, send)


class _Counted:
    """One chunked request: the bytes `receive` has handed over, whether the body ended, and
    whether a response began."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app = app
        self.cap = cap
        self.received = 0
        self.ended = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.received > self.cap:  # an app that caught BodyTooLarge asks again
                raise BodyTooLarge(self.cap)
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.cap:
                    raise BodyTooLarge(self.cap)
                self.ended = not message.get("more_body", False)
            return message

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
                if not self.ended:  # answered unread (a 401): close, or the server would
                    # read and drop the rest of the body, however long it goes on
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if self.started:
                raise
            await _refuse(self.cap, scope, receive, send)


async def _refuse(cap: int, scope: Scope, receive: Receive, send: Send) -> None:
    """413 with the one error body; `Connection: close` makes the server stop reading."""
    response = error_response(413, too_large(cap), {"Connection": "close"})
    await response(scope, receive, send)
