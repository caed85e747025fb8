"""The fleet's rows for the dashboard and the operator API, built from the store and the
applied revision, at most once a second: a devices page for 10,000 devices filters rows in
memory instead of asking the store. A page asked for while rows are being built gets the rows
built last (at most a second or two old)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from reconciler.core.status import DeploymentStatus
from reconciler.server.backend import Backend
from reconciler.server.dashboard.model import DeviceRow, device_condition
from reconciler.store import Store

REBUILD_EVERY = 1.0
# The activity version a live update was told of (`pages`): its rows must be at least that new.
FRESH: ContextVar[str | None] = ContextVar("FRESH", default=None)


def activity_version(store: Store) -> str:
    """The store's activity (`Store.activity`) as the text live updates carry."""
    return json.dumps(store.activity())


class Activity:
    """The store's activity version for every open page at once: each page's stream asks
    every half second, and one read of the store (at most one every `every` seconds, shared
    by all who ask meanwhile) answers them all."""

    def __init__(
        self, store: Store, every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.every = every
        self.clock = clock
        self._version: str | None = None
        self._read_at = float("-inf")
        self._reading: asyncio.Task[str] | None = None

    async def version(self) -> str:
        """Raises StoreUnavailable when the store does not answer."""
        if self._version is not None and self.clock() - self._read_at < self.every:
            return self._version
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._reading)

    async def _read(self) -> str:
        started = self.clock()
        version = await asyncio.to_thread(activity_version, self.store)
        self._version, self._read_at = version, started
        return version


class FleetRows:
    def __init__(
        self,
        backend: Backend,
        offline_after: float,
        *,
        every: float = REBUILD_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.offline_after = offline_after
        self.every = every
        self.clock = clock
        self._rows: list[DeviceRow] | None = None
        self._index: dict[str, DeviceRow] = {}
        self._built_at = float("-inf")
        self._version: str | None = None  # the store's activity when the rows were read
        self._building: asyncio.Task[None] | None = None

    async def rows(self) -> list[DeviceRow]:
        """The rows built last; a new build starts when those are `every` seconds old (the
        first call waits for the first build). A live update (`FRESH` set to the activity
        version the page was told of) waits for rows built at that version or later."""
        wanted = FRESH.get()
        if wanted is not None and wanted != self._version:
            await self._rebuild()
        elif self.clock() - self._built_at >= self.every:
            self._start()
        if self._rows is None:
            await self._rebuild()
        assert self._rows is not None
        return self._rows

    async def row(self, device: str) -> DeviceRow | None:
        await self.rows()
        return self._index.get(device)

    def _start(self) -> asyncio.Task[None]:
        if self._building is None or self._building.done():
            self._building = asyncio.ensure_future(self._build())
        return self._building

    async def _rebuild(self) -> None:
        """A build that starts now (after one under way, which may have read older data)."""
        under_way = self._building is not None and not self._building.done()
        await asyncio.shield(self._start())
        if under_way:
            await asyncio.shield(self._start())

    async def _build(self) -> None:
        started = self.clock()
        version, rows = await asyncio.to_thread(self._versioned)
        self._rows, self._index = rows, {row.device: row for row in rows}
        self._built_at, self._version = started, version

    def _versioned(self) -> tuple[str, list[DeviceRow]]:
        """The store's activity version, read before the rows (so rows are at least that)."""
        version = activity_version(self.backend.store)
        return version, self.build()

    def build(self) -> list[DeviceRow]:
        """Every device of the applied revision and every enrolled one, by name."""
        store = self.backend.store
        catalog = self.backend.catalog()
        fleet = self.backend.fleet() or {}
        statuses: dict[str, list[DeploymentStatus]] = {}
        for record in store.statuses():
            statuses.setdefault(record.device, []).append(record.status)
        now = datetime.now(UTC)
        rows = []
        for info in store.inventory():
            declared = catalog.devices.get(info.device) if catalog else None
            facts = info.facts
            rows.append(
                DeviceRow(
                    device=info.device,
                    condition=device_condition(
                        info.pending,
                        statuses.get(info.device, ()),
                        info.reported_at,
                        now,
                        self.offline_after,
                    ),
                    labels=declared.manifest.metadata.labels if declared else info.labels,
                    system_model=declared.manifest.spec.system_model
                    if declared
                    else info.system_model,
                    applications=tuple(sorted(fleet.get(info.device, {}))),
                    engine=" ".join(filter(None, (facts.engine, facts.engine_version)))
                    if facts
                    else None,
                    disk_free=facts.disk_free_bytes if facts else None,
                    last_seen=info.reported_at,
                    last_poll=info.polled_at,
                    file=declared.file if declared else None,
                )
            )
        return rows
