"""One error body on every HTTP error: `{"detail": "..."}`, a sentence for people.

FastAPI's own 422 lists pydantic's error objects, Starlette's 500 is plain text, and a route
written by hand could answer anything: the handlers here make all of them the same JSON, so a
client (the agent, `hedgerow plan --controller`, a script) reads one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from reconciler.errors import HedgerowError
from reconciler.logs import get_logger
from reconciler.store import StoreUnavailable

log = get_logger("hedgerow.server")


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What went wrong, for people.")


def error_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))


RETRY_AFTER = 5  # seconds: what a client waits before retrying a 503 of the store


def unavailable(error: HedgerowError) -> JSONResponse:
    """503 with Retry-After: the store does not answer, or the controller is starting;
    nothing was stored or sent."""
    return error_response(503, str(error), {"Retry-After": str(RETRY_AFTER)})


def described(**codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for error codes (`_401="..."`), each with the one error body."""
    return {
        int(code.lstrip("_")): {"description": text, "model": ErrorBody}
        for code, text in codes.items()
    }


def install(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 304 or exc.status_code < 400:
            return Response(status_code=exc.status_code, headers=exc.headers)
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, validation_detail(exc.errors()))

    async def store_down(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreUnavailable)
        log.warning("store unavailable", path=request.url.path, error=str(exc))
        return unavailable(exc)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StoreUnavailable, store_down)
    app.add_exception_handler(Exception, unexpected)


async def unexpected(request: Request, exc: Exception) -> Response:
    """The 500 of any error no handler knows (after it the server logs it again and the
    connection is closed): the log has the details, the client only the one error body."""
    log.error("request failed", method=request.method, path=request.url.path, exc_info=exc)
    return error_response(500, "internal error; the controller's log has the details")


def validation_detail(errors: Any) -> str:
    """pydantic's errors as one sentence: `query.limit: Input should be ...; ...`."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
