"""The dashboard's sessions: a signed cookie (itsdangerous) made at login from the operator
token or a viewer token, never holding either. It names who logged in, a random session id and
a keyed digest of the token's hash, so a session ends when its token is revoked, at logout (the
id is kept in the store until the cookie would expire, and every replica reads those within
`refresh` seconds), or after `MAX_AGE`. The key is derived from the fingerprint key, so every
replica reads every replica's cookies."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, URLSafeTimedSerializer

from reconciler.server.auth import OperatorAuth
from reconciler.store import StoreUnavailable

COOKIE = "hedgerow_session"
MAX_AGE = 12 * 3600


def session_key(fingerprint_key: bytes) -> bytes:
    """The sessions' signing key, derived so that it is never the fingerprint key itself."""
    return hmac.new(fingerprint_key, b"hedgerow dashboard sessions", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    who: str  # `operator` or `viewer NAME`
    id: str


class Sessions:
    def __init__(
        self,
        key: bytes,
        auth: OperatorAuth,
        *,
        max_age: int = MAX_AGE,
        refresh: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth = auth
        self.store = auth.store
        self.max_age = max_age
        self.refresh = refresh
        self.clock = clock
        self._key = key
        self._signer = URLSafeTimedSerializer(key, salt="hedgerow-session")
        self._ended: dict[str, float] = {}  # session id → when its cookie expires anyway
        self._stored: set[str] = set()  # the ended ids in the store, as read last
        self._read_at = float("-inf")

    def _digest(self, token_hash: str) -> str:
        return hmac.new(self._key, token_hash.encode(), hashlib.sha256).hexdigest()[:32]

    async def login(self, token: str) -> tuple[Session, str] | None:
        """A session and its cookie for a good token; None for any other."""
        who = await self.auth.who(token)
        if who is None:
            return None
        session = Session(who, secrets.token_urlsafe(16))
        cookie = self._signer.dumps(
            {
                "w": who,
                "s": session.id,
                "k": self._digest(hashlib.sha256(token.encode()).hexdigest()),
            }
        )
        return session, cookie

    async def session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, while it holds: signed by us, not expired, not
        ended, and its token still good."""
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in "wsk"):
            return None
        if data["s"] in self._ended or data["s"] in await self._ended_anywhere():
            return None
        current = await self.auth.hash_of(data["w"])
        if current is None or not hmac.compare_digest(self._digest(current), data["k"]):
            return None
        return Session(data["w"], data["s"])

    async def _ended_anywhere(self) -> set[str]:
        """Sessions any replica logged out, read again at most every `refresh` seconds (the
        last read stands while the store does not answer)."""
        now = self.clock()
        if now - self._read_at >= self.refresh:
            at = datetime.fromtimestamp(now, UTC)
            try:
                self._stored = await asyncio.to_thread(self.store.ended_sessions, at)
            except StoreUnavailable:
                return self._stored
            self._read_at = now
        return self._stored

    async def end(self, session: Session) -> None:
        """Log `session` out, here at once and on every replica within `refresh` seconds."""
        now = self.clock()
        self._ended = {sid: at for sid, at in self._ended.items() if at > now}
        self._ended[session.id] = now + self.max_age
        until = datetime.fromtimestamp(now + self.max_age, UTC)
        # the store not answering: ended here, and on the others once the cookie expires
        with suppress(StoreUnavailable):
            await asyncio.to_thread(
                self.store.end_session, session.id, until, datetime.fromtimestamp(now, UTC)
            )
