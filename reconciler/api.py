"""The device API and the operator API, versioned under /v1, and the metrics.

Devices poll `GET /v1/devices/{name}/desired` (with an ETag and an optional long poll) and
report with `PUT /v1/devices/{name}/status`, each with its own bearer token; operators read the
controller's state with the operator token. Tokens and registry passwords are never logged and
never returned, except a device's own pull credentials in its desired document.

Reads run in threads of their own so that a slow git fetch in the controller's worker never
stalls a poll; the one write (a status report) goes through the worker, the store's one writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qs

import msgspec
import structlog
from fastapi import (
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    Security,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import create_engine
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reconciler import tokens, wire
from reconciler.controller import Controller
from reconciler.problems import Problem
from reconciler.store import EventRecord, Store

if TYPE_CHECKING:
    from reconciler.serve import Runner

log = structlog.get_logger("hedgerow.api")

MAX_WAIT = 60.0
DeviceName = Annotated[str, Path(description="The Device's metadata.name.")]
Credentials = HTTPAuthorizationCredentials | None
device_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="deviceToken",
    description="The device's own token, from `hedgerow device token NAME`.",
)
operator_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="operatorToken",
    description="The controller's `--operator-token-file`.",
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an unknown one."},
}
_DEVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"description": "The token belongs to another device."},
}


# -- response bodies of the operator API ------------------------------------------------------


class Out(BaseModel):
    """The operator API's bodies: pydantic (FastAPI documents them), camelCase like the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, frozen=True
    )


class Accepted(Out):
    accepted: bool
    last_seq: int = Field(description="The highest event sequence number stored for the device.")


class Rejected(Out):
    revision: str
    at: datetime
    errors: list[dict[str, Any]]


class ControllerStatus(Out):
    revision: str | None = Field(description="The applied revision; None before the first.")
    rejected: list[Rejected] = Field(description="The last rejected commits, newest first.")
    deployments: list[dict[str, Any]] = Field(description="Status of each deployment on a device.")


class EventOut(BaseModel):
    id: int
    at: datetime
    device: str | None
    deployment: str | None
    event: str
    message: str
    revision: str | None


class DesiredOut(Out):
    deployment: str
    application: str
    release: str
    state: Literal["Running", "Stopped"]
    redeploy: str | None
    digest: str


class Deployments(Out):
    revision: str | None
    devices: dict[str, list[DesiredOut]] = Field(description="What each device should run.")


# -- long polls and metrics -------------------------------------------------------------------


class Changes:
    """Wakes the long polls of devices whose desired document may have changed.

    Notified from the controller's worker thread (a revision applied) or from the event loop (a
    report that changes a device's pull credentials). Each waiter has an asyncio.Event set
    through its own loop's `call_soon_threadsafe`, so any thread may notify.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, devices: Sequence[str] | None) -> None:
        """Wake the waiters of `devices`, or every waiter for None."""
        with self._lock:
            if devices is None:
                waiters = [w for group in self._waiters.values() for w in group]
            else:
                waiters = [w for device in devices for w in self._waiters.get(device, ())]
        for loop, event in waiters:
            with suppress(RuntimeError):  # that loop is closed: nobody waits on it any more
                loop.call_soon_threadsafe(event.set)

    @contextmanager
    def watch(self, device: str) -> Iterator[asyncio.Event]:
        """An event set on each change of `device` while the block runs; enter it before
        reading the document, so that no change between the read and the wait is missed."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(device, set()).add(waiter)
        try:
            yield waiter[1]
        finally:
            with self._lock:
                group = self._waiters.get(device, set())
                group.discard(waiter)
                if not group:
                    self._waiters.pop(device, None)


