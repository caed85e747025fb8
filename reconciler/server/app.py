"""The composition root of the controller's HTTP API: one `create_app` puts together the
device routes, the operator routes, long polls, metrics, the webhook, health and auth, over a
`Backend` (the narrow interface to the controller)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import create_engine
from starlette.types import Receive, Scope, Send

from reconciler import wire
from reconciler.core.document import Fleet
from reconciler.manifests.catalog import Catalog
from reconciler.server import device, enroll, errors, metrics, openapi, operator, webhook
from reconciler.server.auth import OperatorAuth, TokenCache
from reconciler.server.backend import Backend
from reconciler.server.dashboard import pages as dashboard_pages
from reconciler.server.dashboard.data import Links, Pages
from reconciler.server.dashboard.fleet import FleetRows
from reconciler.server.dashboard.sessions import Sessions
from reconciler.server.enroll import EnrollLimit
from reconciler.server.limits import BodyCaps, BodyLimit
from reconciler.server.polls import PollTimes
from reconciler.store import Store, StoreUnavailable


def create_app(
    backend: Backend,
    *,
    webhook_secret: bytes | None,
    operator_token: str | None,
    body_caps: BodyCaps | None = None,
    enroll_limit: EnrollLimit | None = None,
    dashboard: Dashboard | None = None,
) -> FastAPI:
    """The controller's HTTP API; the operator endpoints answer 401 without `operator_token`,
    the webhook 404 without `webhook_secret`. Request bodies over `body_caps` are 413.

    No /docs, /redoc or /openapi.json: a running controller need not describe itself to
    anyone who asks; `hedgerow openapi` writes the document from `app.openapi()`."""
    polls = PollTimes()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Poll times are written in the background, and once more at shutdown."""
        writer = asyncio.ensure_future(polls.run(backend.store))
        try:
            yield
        finally:
            writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer

    app = HedgerowApp(
        title="Hedgerow controller",
        version="v1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    openapi.document(app)

    @app.get("/healthz", operation_id="getHealth", tags=["health"])
    async def healthz() -> dict[str, str | None]:
        """Liveness, the applied revision, and this replica's role (`leader` follows git
        and plans; a `follower` serves the leader's revision)."""
        return {"status": "ok", "revision": backend.revision(), "role": backend.role()}

    @app.get(
        "/readyz",
        operation_id="getReadiness",
        tags=["health"],
        response_model=Ready,
        responses={503: {"description": "Not ready: see each check's reason.", "model": Ready}},
    )
    async def readyz() -> JSONResponse:
        """Readiness: the store answers and a revision is in force (then devices are served);
        the git source is reported too, but a source that fails does not stop the serving."""
        checks = {
            "store": await _store_check(backend),
            "source": Check(*backend.source_status()),
            "revision": _revision_check(backend.revision()),
        }
        ready = checks["store"].ok and checks["revision"].ok
        body = Ready(ready=ready, checks=checks).model_dump()
        return JSONResponse(body, status_code=200 if ready else 503)

    counters = metrics.Metrics()
    webhook.install(app, backend, webhook_secret)
    cache = TokenCache(backend.store)
    app.desired = device.install(app, backend, cache, counters, polls)
    enroll.install(app, backend.store, cache, enroll_limit or EnrollLimit())
    # after the device routes' middleware, so outside it: reports are capped too
    app.add_middleware(BodyLimit, caps=body_caps or BodyCaps())
    auth = OperatorAuth(operator_token, backend.store)
    dashboard = dashboard or Dashboard()
    pages = Pages(backend, FleetRows(backend, dashboard.offline_after), dashboard.links)
    operator.install(app, backend, auth, pages)
    if dashboard.enabled:
        sessions = Sessions(dashboard.session_key or os.urandom(32), auth)
        dashboard_pages.install(app, pages, sessions, dashboard.prefix)
    metrics.install(app, backend, counters)
    return app


@dataclass(frozen=True)
class Dashboard:
    """The dashboard's settings: where it is served (`prefix`: "" for /), links to git, the
    sessions' key (replicas share one; random when not given), and when a device counts
    Offline."""

    enabled: bool = True
    prefix: str = ""
    links: Links = field(default_factory=Links)
    session_key: bytes = field(default=b"", repr=False)
    offline_after: float = 90.0


class HedgerowApp(FastAPI):
    """The app, with a device's poll of its document (`GET /v1/devices/{name}/desired`)
    answered ahead of the middleware stack: thousands of polls are held up to a minute each,
    and each kept a coroutine frame, a closure and a `send` wrapper of every middleware (about
    6 KiB a poll). What those give the route is kept: an unexpected error is the same logged
    500 (then raised to the server, which closes the connection), and a request with a body
    (BodyLimit's) or any other method goes through the stack to the same route."""

    desired: device.DesiredRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = None if self.desired is None else self.desired.device(scope)
        if name is None or self.desired is None:
            await super().__call__(scope, receive, send)
        else:
            await self.desired.serve(scope, receive, send, name)


class _Described:
    """A backend for an app that is only described, never run."""

    def __init__(self) -> None:
        self.store = Store(create_engine("sqlite://"))  # never connected: nothing runs

    def revision(self) -> str | None:
        return None

    def fleet(self) -> Fleet | None:
        return None

    def catalog(self) -> Catalog | None:
        return None

    def document_key(self, device: str) -> Hashable | None:
        return None

    def role(self) -> str:
        return "leader"

    async def document(self, device: str) -> bytes | None:
        return None

    async def report(self, report: wire.StatusReport) -> int:
        raise RuntimeError("not a running controller")

    def wake(self) -> None:
        raise RuntimeError("not a running controller")

    def queue_depth(self) -> int:
        return 0

    def source_status(self) -> tuple[bool, str]:
        return False, "not a running controller"

    def on_change(self, listener: Callable[..., None]) -> None:
        pass

    def on_reconciled(self, observer: Callable[[float], None]) -> None:
        pass


class Check(BaseModel):
    ok: bool
    reason: str

    def __init__(self, ok: bool, reason: str) -> None:
        super().__init__(ok=ok, reason=reason)


class Ready(BaseModel):
    ready: bool
    checks: dict[str, Check]


async def _store_check(backend: Backend) -> Check:
    try:
        await asyncio.wait_for(asyncio.to_thread(backend.store.ping), timeout=3)
    except StoreUnavailable as error:
        return Check(False, str(error))
    except TimeoutError:
        return Check(False, "the store did not answer within 3 s")
    return Check(True, "answers")


def _revision_check(revision: str | None) -> Check:
    if revision is None:
        return Check(False, "no revision applied yet")
    return Check(True, f"revision {revision} in force")


def openapi_document() -> dict[str, Any]:
    """The controller's OpenAPI document, from an app that never connects to anything."""
    return create_app(_Described(), webhook_secret=None, operator_token=None).openapi()


def render_openapi() -> str:
    """`docs/openapi.json` as committed: two-space indents, a final newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
