"""Bearer tokens on the HTTP API: a device's own token for its routes, the operator token for
the operator routes. Only hashes are compared (`reconciler.secrets.tokens`), in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
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
    description="The controller's `--operator-token-file`, or a viewer token "
    "(`hedgerow operator token --read-only NAME`).",
)


class TokenCache:
    """Every device's token hash in memory, so that a poll costs no query.

    - The whole token table is read once, and again whenever it changes: its version (how many
      tokens, when the last was issued) is checked at most every `refresh` seconds, so a
      revocation by another process (`hedgerow device token --revoke`) reaches every request
      within `refresh`. A name without a token is asked about once (a device enrolled a
      moment ago works at once), then not again for `refresh` seconds: those names are kept
      in a bounded LRU, so made-up names neither fill memory nor load the database.
    - A token that does not match its device's hash is checked against the store at once, so
      a token re-issued a moment ago works at once; `fresh` always asks the store (a long poll
      about to send a document).
    - When the store does not answer, the hashes read within `grace` keep admitting devices:
      unchanged documents are still served from memory through a database outage.
    """

    def __init__(
        self,
        store: Store,
        *,
        refresh: float = 2.0,
        grace: float = 600.0,
        misses: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.refresh = refresh
        self.grace = grace
        self.clock = clock or (lambda: time.monotonic())  # looked up at each call
        self._hashes: dict[str, bytes] = {}  # device → SHA-256 of its token
        self._owners: dict[bytes, str] = {}  # the reverse: tells 401 from 403 without a query
        self._version: object = None
        self._read_at: float | None = None  # when the table was last known to be current
        self._checking: asyncio.Task[None] | None = None
        self._check_started = 0.0
        self._failed_at: float | None = None  # the last check the store did not answer
        # names found without a token: not asked again for `refresh` s; a bounded LRU
        self._misses: OrderedDict[str, float] = OrderedDict()
        self.misses = misses
        self._enrolled: set[str] = set()  # devices that enrolled themselves

    def __len__(self) -> int:
        return len(self._hashes)

    async def verify(self, device: str, token: str, *, fresh: bool = False) -> bool:
        """Whether `token` is `device`'s; `fresh` waits for a check of the table that starts
        now (all the long polls a commit wakes share one). Raises StoreUnavailable when the
        store must be asked and does not answer (or has not for longer than `grace`)."""
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        await self._current(since=self.clock() if fresh else None)
        known = self._hashes.get(device)
        if known is not None and hmac.compare_digest(known, presented):
            return True
        if fresh or (known is None and self._missed(device)):
            return False  # the table was just read, or the name asked about a moment ago
        try:
            stored = await asyncio.to_thread(self.store.token_hash, device)
        except StoreUnavailable:
            return False  # no match with what was read before the store stopped answering
        self._set(device, bytes.fromhex(stored) if stored else None)
        if stored is None:
            self._misses[device] = self.clock()
            while len(self._misses) > self.misses:
                self._misses.popitem(last=False)
        return stored is not None and hmac.compare_digest(bytes.fromhex(stored), presented)

    def _missed(self, device: str) -> bool:
        """Whether `device` was found without a token less than `refresh` seconds ago."""
        at = self._misses.get(device)
        return at is not None and self.clock() - at < self.refresh

    def enrolled(self, device: str) -> bool:
        """Whether `device` enrolled itself (as of the last read of the table, or an
        enrollment this process answered)."""
        return device in self._enrolled

    def add_enrolled(self, device: str, token_hash: str) -> None:
        """A device this process just enrolled: its token works at once, here."""
        self._set(device, bytes.fromhex(token_hash))
        self._enrolled.add(device)
        self._misses.pop(device, None)

    def owner(self, token: str) -> str | None:
        """The device `token` belongs to, as of the last read of the table."""
        return self._owners.get(hashlib.sha256(token.encode("utf-8")).digest())

    async def _current(self, since: float | None = None) -> None:
        """Read the table again if it changed: when the last check is older than `refresh`,
        or, with `since`, by a check that started at `since` or later. One check at a time,
        shared by every request waiting for it."""
        while True:
            now = self.clock()
            if since is None and self._read_at is not None and now - self._read_at < self.refresh:
                return
            recent_failure = self._failed_at is not None and now - self._failed_at < self.refresh
            if since is None and recent_failure:
                if self._within_grace():  # the store failed a moment ago: not again at once
                    return
                raise StoreUnavailable("the store does not answer")
            if self._checking is None or self._checking.done():
                self._check_started = now
                self._checking = asyncio.ensure_future(self._check())
            started = self._check_started
            try:
                await asyncio.shield(self._checking)
            except StoreUnavailable:
                self._failed_at = self.clock()
                if not self._within_grace():
                    raise
                return
            self._failed_at = None
            if since is None or started >= since:
                return

    async def _check(self) -> None:
        version = await asyncio.to_thread(self.store.tokens_version)
        if version != self._version:
            hashes = await asyncio.to_thread(self.store.token_hashes)
            self._enrolled = await asyncio.to_thread(self.store.enrolled_names)
            self._hashes = {device: bytes.fromhex(value) for device, value in hashes.items()}
            self._owners = {value: device for device, value in self._hashes.items()}
            self._version = version
        self._read_at = self.clock()

    def _within_grace(self) -> bool:
        return self._read_at is not None and self.clock() - self._read_at < self.grace

    def _set(self, device: str, value: bytes | None) -> None:
        old = self._hashes.pop(device, None)
        if old is not None:
            self._owners.pop(old, None)
        if value is not None:
            self._hashes[device] = value
            self._owners[value] = device


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
    other = cache.owner(token)
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


class OperatorAuth:
    """Who may read the operator API and the dashboard: the controller's operator token
    (`--operator-token-file`) and every viewer token in the store (`hedgerow operator token
    --read-only`). Viewer hashes are read again at most every `refresh` seconds, so a new
    or revoked one counts within that."""

    def __init__(
        self,
        operator_token: str | None,
        store: Store,
        *,
        refresh: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.operator_hash = tokens.hash_token(operator_token) if operator_token else None
        self.store = store
        self.refresh = refresh
        self.clock = clock
        self._viewers: dict[str, str] = {}  # hash → name
        self._read_at: float | None = None

    async def who(self, token: str) -> str | None:
        """`operator`, `viewer NAME`, or None for a token that is neither."""
        if self.operator_hash is not None and tokens.check(token, self.operator_hash):
            return "operator"
        await self._current()
        presented = tokens.hash_token(token)
        for value, name in self._viewers.items():
            if hmac.compare_digest(value, presented):
                return f"viewer {name}"
        return None

    async def hash_of(self, who: str) -> str | None:
        """The hash of the token `who` logged in with, while it is still good (a session
        ends with its token)."""
        if who == "operator":
            return self.operator_hash
        await self._current()
        name = who.removeprefix("viewer ")
        return next((value for value, n in self._viewers.items() if n == name), None)

    async def _current(self) -> None:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.refresh:
            try:
                found = await asyncio.to_thread(self.store.viewer_tokens)
            except StoreUnavailable:
                found = None  # keep the hashes read last
            if found is not None:
                self._viewers = {value: name for name, value in found.items()}
                self._read_at = now

    def refused(self) -> HTTPException:
        if self.operator_hash is None:
            return unauthorized(
                "a viewer token is required (hedgerow operator token --read-only); the operator "
                "token is off: start the controller with --operator-token-file"
            )
        return unauthorized("the operator token or a viewer token is required")


def operator_access(auth: OperatorAuth) -> Callable[..., Awaitable[None]]:
    """A dependency checking the operator token or a viewer token: every operator route is
    401 without one."""

    async def check(credentials: Annotated[Credentials, Security(operator_scheme)]) -> None:
        if credentials is None or await auth.who(credentials.credentials) is None:
            raise auth.refused()

    return check
