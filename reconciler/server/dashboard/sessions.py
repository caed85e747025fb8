"""The dashboard's sessions: a signed cookie (itsdangerous) made at login from the operator
token or a viewer token, never holding either. It names who logged in, a random session id and
a keyed digest of the token's hash, so a session ends when its token is revoked, at logout (the
id is remembered until the cookie would expire), or after `MAX_AGE`. The key is derived from the
fingerprint key, so every replica reads every replica's cookies."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from reconciler.server.auth import OperatorAuth

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth = auth
        self.max_age = max_age
        self.clock = clock
        self._key = key
        self._signer = URLSafeTimedSerializer(key, salt="hedgerow-session")
        self._ended: dict[str, float] = {}  # session id → when its cookie expires anyway

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
        if data["s"] in self._ended:
            return None
        current = await self.auth.hash_of(data["w"])
        if current is None or not hmac.compare_digest(self._digest(current), data["k"]):
            return None
        return Session(data["w"], data["s"])

    def end(self, session: Session) -> None:
        now = self.clock()
        self._ended = {sid: at for sid, at in self._ended.items() if at > now}
        self._ended[session.id] = now + self.max_age
