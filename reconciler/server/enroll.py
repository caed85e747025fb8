"""`POST /v1/enroll`: a device with an enrollment token gets its own device token.

The enrollment token is a shared secret baked into device images, so it is the one most
likely to leak: each is rate-limited (a token bucket per token, `EnrollLimit`), bounded by its
expiry and its uses, and revocable; a name already enrolled is refused unless the token allows
re-enrollment. Neither token reaches a log line; the device's token is in the answer, once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from reconciler import wire
from reconciler.core.enrollment import EnrollmentRefused
from reconciler.logs import get_logger
from reconciler.secrets import tokens
from reconciler.server.auth import Credentials, TokenCache, unauthorized
from reconciler.server.errors import described
from reconciler.server.openapi import wire_ref
from reconciler.store import Store

log = get_logger("hedgerow.server")
enrollment_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="enrollmentToken",
    description="A shared enrollment token, from `hedgerow enrollment create NAME`.",
)


@dataclass(frozen=True)
class EnrollLimit:
    """Enrollments per token: `burst` at once, then one every `1 / rate` seconds."""

    rate: float = 1.0
    burst: int = 60
    tokens: int = 10_000  # buckets kept (an LRU): made-up tokens cannot fill memory


class Buckets:
    """A token bucket per key (the hash of the presented token), bounded in number."""

    def __init__(self, limit: EnrollLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # level, at

    def take(self, key: str) -> float:
        """0 when `key` may go on now (one taken from its bucket), else seconds to wait."""
        now = self.clock()
        level, at = self._buckets.pop(key, (float(self.limit.burst), now))
        level = min(float(self.limit.burst), level + (now - at) * self.limit.rate)
        wait = 0.0 if level >= 1 else (1 - level) / self.limit.rate
        self._buckets[key] = (level - 1 if wait == 0 else level, now)
        while len(self._buckets) > self.limit.tokens:
            self._buckets.popitem(last=False)
        return wait


def install(app: FastAPI, store: Store, cache: TokenCache, limit: EnrollLimit) -> None:
    buckets = Buckets(limit)

    @app.post(
        "/v1/enroll",
        operation_id="enroll",
        tags=["device"],
        status_code=201,
        responses={
            **described(
                _401="No enrollment token, or an unknown one.",
                _403="The enrollment token was revoked, has expired or is used up.",
                _409="A device of that name is enrolled already, and the token does not allow "
                "re-enrollment.",
                _422="Invalid request (the detail names the field).",
                _429="Too many enrollments with this token: retry after Retry-After seconds.",
                _503="The store does not answer: retry.",
            ),
            201: {
                "description": "Enrolled: the device's own token, shown this once.",
                "content": {"application/json": {"schema": wire_ref(wire.Enrolled)}},
            },
        },
        openapi_extra={
            "security": [{"enrollmentToken": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": wire_ref(wire.EnrollRequest)}},
            },
        },
    )
    async def enroll(
        request: Request, credentials: Annotated[Credentials, Security(enrollment_scheme)]
    ) -> JSONResponse:
        """Join the fleet: the device is Pending until a Device manifest of its name is in
        the applied revision (one committed before pre-admits it)."""
        if credentials is None:
            raise unauthorized("an enrollment token is required")
        presented = tokens.hash_token(credentials.credentials)
        wait = buckets.take(presented)
        if wait > 0:
            raise HTTPException(
                429,
                "too many enrollments with this token: retry later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        try:
            asked = msgspec.json.decode(await request.body(), type=wire.EnrollRequest)
        except msgspec.DecodeError as exc:  # its text names the JSON path
            raise HTTPException(422, str(exc)) from None
        except RecursionError:
            raise HTTPException(422, "$: the JSON is nested too deeply") from None
        device_token = tokens.issue()
        device_hash = tokens.hash_token(device_token)
        at = datetime.now(UTC)
        try:
            enrolled = await asyncio.to_thread(store.enroll, presented, asked, device_hash, at)
        except EnrollmentRefused as refused:
            log.warning("enrollment refused", device=asked.device, reason=refused.reason)
            if refused.status == 401:
                raise unauthorized(refused.reason) from None
            raise HTTPException(refused.status, refused.reason) from None
        cache.add_enrolled(enrolled.device, device_hash)
        log.info(
            "device enrolled",
            device=enrolled.device,
            enrollment=enrolled.enrollment,
            system_model=enrolled.system_model,
        )
        body = msgspec.to_builtins(wire.Enrolled(device=enrolled.device, token=device_token))
        return JSONResponse(body, status_code=201, headers={"Cache-Control": "no-store"})
