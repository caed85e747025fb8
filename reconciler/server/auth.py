"""Bearer tokens on the HTTP API: a device's own token for its routes, the operator token for
the operator routes. Only hashes are compared (`reconciler.secrets.tokens`), in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Path, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reconciler.logs import get_logger
from reconciler.secrets import tokens
from reconciler.store import Store, StoreUnavailable

log = get_logger("hedgerow.server")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # RFC 1123, as metadata.name
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
    """Device token hashes kept in memory, so that a poll costs no query.

    - Only devices that have a token are kept, in a bounded LRU: made-up names asked about by
      anyone never fill it (they are refused before any lookup when they are not DNS labels).
    - An entry older than `ttl` is read again: a revocation by another process (`hedgerow
      device token --revoke`) reaches every request within `ttl`. A token that does not match
      its entry is checked against the store at once, so a re-issued token works at once.
    - When the store does not answer, an entry verified within `grace` keeps admitting its
      device: unchanged documents are still served from memory through a database outage.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = 5.0,
        grace: float = 600.0,
        size: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.grace = grace
        self.size = size
        self.clock = clock or (lambda: time.monotonic())  # looked up at each call
        self._hashes: OrderedDict[str, tuple[float, str]] = OrderedDict()  # device: (read at, hash)

    def __len__(self) -> int:
        return len(self._hashes)

    async def verify(self, device: str, token: str, *, fresh: bool = False) -> bool:
        """Whether `token` is `device`'s; `fresh` reads the store whatever the cache holds.
        Raises StoreUnavailable when the store must be asked and does not answer."""
        presented = tokens.hash_token(token)
        cached = self._hashes.get(device)
        now = self.clock()
        current = cached is not None and not fresh and now - cached[0] < self.ttl
        if current and cached is not None and hmac.compare_digest(cached[1], presented):
            self._hashes.move_to_end(device)
            return True
        try:
            stored = await asyncio.to_thread(self.store.token_hash, device)
        except StoreUnavailable:
            if cached is not None and now - cached[0] < self.grace:
                return hmac.compare_digest(cached[1], presented)
            raise
        if stored is None:
            self._hashes.pop(device, None)
            return False
        self._remember(device, stored, now)
        return hmac.compare_digest(stored, presented)

    def _remember(self, device: str, stored: str, at: float) -> None:
        self._hashes[device] = (at, stored)
        self._hashes.move_to_end(device)
        while len(self._hashes) > self.size:
            self._hashes.popitem(last=False)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authorize_device(
    cache: TokenCache, name: str, token: str | None, *, fresh: bool = False
) -> None:
    """401 without a token or with an unknown one, 403 with another device's token, 404 for a
    name that cannot be a device's (refused before any lookup)."""
    if token is None:
        raise unauthorized("a device token is required")
    if not is_device_name(name):
        raise HTTPException(404, "not a device name: a DNS label of at most 63 characters")
    if await cache.verify(name, token, fresh=fresh):
        return
    other = await asyncio.to_thread(cache.store.token_owner, tokens.hash_token(token))
    if other is None:
        raise unauthorized("unknown device token")
    log.warning("device token used for another device", device=name, owner=other)
    raise HTTPException(403, "this token belongs to another device")


def is_device_name(name: str) -> bool:
    return len(name) <= 63 and _DNS_LABEL.fullmatch(name) is not None


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
