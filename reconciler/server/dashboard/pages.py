"""The dashboard's pages: server-rendered HTML (Jinja2, autoescaped) over `data.Pages`, the
same dicts the operator API answers with. Read-only: changes go through git. A login form takes
the operator token or a viewer token and sets a session cookie (`sessions`); every page needs
one. Pages update live: `live` streams a version of the fleet's activity (server-sent events),
and the page's script fetches its own main element again when it moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from reconciler.core.inventory import human_bytes
from reconciler.server.dashboard.data import Pages
from reconciler.server.dashboard.fleet import FRESH, Activity
from reconciler.server.dashboard.model import CONDITIONS, DeviceQuery
from reconciler.server.dashboard.sessions import COOKIE, Session, Sessions
from reconciler.store import StoreUnavailable

STATIC = Path(__file__).resolve().parent / "static"
LIVE_EVERY = 0.5  # seconds between two looks at the fleet's activity, per open page
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(text: object) -> str:
    if not isinstance(text, str) or not text:
        return "never"
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reconciler.server.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_bytes
    env.filters["when"] = _when
    return env


def install(app: FastAPI, pages: Pages, sessions: Sessions, prefix: str = "") -> None:
    prefix = prefix.rstrip("/")
    templates = environment()
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="dashboard-static")

    def url(path: str, params: list[tuple[str, str]] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{prefix}{path}{query}"

    def render(
        request: Request, name: str, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        partial = request.headers.get("x-hedgerow-live") == "1"
        html = templates.get_template(name).render(
            url=url, session=session, partial=partial, conditions=CONDITIONS, **values
        )
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        return response

    async def session_of(request: Request) -> Session:
        try:
            session = await sessions.session(request.cookies.get(COOKIE))
        except StoreUnavailable:
            session = None
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(303, headers={"Location": url("/login", [("next", target)])})
        return session

    def page(path: str, name: str) -> Callable[..., Any]:
        """A page behind a session: `load` gives its data, None for a 404."""

        def decorate(load: Callable[..., Any]) -> Callable[..., Any]:
            async def serve(request: Request) -> Response:
                session = await session_of(request)
                FRESH.set(request.headers.get("x-hedgerow-version"))
                try:
                    data = await load(request)
                except ValueError as exc:
                    return render(request, "error.html", session, 422, message=str(exc))
                if data is None:
                    return render(request, "error.html", session, 404, message="not found")
                return render(request, name, session, data=data, request_path=request.url.path,
                              query=request.query_params)  # fmt: skip

            app.add_api_route(url(path) or "/", serve, methods=["GET"], include_in_schema=False)
            return load

        return decorate

    @page("/", "overview.html")
    async def overview(request: Request) -> dict[str, Any]:
        return await pages.overview()

    @page("/devices", "devices.html")
    async def devices(request: Request) -> dict[str, Any]:
        query = DeviceQuery.parse(_params(request))
        data = await pages.devices(query)
        data["query"] = query
        data["selectedLabels"] = [f"{k}={v}" for k, v in query.labels]
        return data

    @page("/devices/{name}", "device.html")
    async def device(request: Request) -> dict[str, Any] | None:
        return await pages.device(request.path_params["name"])

    @page("/deployments/{name}", "deployment.html")
    async def deployment(request: Request) -> dict[str, Any] | None:
        return await pages.deployment(request.path_params["name"])

    @page("/rollouts/{name}", "rollout.html")
    async def rollout(request: Request) -> dict[str, Any] | None:
        return await pages.rollout(request.path_params["name"])

    @page("/releases", "releases.html")
    async def releases(request: Request) -> dict[str, Any]:
        return await pages.releases()

    @page("/events", "events.html")
    async def events(request: Request) -> dict[str, Any]:
        params = request.query_params
        before = params.get("before")
        if before is not None and not before.isdigit():
            raise ValueError("before: an event id")
        return await pages.events(
            params.get("device") or None,
            params.get("deployment") or None,
            params.get("event") or None,
            int(before) if before else None,
        )

    async def login_form(request: Request) -> Response:
        return render(request, "login.html", None, next=_next(request, prefix))

    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or [""])[0], prefix)
        made = await sessions.login(token) if token else None
        if made is None:
            return render(request, "login.html", None, 401, next=target,
                          error="That is not a token this controller knows.")  # fmt: skip
        _, cookie = made
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=sessions.max_age,
            path=prefix or "/",
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )
        return response

    async def logout(request: Request) -> Response:
        session = await sessions.session(request.cookies.get(COOKIE))
        if session is not None:
            await sessions.end(session)
        response = RedirectResponse(url("/login"), status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=prefix or "/", httponly=True, samesite="strict")
        return response

    activity = Activity(pages.store, LIVE_EVERY)

    async def live(request: Request) -> Response:
        await session_of(request)

        async def stream() -> AsyncIterator[bytes]:
            last = ""
            beat = 0
            while not await request.is_disconnected():
                try:
                    current = await activity.version()
                except StoreUnavailable:
                    current = last
                if current != last:
                    yield f"data: {current}\n\n".encode()
                    last = current
                    beat = 0
                elif (beat := beat + 1) >= 30:  # a comment every 15 s keeps proxies open
                    yield b": idle\n\n"
                    beat = 0
                await asyncio.sleep(LIVE_EVERY)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={**HEADERS, "X-Accel-Buffering": "no"}
        )

    app.add_api_route(url("/login"), login_form, methods=["GET"], include_in_schema=False)
    app.add_api_route(url("/login"), login, methods=["POST"], include_in_schema=False)
    app.add_api_route(url("/logout"), logout, methods=["POST"], include_in_schema=False)
    app.add_api_route(url("/live"), live, methods=["GET"], include_in_schema=False)


def _params(request: Request) -> dict[str, str | list[str]]:
    found: dict[str, str | list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key == "label":
            labels = found.setdefault("label", [])
            assert isinstance(labels, list)
            labels.append(value)
        else:
            found[key] = value
    return found


def _next(request: Request, prefix: str) -> str:
    return _safe_next(request.query_params.get("next", ""), prefix)


def _safe_next(target: str, prefix: str) -> str:
    """Where to go after login: a path of the dashboard, never another site."""
    home = prefix or "/"
    if not target.startswith(home) or target.startswith("//") or "\\" in target:
        return f"{prefix}/" if prefix else "/"
    return target
