"""Run the controller: poll and watch the branch, and work the device queue.

Controller calls (git, database) run in worker threads, so the event loop never blocks; the loop
only waits, schedules and serves HTTP. Commits and reconciles share one worker; agents' reports
have their own, so a burst of large reports never holds a commit back. The store takes the two
writers (SQLite's one at a time, queued in the store; PostgreSQL's at once), and the controller
guards the state both workers touch in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

from reconciler import wire
from reconciler.controller.controller import Controller, Listener
from reconciler.controller.queue import WorkQueue, resync_delay, run_workers
from reconciler.core.document import DocumentUnavailable, Fleet
from reconciler.logs import get_logger
from reconciler.store import Store

T = TypeVar("T")
log = get_logger("hedgerow.controller")


class Runner:
    """The loops around one Controller. `wake()` asks for a fetch now (webhook, watch)."""

    def __init__(
        self,
        controller: Controller,
        *,
        interval: float = 30.0,
        resync: float = 300.0,
        workers: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.controller = controller
        self.interval = interval
        self.resync = resync
        self.workers = workers
        self.rng = rng or random.Random()
        self.queue = WorkQueue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedgerow")
        self._reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedgerow-reports")
        self._wake = asyncio.Event()
        self.synced = asyncio.Event()  # set after each completed sync, for tests and health
        self.reconciled: list[Callable[[float], None]] = []  # told each reconcile's seconds
        self.resuming = True  # until the applied revision is validated again at start
        self.fetched_at: float | None = None  # monotonic time of the last fetch that worked
        self.fetch_error: str | None = None  # why the last fetch failed, None when it worked

    # -- what the HTTP API needs (reconciler.server.backend.Backend) ---------------------------

    @property
    def store(self) -> Store:
        return self.controller.store

    def wake(self) -> None:
        """Fetch now (a webhook, a watched commit)."""
        self._wake.set()

    def revision(self) -> str | None:
        applied = self.controller.applied
        return applied.sha if applied else None

    def fleet(self) -> Fleet | None:
        applied = self.controller.applied
        return applied.fleet if applied else None

    def document_key(self, device: str) -> Hashable | None:
        """What a device's document depends on (its revision and the images it reported);
        None when the applied revision has no such device. While the controller starts, the
        stored document stands for it (one key, looked up once per device, off the loop)."""
        applied = self.controller.applied
        if applied is None:
            if self.resuming:
                return ("stored", device)
            raise DocumentUnavailable("no revision is applied yet: retry")
        if device not in applied.fleet:
            return None
        return self.controller.document_revision(device), self.controller.images_present(device)

    def desired_document(self, device: str) -> wire.DesiredDocument | None:
        """The device's document; while the controller starts, the one the store kept, when
        it is whole (it needs no credential the device lacks). Called in a thread."""
        if self.controller.applied is None and self.resuming:
            stored = self.controller.stored_document(device)
            if stored is None or not stored.serves(self.controller.images_present(device)):
                raise DocumentUnavailable(
                    "the controller is starting and cannot serve this document yet: retry"
                )
            return msgspec.json.decode(stored.body, type=wire.DesiredDocument)
        return self.controller.desired_document(device)

    async def report(self, report: wire.StatusReport) -> int:
        """Store a report in the reports' worker, then re-plan the device in the other."""
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(self._reports, self.controller.ingest, report)
        self.queue.add(report.device)
        return last

    def queue_depth(self) -> int:
        return self.queue.depth()

    def source_status(self) -> tuple[bool, str]:
        """Whether the last fetch of the branch worked, and what to tell an operator."""
        if self.fetch_error is not None:
            return False, f"the last fetch failed: {self.fetch_error}"
        if self.fetched_at is None:
            return False, "not fetched yet"
        return True, f"fetched {time.monotonic() - self.fetched_at:.0f} s ago"

    def on_change(self, listener: Listener) -> None:
        self.controller.listeners.append(listener)

    def on_reconciled(self, observer: Callable[[float], None]) -> None:
        self.reconciled.append(observer)

    # -- the loops -----------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def poll(self) -> None:
        """Fetch on every wake-up, or every interval (jittered by 10% against herds)."""
        while not self.queue.shutting_down:
            try:
                outcome = await self.call(self.controller.sync)
            except Exception as exc:  # a fetch that fails is retried at the next interval
                self.fetch_error = str(exc) or type(exc).__name__
                log.warning("sync failed", error=self.fetch_error)
            else:
                self.fetched_at, self.fetch_error = time.monotonic(), None
                if outcome is not None:
                    log.info(
                        "revision applied" if outcome.applied else "revision rejected",
                        revision=outcome.sha,
                        errors=len(outcome.errors),
                        devices=len(outcome.devices),
                    )
                    for device in outcome.devices:
                        self.queue.add(device)
                self.synced.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), resync_delay(self.interval, self.rng))
            self._wake.clear()

    async def resync_all(self) -> None:
        """Level-triggered safety net: every device is reconciled again now and then."""
        while not self.queue.shutting_down:
            await asyncio.sleep(resync_delay(self.resync, self.rng))
            for device in self.controller.devices():
                self.queue.add(device)

    async def run(self, *extra: Awaitable[None]) -> None:
        """Serve at once (`extra` holds the HTTP server): devices get their stored documents
        while the applied revision is validated again, then the loops start."""
        try:
            await asyncio.gather(self._resume_and_loop(), *extra)
        finally:
            self.queue.shutdown()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._reports.shutdown(wait=False, cancel_futures=True)

    async def _resume_and_loop(self) -> None:
        started = time.monotonic()
        await self.call(self.controller.resume)
        self.resuming = False
        log.info("resumed", revision=self.revision(), seconds=round(time.monotonic() - started, 3))
        for device in self.controller.devices():
            self.queue.add(device)

        async def reconcile(device: str) -> None:
            started = time.perf_counter()
            try:
                await self.call(self.controller.reconcile, device)
            finally:
                for observe in self.reconciled:
                    observe(time.perf_counter() - started)

        def failed(device: str, exc: Exception) -> None:
            log.warning("reconcile failed", device=device, error=str(exc))

        await asyncio.gather(
            self.poll(),
            self.resync_all(),
            run_workers(self.queue, reconcile, self.workers, on_error=failed),
        )
