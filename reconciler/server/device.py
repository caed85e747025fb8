"""The device API: `GET /v1/devices/{name}/desired` (ETag, long poll) and
`PUT /v1/devices/{name}/status`, each with the device's own token.

Tokens and registry passwords are never logged and never returned, except a device's own pull
credentials in its desired document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from reconciler import wire
from reconciler.core.document import DocumentUnavailable
from reconciler.core.reports import SequenceConflict
from reconciler.server.auth import (
    DeviceName,
    TokenCache,
    authorize_device,
    bearer_token,
    device_access,
)
from reconciler.server.backend import Backend
from reconciler.server.bodies import Out
from reconciler.server.errors import described, error_response, unavailable, unexpected
from reconciler.server.longpoll import MAX_WAIT, Changes, Documents, long_poll, parse_wait
from reconciler.server.metrics import Metrics
from reconciler.server.openapi import wire_ref
from reconciler.server.polls import PollTimes
from reconciler.store import StoreUnavailable

# `/v1/devices/{name}/{route}`, with Starlette's `{name}`: one segment, not empty
_DEVICE_PATH = re.compile(r"/v1/devices/([^/]+)/([^/]+)")
_REFUSED = {
    "_401": "No token, or an unknown one.",
    "_403": "The token belongs to another device.",
}


class Accepted(Out):
    accepted: bool
    last_seq: int = Field(
        description="The highest event sequence number stored for the device's journal: the "
        "report's epoch (0 before any); the agent forgets its events up to it."
    )


class DesiredRoute:
    """GET /v1/devices/{name}/desired, the hottest route (every device, every poll): a bare
    ASGI app put before the documented FastAPI route, reading the scope itself. FastAPI's
    per-request dependency solving halved the 304 rate, and Starlette's Request costs a tenth
    more; an unchanged document is answered from memory. A plain GET skips the middleware
    stack too (`app.HedgerowApp`): each held poll kept the frames of every middleware for up
    to a minute."""

    def __init__(
        self,
        documents: Documents,
        changes: Changes,
        cache: TokenCache,
        metrics: Metrics,
        polls: PollTimes,
    ) -> None:
        self.documents = documents
        self.changes = changes
        self.cache = cache
        self.metrics = metrics
        self.polls = polls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Through the middleware stack (`DeviceRoutes`): a GET with a body (see `device`)."""
        await self.serve(scope, receive, send, scope["path_params"]["name"], alone=False)

    @staticmethod
    def device(scope: Scope) -> str | None:
        """The device of a poll that may skip the middleware stack (see `app.HedgerowApp`),
        else None: a GET of the route without a body (a body goes through BodyLimit)."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        match = _DEVICE_PATH.fullmatch(scope["path"])
        if match is None or match[2] != "desired":
            return None
        for key, _ in scope["headers"]:
            if key == b"content-length" or key == b"transfer-encoding":
                return None
        return match[1]

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, name: str, *, alone: bool = True
    ) -> None:
        """Answer a poll of `name`'s document, after the long poll if it asks for one. Held up
        to a minute by every device: one frame, no closure. `alone`, ahead of the middleware
        stack: an unexpected error is answered as its ServerErrorMiddleware would (the one
        logged 500), then raised to the server, which closes the connection."""
        authorization = if_none_match = None  # the headers' own bytes: no copy held
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"if-none-match":
                if_none_match = value
        response: Response
        try:
            await authorize_device(self.cache, name, _token(authorization))
            self.polls.record(name)
            wait = parse_wait(scope["query_string"])
            response, waited = await long_poll(
                self.documents, self.changes, name, wait, if_none_match
            )
            if waited and response.status_code != 304:
                # the token, read again from the store: one revoked while the poll waited
                # never receives a document, nor the pull credentials it may carry
                await authorize_device(self.cache, name, _token(authorization), fresh=True)
        except HTTPException as exc:
            self.metrics.poll(exc.status_code)
            response = error_response(exc.status_code, str(exc.detail), exc.headers)
        except (StoreUnavailable, DocumentUnavailable) as exc:
            self.metrics.poll(503)
            response = unavailable(exc)
        except Exception as exc:
            if alone:
                await (await unexpected(Request(scope), exc))(scope, receive, send)
            raise
        else:
            self.metrics.poll(response.status_code)
        await response(scope, receive, send)


def _token(authorization: bytes | None) -> str | None:
    return None if authorization is None else bearer_token(authorization.decode("latin-1"))


class DeviceRoutes:
    """The two routes every device calls, served ahead of the router and of the middleware
    inside this one: each layer costs every request its time. Added inside BodyLimit (reports
    stay capped) and inside Starlette's error middleware (a bug is still a bare 500). A plain
    GET of a document skips even those (`app.HedgerowApp`): it may be held for a minute."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _DEVICE_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        route = self.routes.get((scope["method"], match[2])) if match else None
        if match is None or route is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"name": match[1]}
        await route(scope, receive, send)


