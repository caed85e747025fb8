"""What the store raises: a database that does not answer is a value the edges can act on (a
503 with Retry-After, a retry at start-up), never a traceback."""

from __future__ import annotations

from reconciler.errors import HedgerowError


class StoreError(HedgerowError):
    """The store cannot be used as it is (a corrupt file, a database it cannot migrate); the
    message names the store, never its password."""


class StoreUnavailable(StoreError):
    """The database does not answer now (stopped, restarting, unreachable): try again later."""


class NotLeader(StoreError):
    """A replica's leadership ended (another was elected) before its write: nothing of the
    write was stored, and the new leader does it."""
