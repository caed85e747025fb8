"""Bearer tokens on the HTTP API: a device's own token for its routes, the operator token for
the operator routes. Only hashes are compared (`reconciler.secrets.tokens`), in constant time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Path, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reconciler.logs import get_logger
from reconciler.secrets import tokens
from reconciler.store import Store

log = get_logger("hedgerow.server")

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


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authorize_device(cache: TokenCache, name: str, token: str | None) -> None:
    """401 without a token or with an unknown one, 403 with another device's token."""
    if token is None:
        raise unauthorized("a device token is required")
    stored = await cache.hash(name)
    if stored is not None and tokens.check(token, stored):
        return
    other = await asyncio.to_thread(cache.store.token_owner, tokens.hash_token(token))
    if other is None:
        raise unauthorized("unknown device token")
    log.warning("device token used for another device", device=name, owner=other)
    raise HTTPException(403, "this token belongs to another device")


def device_access(cache: TokenCache) -> Callable[..., Awaitable[None]]:
    """A dependency checking the device token of the route's `{name}`."""

    async def check(
        name: DeviceName, credentials: Annotated[Credentials, Security(device_scheme)]
    ) -> None:
        await authorize_device(cache, name, credentials.credentials if credentials else None)

    return check


def operator_access(operator_token: str | None) -> Callable[..., Awaitable[None]]:
    """A dependency checking the operator token; every operator route is 401 without one."""
    operator_hash = tokens.hash_token(operator_token) if operator_token else None

    async def check(credentials: Annotated[Credentials, Security(operator_scheme)]) -> None:
        if operator_hash is None:
            raise unauthorized(
                "the operator API is disabled: start the controller with --operator-token-file"
            )
        if credentials is None or not tokens.check(credentials.credentials, operator_hash):
            raise unauthorized("the operator token is required")

    return check