class StatusRoute:
    """PUT /v1/devices/{name}/status, the other route every device calls (a report at each
    change and each period): bare ASGI like DesiredRoute, put before the documented route.
    FastAPI's dependency solving and Request cost more than storing a converged report."""

    def __init__(self, backend: Backend, cache: TokenCache) -> None:
        self.backend = backend
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
        name = scope["path_params"]["name"]
        response: Response
        try:
            await authorize_device(self.cache, name, _token(authorization))
            body = await _body(receive)
            if body is None:
                return  # the device went away: nothing was stored, nobody to answer
            last = await _store(self.backend, name, body)
        except HTTPException as exc:
            response = error_response(exc.status_code, str(exc.detail), exc.headers)
        except StoreUnavailable as exc:
            response = unavailable(exc)
        else:
            response = JSONResponse({"accepted": True, "lastSeq": last})
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes | None:
    """The request's body (bounded by the BodyLimit middleware around every route); None
    when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _store(backend: Backend, name: str, body: bytes) -> int:
    """Decode and store one report; HTTPException for what the device must fix."""
    try:  # msgspec, not pydantic: the wire types are Structs (see reconciler.wire)
        report = msgspec.json.decode(body, type=wire.StatusReport)
    except msgspec.DecodeError as exc:  # its text names the JSON path: `$.events[0].seq`
        raise HTTPException(422, str(exc)) from None
    except RecursionError:  # deep nesting in a field the wire types ignore
        raise HTTPException(422, "$: the JSON is nested too deeply") from None
    if report.device != name:
        raise HTTPException(422, f"the report is for device {report.device!r}, not {name!r}")
    try:
        return await backend.report(report)
    except SequenceConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


_DESIRED_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "Seconds to hold the request until the document changes (long poll).",
        "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
    },
    {
        "name": "if-none-match",
        "in": "header",
        "required": False,
        "description": "The ETag the device holds: 304 while it is current.",
        "schema": {"type": "string"},
    },
]


def install(
    app: FastAPI, backend: Backend, cache: TokenCache, metrics: Metrics, polls: PollTimes
) -> DesiredRoute:
    """The device routes on `app`; the desired route, for the app to serve ahead of its
    middleware stack."""
    changes = Changes()
    backend.on_change(changes.notify)
    documents = Documents(backend, pending=cache.enrolled)

    @app.get(
        "/v1/devices/{name}/desired",
        operation_id="getDesired",
        tags=["device"],
        responses={
            **described(
                **_REFUSED,
                _404="The applied revision has no such device (and it is not enrolled), or "
                "the name cannot be one.",
                _503="The store does not answer, or the controller is starting: retry.",
                _422="`wait` is not a number of seconds from 0 to 60.",
            ),
            200: {
                "content": {"application/json": {"schema": wire_ref(wire.DesiredDocument)}},
                "headers": {
                    "ETag": {
                        "description": "Quoted SHA-256 of the body.",
                        "schema": {"type": "string"},
                    }
                },
            },
            304: {"description": "Unchanged: the ETag matches If-None-Match (after `wait`)."},
        },
        openapi_extra={"security": [{"deviceToken": []}], "parameters": _DESIRED_PARAMETERS},
    )
    async def desired(name: DeviceName, request: Request) -> Response:
        """What the device should run. With If-None-Match and `wait`, a long poll: answered as
        soon as the document changes (a new revision, new pull credentials), else 304."""
        raise AssertionError("served by DesiredRoute, put before this route")  # pragma: no cover

    desired_route = DesiredRoute(documents, changes, cache, metrics, polls)
    routes: dict[tuple[str, str], ASGIApp] = {("GET", "desired"): desired_route}

    @app.put(
        "/v1/devices/{name}/status",
        operation_id="putStatus",
        tags=["device"],
        response_model=Accepted,
        dependencies=[Depends(device_access(cache))],
        responses=described(
            **_REFUSED,
            _409="An event's sequence number names another event of the same journal (epoch) "
            "already, or two in the report: nothing is stored.",
            _413="The report is over --max-report-bytes.",
            _422="Invalid (the detail names the field), or for another device: nothing is stored.",
            _503="The store does not answer: keep the report and send it again later.",
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": wire_ref(wire.StatusReport)}},
            }
        },
    )
    async def status_report(name: DeviceName, request: Request) -> Accepted:
        """Store what the device runs and its events (once per sequence number of its journal;
        the schema bounds how many one report holds), then re-plan the device."""
        raise AssertionError("served by StatusRoute, put before this route")  # pragma: no cover

    reports = StatusRoute(backend, cache)
    routes["PUT", "status"] = reports
    app.add_middleware(DeviceRoutes, routes=routes)
    return desired_route
