"""Replicas on one PostgreSQL database (adapter): who leads, and what the others hear.

Several controller processes share a database. One leads: it holds a session advisory lock on a
connection of its own, and only it follows git, applies commits and plans. The lock goes with
the connection, so a leader killed, or cut off from the database, leaves it to the next replica
that asks (every `CAMPAIGN_EVERY` seconds). Each election takes the next term in the
`leadership` row, and a commit is applied only in a transaction that finds its term current
(`Store.apply`), so a deposed leader still mid-apply writes nothing.

Every replica serves polls and reports, and listens: the leader NOTIFYs `APPLIED` with the sha
it applied, in the applying transaction; a replica that stored reports whose observed state
changed NOTIFYs `OBSERVED` with their devices, so the leader re-plans them; a replica given a
webhook NOTIFYs `WAKE`, so the leader fetches at once. A notification missed while a
connection was down is made up for: a listener that reconnects reports it, and the replica
catches up from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from reconciler.logs import get_logger
from reconciler.store.notices import CHANNELS, WAKE, Notice, parse

log = get_logger("hedgerow.cluster")

LOCK_KEY = 0x486564676572  # "Hedger": the advisory lock all replicas of a database contend for
CAMPAIGN_EVERY = 2.0  # seconds between a follower's attempts to lead
CHECK_EVERY = 2.0  # seconds between a leader's checks that its lock connection is alive
# The server drops a dead client's session (and its lock) within ~11 s, not TCP's 2 hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
              "keepalives_count": 3, "connect_timeout": 5}  # fmt: skip
SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
    "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 11000"
)


def replica_name() -> str:
    """This process among the replicas: its host and pid, for logs and the leadership row."""
    return f"{socket.gethostname()}:{os.getpid()}"


def conninfo(url: str) -> str:
    """libpq's URL for a store's SQLAlchemy URL (`postgresql+psycopg://...`)."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class Cluster:
    """This replica's two connections of its own: one holds the leader's lock, one listens."""

    def __init__(self, url: str, name: str | None = None) -> None:
        self._conninfo = make_conninfo(conninfo(url), **KEEPALIVES)
        self.name = name or replica_name()
        self._lock: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    def __repr__(self) -> str:  # the URL may hold a password
        return f"Cluster(name={self.name!r})"

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        await connection.execute(SERVER_KEEPALIVES)
        return connection

    async def campaign(self, stopping: Callable[[], bool] = lambda: False) -> int | None:
        """Wait until this replica leads; its term. None when `stopping()` first."""
        while not stopping():
            with contextlib.suppress(psycopg.Error, OSError):
                term = await self._try_lead()
                if term is not None:
                    return term
            await asyncio.sleep(CAMPAIGN_EVERY)
        return None

    async def _try_lead(self) -> int | None:
        if self._lock is None or self._lock.closed:
            self._lock = await self._connect()
        cursor = await self._lock.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        row = await cursor.fetchone()
        if not (row and row[0]):
            return None
        cursor = await self._lock.execute(
            "INSERT INTO leadership (id, term, holder, since) VALUES (1, 1, %s, now()) "
            "ON CONFLICT (id) DO UPDATE SET term = leadership.term + 1, "
            "holder = EXCLUDED.holder, since = EXCLUDED.since RETURNING term",
            (self.name,),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(str(row[0]))

    async def hold(self) -> None:
        """Return when this replica's lock may be lost: its connection failed a check."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                assert self._lock is not None
                async with asyncio.timeout(CHECK_EVERY * 2):
                    await self._lock.execute("SELECT 1")
            except (psycopg.Error, OSError, TimeoutError, AssertionError):
                await self.resign()
                return

    async def resign(self) -> None:
        """Give up the lock (close its connection: the server releases it)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await lock.close()

    async def listen(self, handle: Callable[[Notice], Awaitable[None] | None]) -> None:
        """Hand every notification to `handle`, for ever; reconnect when the connection
        fails, and hand a Notice(None) after each reconnection (something may be missed)."""
        failures = 0
        while True:
            try:
                connection = await self._connect()
            except (psycopg.Error, OSError):
                failures += 1
                await asyncio.sleep(min(CAMPAIGN_EVERY * failures, 10.0))
                continue
            try:
                async with connection:
                    for channel in CHANNELS:
                        await connection.execute(f"LISTEN {channel}")
                    if failures:
                        log.info("listening again", replica=self.name)
                    failures = 0
                    await _call(handle, Notice(None))
                    async for found in connection.notifies():
                        notice = parse(found.channel, found.payload)
                        if notice.sender != self.name:
                            await _call(handle, notice)
            except (psycopg.Error, OSError) as exc:
                failures += 1
                log.warning("notifications lost, reconnecting", error=_reason(exc))
                await asyncio.sleep(min(CAMPAIGN_EVERY * failures, 10.0))

    async def wake_leader(self) -> None:
        """Ask the leader to fetch now (a webhook reached this replica)."""
        with contextlib.suppress(psycopg.Error, OSError):
            async with await self._connect() as connection:
                await connection.execute("SELECT pg_notify(%s, %s)", (WAKE, self.name))


async def _call(handle: Callable[[Notice], Awaitable[None] | None], notice: Notice) -> None:
    result = handle(notice)
    if result is not None:
        await result


def _reason(error: BaseException) -> str:
    """The first line of a driver's error (no connection string: it is not in the message)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
