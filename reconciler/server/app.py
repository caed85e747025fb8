"""The composition root of the controller's HTTP API: one `create_app` puts together the
device routes, the operator routes, long polls, metrics, the webhook, health and auth, over a
`Backend` (the narrow interface to the controller)."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import create_engine

from reconciler import wire
from reconciler.core.document import Fleet
from reconciler.server import device, errors, metrics, openapi, operator, webhook
from reconciler.server.auth import TokenCache
from reconciler.server.backend import Backend
from reconciler.server.limits import BodyCaps, BodyLimit
from reconciler.store import Store


def create_app(
    backend: Backend,
    *,
    webhook_secret: bytes | None,
    operator_token: str | None,
    body_caps: BodyCaps | None = None,
) -> FastAPI:
    """The controller's HTTP API; the operator endpoints answer 401 without `operator_token`,
    the webhook 404 without `webhook_secret`. Request bodies over `body_caps` are 413.

    No /docs, /redoc or /openapi.json: a running controller need not describe itself to
    anyone who asks; `hedgerow openapi` writes the document from `app.openapi()`."""
    app = FastAPI(
        title="Hedgerow controller", version="v1", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(BodyLimit, caps=body_caps or BodyCaps())
    errors.install(app)
    openapi.document(app)

    @app.get("/healthz", operation_id="getHealth", tags=["health"])
    async def healthz() -> dict[str, str | None]:
        """Liveness, and the applied revision."""
        return {"status": "ok", "revision": backend.revision()}

    counters = metrics.Metrics()
    webhook.install(app, backend, webhook_secret)
    device.install(app, backend, TokenCache(backend.store), counters)
    operator.install(app, backend, operator_token)
    metrics.install(app, backend, counters)
    return app


class _Described:
    """A backend for an app that is only described, never run."""

    def __init__(self) -> None:
        self.store = Store(create_engine("sqlite://"))  # never connected: nothing runs

    def revision(self) -> str | None:
        return None

    def fleet(self) -> Fleet | None:
        return None

    def document_key(self, device: str) -> Hashable | None:
        return None

    def desired_document(self, device: str) -> wire.DesiredDocument | None:
        return None

    async def report(self, report: wire.StatusReport) -> int:
        raise RuntimeError("not a running controller")

    def wake(self) -> None:
        raise RuntimeError("not a running controller")

    def queue_depth(self) -> int:
        return 0

    def on_change(self, listener: Callable[..., None]) -> None:
        pass

    def on_reconciled(self, observer: Callable[[float], None]) -> None:
        pass


def openapi_document() -> dict[str, Any]:
    """The controller's OpenAPI document, from an app that never connects to anything."""
    return create_app(_Described(), webhook_secret=None, operator_token=None).openapi()


def render_openapi() -> str:
    """`docs/openapi.json` as committed: two-space indents, a final newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
