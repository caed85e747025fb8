"""When each device last polled, for people (`hedgerow status --device`, the dashboard).

A poll is the hottest request of the fleet, so it only notes the time in memory, and at most
once a minute per device; a background task writes what was noted in one batch
(`Store.put_poll_times`). The stored time is therefore at most about a minute old.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.logs import get_logger
from reconciler.store import Store, StoreUnavailable

log = get_logger("hedgerow.server")
WRITE_EVERY = 60.0  # seconds between two stored poll times of one device
FLUSH_EVERY = 10.0


class PollTimes:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._written: dict[str, float] = {}  # device → the poll time last handed to the store
        self._due: dict[str, float] = {}  # noted, not written yet

    def record(self, device: str) -> None:
        now = self.clock()
        if now - self._written.get(device, 0.0) >= WRITE_EVERY:
            self._due[device] = now

    def take(self) -> dict[str, datetime]:
        """What is due for the store, as times; counted as written."""
        due, self._due = self._due, {}
        self._written.update(due)
        return {device: datetime.fromtimestamp(at, UTC) for device, at in due.items()}

    async def flush(self, store: Store) -> None:
        due = self.take()
        if not due:
            return
        try:
            await asyncio.to_thread(store.put_poll_times, due)
        except StoreUnavailable as exc:  # noted again at the next polls
            for device in due:
                self._written.pop(device, None)
            log.warning("poll times not stored", error=str(exc), devices=len(due))

    async def run(self, store: Store, every: float = FLUSH_EVERY) -> None:
        """Write the poll times noted, every `every` seconds, and once more when cancelled."""
        try:
            while True:
                await asyncio.sleep(every)
                await self.flush(store)
        finally:
            await asyncio.shield(self.flush(store))