class Metrics:
    """One registry per app, so that several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "hedgerow_reconcile_seconds", "Time to reconcile one device.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "hedgerow_queue_depth",
            "Devices ready and waiting for a worker.",
            registry=self.registry,
        )
        self.deployments = Gauge(
            "hedgerow_deployments",
            "Deployments on devices, by condition type and status.",
            ["condition", "status"],
            registry=self.registry,
        )
        self.polls = Counter(
            "hedgerow_polls_total",
            "Desired-state polls by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self._poll_codes: dict[int, Any] = {}

    def poll(self, code: int) -> None:
        """Count a poll; the labelled child is looked up once per code (a poll is hot)."""
        child = self._poll_codes.get(code)
        if child is None:
            child = self._poll_codes[code] = self.polls.labels(code=str(code))
        child.inc()


# -- the routes ------------------------------------------------------------------------------


def install(app: FastAPI, runner: Runner, *, operator_token: str | None) -> None:
    """Add the device, operator and metrics routes for `runner`'s controller to `app`."""
    controller = runner.controller
    store = controller.store
    changes = Changes()
    controller.listeners.append(changes.notify)
    documents = Documents(controller)
    device_tokens = TokenCache(store)
    metrics = Metrics()
    runner.reconciled.append(metrics.reconcile_seconds.observe)
    operator_hash = tokens.hash_token(operator_token) if operator_token else None
    document_wire_types(app)

    def device_access(counted: bool) -> Callable[..., Awaitable[None]]:
        """The device-token check; `counted` failures show in hedgerow_polls_total."""

        async def check(
            name: DeviceName, credentials: Annotated[Credentials, Security(device_scheme)]
        ) -> None:
            try:
                await _authorize_device(
                    device_tokens, name, credentials.credentials if credentials else None
                )
            except HTTPException as exc:
                if counted:
                    metrics.poll(exc.status_code)
                raise

        return check

    async def operator_access(
        credentials: Annotated[Credentials, Security(operator_scheme)],
    ) -> None:
        if operator_hash is None:
            raise _unauthorized(
                "the operator API is disabled: start the controller with --operator-token-file"
            )
        if credentials is None or not tokens.check(credentials.credentials, operator_hash):
            raise _unauthorized("the operator token is required")

    @app.get(
        "/v1/devices/{name}/desired",
        operation_id="getDesired",
        tags=["device"],
        responses={
            **_DEVICE_ERRORS,
            200: {
                "content": {"application/json": {"schema": _wire_ref(wire.DesiredDocument)}},
                "headers": {"ETag": {"description": "Quoted SHA-256 of the body."}},
            },
            304: {"description": "Unchanged: the ETag matches If-None-Match (after `wait`)."},
            404: {"description": "The applied revision has no such device."},
            422: {"description": "`wait` is not a number of seconds from 0 to 60."},
        },
        openapi_extra={"security": [{"deviceToken": []}], "parameters": _DESIRED_PARAMETERS},
    )
    async def desired(name: DeviceName, request: Request) -> Response:
        """What the device should run. With If-None-Match and `wait`, a long poll: answered as
        soon as the document changes (a new revision, new pull credentials), else 304."""
        raise AssertionError("served by serve_desired, put before this route")  # pragma: no cover

    hot = DesiredRoute(documents, changes, device_tokens, metrics)
    app.router.routes.insert(0, Route("/v1/devices/{name}/desired", hot, methods=["GET"]))

    @app.put(
        "/v1/devices/{name}/status",
        operation_id="putStatus",
        tags=["device"],
        response_model=Accepted,
        dependencies=[Depends(device_access(counted=False))],
        responses={**_DEVICE_ERRORS, 422: {"description": "Invalid, or for another device."}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _wire_ref(wire.StatusReport)}},
            }
        },
    )
    async def status_report(name: DeviceName, request: Request) -> Accepted:
        """Store what the device runs and its events (once per sequence number), then re-plan
        the device."""
        try:  # msgspec, not pydantic: the wire types are Structs (see reconciler.wire)
            report = msgspec.json.decode(await request.body(), type=wire.StatusReport)
        except msgspec.DecodeError as exc:  # its text names the JSON path: `$.events[0].seq`
            raise HTTPException(422, str(exc)) from None
        if report.device != name:
            raise HTTPException(422, f"the report is for device {report.device!r}, not {name!r}")
        try:
            last = await runner.call(controller.ingest, report)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        runner.queue.add(name)
        return Accepted(accepted=True, last_seq=last)

    operator = [Depends(operator_access)]

    @app.get(
        "/v1/status",
        operation_id="getStatus",
        tags=["operator"],
        response_model=ControllerStatus,
        dependencies=operator,
        responses=_ERRORS,
    )
    async def status() -> ControllerStatus:
        """The applied revision, the last rejected commits with their findings, and every
        deployment's status on every device."""

        def read() -> ControllerStatus:
            return ControllerStatus(
                revision=store.applied_revision(),
                rejected=[
                    Rejected(revision=r.sha, at=r.at, errors=r.errors)
                    for r in store.rejected(limit=10)
                ],
                deployments=[s.status for s in store.statuses()],
            )

        return await asyncio.to_thread(read)

    @app.get(
        "/v1/events",
        operation_id="listEvents",
        tags=["operator"],
        response_model=list[EventOut],
        dependencies=operator,
        responses=_ERRORS,
    )
    async def events(
        device: str | None = None,
        deployment: str | None = None,
        after: Annotated[int | None, Query(ge=0, description="Events after this id.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[EventOut]:
        """The event history, oldest first; page with `after` set to the last id seen."""
        found = await asyncio.to_thread(store.events, device, deployment, after, limit)
        return [_event(e) for e in found]

    @app.get(
        "/v1/deployments",
        operation_id="getDeployments",
        tags=["operator"],
        response_model=Deployments,
        dependencies=operator,
        responses=_ERRORS,
    )
    async def deployments() -> Deployments:
        """What each device should run at the applied revision."""
        applied = controller.applied
        if applied is None:
            return Deployments(revision=None, devices={})
        return Deployments(
            revision=applied.sha,
            devices={
                device: [
                    DesiredOut.model_validate(want, from_attributes=True)
                    for want in sorted(wanted.values(), key=lambda w: w.deployment)
                ]
                for device, wanted in sorted(applied.fleet.items())
            },
        )

    @app.get(
        "/v1/observed",
        operation_id="getObserved",
        tags=["operator"],
        response_model=dict[str, dict[str, Any]],
        dependencies=operator,
        responses=_ERRORS,
    )
    async def observed() -> dict[str, dict[str, Any]]:
        """Each device's last status report (without its events), by device."""
        return await asyncio.to_thread(store.observed_all)

    @app.get(
        "/metrics",
        operation_id="getMetrics",
        tags=["metrics"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def prometheus() -> Response:
        """Prometheus text format: reconcile time, queue depth, conditions, polls."""
        statuses = await asyncio.to_thread(store.statuses)
        counts = Tally(
            (str(c["type"]), str(c["status"]))
            for record in statuses
            for c in record.status.get("conditions", [])
        )
        metrics.deployments.clear()
        for (condition, value), n in sorted(counts.items()):
            metrics.deployments.labels(condition=condition, status=value).set(n)
        metrics.queue_depth.set(runner.queue.depth())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class DesiredRoute:
    """GET /v1/devices/{name}/desired, the hottest route (every device, every poll): a bare
    ASGI app put before the documented FastAPI route, reading the scope itself. FastAPI's
    per-request dependency solving halved the 304 rate, and Starlette's Request costs a tenth
    more; an unchanged document is answered from memory."""

    def __init__(
        self, documents: Documents, changes: Changes, cache: TokenCache, metrics: Metrics
    ) -> None:
        self.documents = documents
        self.changes = changes
        self.cache = cache
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = if_none_match = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                token = _bearer_token(value.decode("latin-1"))
            elif key == b"if-none-match":
                if_none_match = value.decode("latin-1")
        name = scope["path_params"]["name"]
        response: Response
        try:
            await _authorize_device(self.cache, name, token)
            wait = _wait(scope["query_string"])
            response = await _long_poll(self.documents, self.changes, name, wait, if_none_match)
        except HTTPException as exc:
            self.metrics.poll(exc.status_code)
            response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        else:
            self.metrics.poll(response.status_code)
        await response(scope, receive, send)


class TokenCache:
    """Device token hashes read from the store at most every `ttl` seconds per device, so a
    poll costs no query; a token revoked with `hedgerow device token --revoke` (another process)
    stops working within `ttl`."""

    def __init__(self, store: Store, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._hashes: dict[str, tuple[float, str | None]] = {}

    async def hash(self, device: str) -> str | None:
        now = time.monotonic()
        cached = self._hashes.get(device)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        stored = await asyncio.to_thread(self.store.token_hash, device)
        self._hashes[device] = (now, stored)
        return stored


async def _authorize_device(cache: TokenCache, name: str, token: str | None) -> None:
    """401 without a token or with an unknown one, 403 with another device's token."""
    if token is None:
        raise _unauthorized("a device token is required")
    stored = await cache.hash(name)
    if stored is not None and tokens.check(token, stored):
        return
    store = cache.store
    other = await asyncio.to_thread(tokens.owner, store, tokens.hash_token(token))
    if other is None:
        raise _unauthorized("unknown device token")
    log.warning("device token used for another device", device=name, owner=other)
    raise HTTPException(403, "this token belongs to another device")


class Documents:
    """Each device's document body and ETag, kept until its document revision or the images it
    reported change: an unchanged poll is then a string comparison on the event loop, with no
    thread hop and no database read."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._cache: dict[str, tuple[tuple[str, frozenset[str]], bytes, str]] = {}

    async def get(self, device: str) -> tuple[bytes, str] | None:
        applied = self.controller.applied
        if applied is None or device not in applied.fleet:
            return None
        key = (self.controller.document_revision(device), self.controller.images_present(device))
        cached = self._cache.get(device)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        document = await asyncio.to_thread(self.controller.desired_document, device)
        if document is None:
            return None
        body = canonical_json(document)
        tag = etag(body)
        self._cache[device] = (key, body, tag)
        return body, tag


async def _long_poll(
    documents: Documents, changes: Changes, name: str, wait: float, if_none_match: str | None
) -> Response:
    if wait <= 0:  # a plain conditional GET: no waiter to register
        return _answer(await documents.get(name), name, if_none_match)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with changes.watch(name) as changed:
        while True:
            response = _answer(await documents.get(name), name, if_none_match)
            if response.status_code != 304 or deadline - loop.time() <= 0:
                return response
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), deadline - loop.time())
            changed.clear()  # before reading again: a change during the read wakes us anew


def _answer(found: tuple[bytes, str] | None, name: str, if_none_match: str | None) -> Response:
    """200 with the document, or 304 when the device holds it already."""
    if found is None:
        raise HTTPException(404, f"device {name!r} is not in the applied revision")
    body, tag = found
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def canonical_json(document: wire.DesiredDocument) -> bytes:
    """Sorted keys, no spaces: equal documents are equal bytes, so the ETag is stable."""
    return msgspec.json.encode(msgspec.to_builtins(document), order="sorted")


def etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in if_none_match.split(","))


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


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _wait(query_string: bytes) -> float:
    if not query_string:
        return 0.0
    raw = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw[-1])
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise HTTPException(422, f"wait must be a number of seconds from 0 to {MAX_WAIT}")
    return wait


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _event(record: EventRecord) -> EventOut:
    return EventOut(
        id=record.id,
        at=record.at,
        device=record.device,
        deployment=record.deployment,
        event=record.kind,
        message=record.message,
        revision=record.revision,
    )


# -- the OpenAPI document ---------------------------------------------------------------------


class _NoSource:
    """A source for an app that is only described, never run."""

    def fetch(self) -> str:
        raise RuntimeError("not a running controller")

    def files(self, sha: str) -> list[tuple[str, bytes | Problem]]:
        return []


_SCHEMAS = "#/components/schemas/"


def _wire_ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": f"{_SCHEMAS}{kind.__name__}"}


def document_wire_types(app: FastAPI) -> None:
    """Add the wire Structs' JSON Schemas to `app`'s OpenAPI components: FastAPI knows only
    pydantic models, and the device routes refer to these by `_wire_ref`."""
    _, wire_schemas = msgspec.json.schema_components(
        [wire.DesiredDocument, wire.StatusReport], ref_template=_SCHEMAS + "{name}"
    )
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, built once and cached on the app
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        clash = {n for n in wire_schemas if n in schemas and schemas[n] != wire_schemas[n]}
        if clash:
            raise RuntimeError(f"OpenAPI schema names used twice: {sorted(clash)}")
        document["components"]["schemas"] = dict(sorted({**schemas, **wire_schemas}.items()))
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def openapi_document() -> dict[str, Any]:
    """The controller's OpenAPI document, from an app that never connects to anything."""
    from reconciler.serve import Runner, create_app

    store = Store(create_engine("sqlite://"))  # never connected: nothing runs
    controller = Controller(_NoSource(), store, identities=[], fingerprint_key=b"openapi")
    return create_app(Runner(controller), None, operator_token=None).openapi()


def render_openapi() -> str:
    """`docs/openapi.json` as committed: two-space indents, a final newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
