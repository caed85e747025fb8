"""The fleet's rows for the dashboard and the operator API, built from the store and the
applied revision, at most once a second: a devices page for 10,000 devices filters rows in
memory instead of asking the store. A page asked for while rows are being built gets the rows
built last (at most a second or two old)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.core.status import DeploymentStatus
from reconciler.server.backend import Backend
from reconciler.server.dashboard.model import DeviceRow, device_condition

REBUILD_EVERY = 1.0


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
        self._building: asyncio.Task[None] | None = None

    async def rows(self) -> list[DeviceRow]:
        """The rows built last; a new build starts when those are `every` seconds old (the
        first call waits for the first build)."""
        if self.clock() - self._built_at >= self.every and (
            self._building is None or self._building.done()
        ):
            self._building = asyncio.ensure_future(self._build())
        if self._rows is None and self._building is not None:
            await asyncio.shield(self._building)
        assert self._rows is not None
        return self._rows

    async def row(self, device: str) -> DeviceRow | None:
        await self.rows()
        return self._index.get(device)

    async def _build(self) -> None:
        started = self.clock()
        rows = await asyncio.to_thread(self.build)
        self._rows, self._index = rows, {row.device: row for row in rows}
        self._built_at = started

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
