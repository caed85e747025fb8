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
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler import wire
from reconciler.controller.controller import Controller, Ingested, Listener
from reconciler.controller.queue import WorkQueue, resync_delay, run_batches
from reconciler.core.document import DocumentUnavailable, Fleet, StoredDocument
from reconciler.logs import get_logger
from reconciler.manifests.catalog import Catalog
from reconciler.store import Store
from reconciler.store.notices import APPLIED, OBSERVED, ROLLOUTS, WAKE, Notice

if TYPE_CHECKING:  # psycopg is loaded only by a controller on PostgreSQL
    from reconciler.store.cluster import Cluster

T = TypeVar("T")
# A batch of reports is one transaction: large enough that a burst costs a few commits, small
# enough that a commit of git never waits long behind one (SQLite has one writer at a time).
BATCH_REPORTS = 500
BATCH_EVENTS = 5_000
PLAN_BATCH = 200  # devices planned in one transaction, at most
RESYNC_TICK = 10.0  # seconds between the batches of the periodic resync
LOAD_BATCH = 2_000  # stored documents read in one query, at most
# A replica looks for a revision the leader applied this often, in case a NOTIFY was missed.
FOLLOW_EVERY = 5.0
CAMPAIGN_EVERY = 2.0  # seconds before a replica that could not take up leadership tries again
# Planning waits while the event loop lags by more than BUSY_LAG (a fan-out of new documents, a
# burst of reports), for at most MAX_DEFER seconds a batch.
BUSY_LAG = 0.02
MAX_DEFER = 5.0
# Rollouts step when reports brought news, at most once per ROLLOUT_SPACING (a step weighs
# every targeted device: one per batch of plans doubled the controller's work per report at
# 10,000 devices), and at least once per ROLLOUT_TICK: a bake, a deadline or a device going
# offline happens with no report.
ROLLOUT_TICK = 2.0
ROLLOUT_SPACING = 0.2


def _batch(
    pending: list[tuple[wire.StatusReport, asyncio.Future[Ingested]]],
) -> list[tuple[wire.StatusReport, asyncio.Future[Ingested]]]:
    """The first reports waiting, up to BATCH_REPORTS reports or BATCH_EVENTS events, and
    one report of each device (a device's second report is compared with its first)."""
    events = 0
    devices: set[str] = set()
    for count, (report, _) in enumerate(pending[:BATCH_REPORTS]):
        events += len(report.events)
        if count > 0 and (events > BATCH_EVENTS or report.device in devices):
            return pending[:count]
        devices.add(report.device)
    return pending[:BATCH_REPORTS]


log = get_logger("hedgerow.controller")


def _settle(answer: asyncio.Future[T], result: T | Exception) -> None:
    """Give a waiting request its result, or the exception it gets instead (unless it has
    gone away meanwhile)."""
    if answer.done():
        return
    if isinstance(result, Exception):
        answer.set_exception(result)
    else:
        answer.set_result(result)


async def _serving_first() -> None:
    """Wait while the event loop is busy serving: planning shares the interpreter's lock with
    it, and a device waits on its document, not on its status. A commit that changes 10,000
    documents wakes 10,000 polls and queues 10,000 plans; served first, the polls' tail is
    about a second shorter. Bounded: planning is never held back for long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_DEFER
    while loop.time() < deadline:
        asked = loop.time()
        await asyncio.sleep(0)  # comes back after every callback ready now has run
        if loop.time() - asked < BUSY_LAG:
            return


class Runner:
    """The loops around one Controller. `wake()` asks for a fetch now (webhook, watch).

    Alone (SQLite, or no `cluster`), it leads: it follows git, applies, plans. With a
    `cluster` (replicas on one PostgreSQL database), it serves polls and reports always, and
    leads only while it holds the cluster's lock; the rest of the time it follows the
    revision the leader applied (`Controller.follow`), woken by the leader's NOTIFY.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        interval: float = 30.0,
        resync: float = 3600.0,
        workers: int = 2,
        rng: random.Random | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.controller = controller
        self.cluster = cluster
        self.leading = cluster is None  # a replica leads once elected
        self.interval = interval
        self.resync = resync
        self.workers = workers
        self.rng = rng or random.Random()
        self.queue = WorkQueue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedgerow")
        self._reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedgerow-reports")
        self._pending: list[tuple[wire.StatusReport, asyncio.Future[Ingested]]] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._wanted: dict[str, list[asyncio.Future[bytes]]] = {}  # stored documents asked for
        self._loader: asyncio.Future[None] | None = None
        self._follow = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
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
        """Fetch now (a webhook, a watched commit); a replica that does not lead asks the
        leader to."""
        if self.leading or self.cluster is None:
            self._wake.set()
            return
        task = asyncio.get_running_loop().create_task(self.cluster.wake_leader())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def revision(self) -> str | None:
        applied = self.controller.applied
        return applied.sha if applied else None

    def role(self) -> str:
        return "leader" if self.leading else "follower"

    def fleet(self) -> Fleet | None:
        applied = self.controller.applied
        return applied.fleet if applied else None

    def catalog(self) -> Catalog | None:
        applied = self.controller.applied
        return applied.report.catalog if applied else None

    def document_key(self, device: str) -> Hashable | None:
        """What a device's document depends on (its revision, what it should run, and the
        images it reported);
        None when the applied revision has no such device. Never blocks: while the controller
        starts, or before a device's images are read from the store, a key that `document`
        settles off the loop stands for it."""
        applied = self.controller.applied
        if applied is None:
            if self.resuming:
                return ("stored", device)
            raise DocumentUnavailable("no revision is applied yet: retry")
        wanted = applied.fleet.get(device)
        if wanted is None:
            return None
        present = self.controller.known_images(device)
        if present is None:
            return ("unread", device)
        # what it should run, too: a rollout moves a device without a new revision (the
        # same objects while nothing changes, so an unchanged poll compares identities)
        return self.controller.document_revision(device), present, tuple(wanted.values())

    async def document(self, device: str) -> bytes | None:
        """The device's document as served. While the controller starts, the one the store
        kept when it is whole (it needs no credential the device lacks); else a join of the
        applied revision's shared parts, on the loop, once the device's images are known."""
        if self.controller.applied is None and self.resuming:
            return await asyncio.to_thread(self._stored, device)
        if device in self.controller.ahead:  # a follower, before it validates the revision
            return await self._stored_ahead(device)
        if self.controller.known_images(device) is None:
            await asyncio.to_thread(self.controller.images_present, device)
        return self.controller.document(device)

    async def _stored_ahead(self, device: str) -> bytes:
        """The document the leader stored for `device`, read with the others asked for at
        the same moment: a fan-out of 20,000 polls is a few queries, not 20,000."""
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(device, []).append(answer)
        if self._loader is None or self._loader.done():
            self._loader = asyncio.ensure_future(self._load_stored())
        return await answer

    async def _load_stored(self) -> None:
        while self._wanted:
            batch = dict(list(self._wanted.items())[:LOAD_BATCH])
            for device in batch:
                del self._wanted[device]
            try:
                found = await asyncio.to_thread(self._stored_many, list(batch))
            except Exception as failed:  # the store does not answer: each poll gets it
                found = dict.fromkeys(batch, failed)
            for device, answers in batch.items():
                for answer in answers:
                    _settle(answer, found[device])

    def _stored_many(self, devices: list[str]) -> dict[str, bytes | Exception]:
        stored = self.store.stored_documents(devices)
        why = "this replica is taking up the leader's revision: retry"
        return {device: self._servable(device, stored.get(device), why) for device in devices}

    def _stored(self, device: str) -> bytes:
        why = "the controller is starting and cannot serve this document yet: retry"
        found = self._servable(device, self.controller.stored_document(device), why)
        if isinstance(found, DocumentUnavailable):
            raise found
        return found

    def _servable(
        self, device: str, stored: StoredDocument | None, why: str
    ) -> bytes | DocumentUnavailable:
        """A stored document's body when it is whole for the device (it needs no pull
        credential the device lacks), else why it cannot be served yet."""
        if stored is None or not stored.serves(self.controller.images_present(device)):
            return DocumentUnavailable(why)
        return stored.body

    async def report(self, report: wire.StatusReport) -> int:
        """Store a report with the others waiting (one transaction a batch, in the reports'
        worker), then re-plan the device in the other worker if what it runs changed."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Ingested] = loop.create_future()
        self._pending.append((report, answer))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        stored = await answer
        if stored.changed:
            self.queue.add(report.device)
        return stored.last_seq

    async def _drain(self) -> None:
        """Store the reports that arrived, a batch at a time, until none is left."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = _batch(self._pending)
                del self._pending[: len(batch)]
                try:
                    results = await loop.run_in_executor(
                        self._reports, self.controller.ingest_many, [r for r, _ in batch]
                    )
                except Exception as failed:  # the store does not answer: every one gets it
                    results = [failed] * len(batch)
                for (_, answer), result in zip(batch, results, strict=True):
                    _settle(answer, result)
        finally:
            self._draining = False

    def queue_depth(self) -> int:
        return self.queue.depth()

    def source_status(self) -> tuple[bool, str]:
        """Whether the last fetch of the branch worked, and what to tell an operator."""
        if not self.leading:
            return True, "a follower: the leader fetches the branch"
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
        """Level-triggered safety net: every device is planned again once a period, spread
        over it in a batch every RESYNC_TICK seconds (a fleet of 100,000 is a few hundred
        devices at a time, a few queries each batch; one device at a time cost each its
        own queries, a tenth of a core at that size)."""
        while not self.queue.shutting_down:
            period = resync_delay(self.resync, self.rng)
            devices = self.controller.devices()
            if not devices:
                await asyncio.sleep(period)
                continue
            self.rng.shuffle(devices)
            ticks = max(1, min(len(devices), int(period / RESYNC_TICK)))
            started = time.monotonic()
            for tick in range(ticks):
                due = started + period * (tick + 1) / ticks
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                for device in devices[
                    tick * len(devices) // ticks : (tick + 1) * len(devices) // ticks
                ]:
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
        try:
            await self.call(self.controller.resume)
        except Exception as exc:  # git or the database away: the loops catch up when back
            log.warning("resume failed", error=str(exc) or type(exc).__name__)
        self.resuming = False
        log.info("resumed", revision=self.revision(), seconds=round(time.monotonic() - started, 3))
        if self.cluster is None:
            await self._lead()
        else:
            await self._replicate(self.cluster)

    async def _lead(self) -> None:
        """Follow git, apply, and plan the devices that wait for it (the store keeps them
        across restarts and leaders: a start plans those, not the whole fleet)."""
        for device in await self.call(self.store.replans):
            self.queue.add(device)

        async def reconcile(devices: list[str]) -> None:
            await _serving_first()
            started = time.perf_counter()
            try:
                await self.call(self.controller.reconcile_many, devices)
                if self.controller.rollouts.dirty:
                    rollout_news.set()
            finally:
                each = (time.perf_counter() - started) / len(devices)
                for observe in self.reconciled:
                    for _ in devices:
                        observe(each)

        def failed(devices: list[str], exc: Exception) -> None:
            log.warning(
                "reconcile failed", devices=devices[:10], count=len(devices), error=str(exc)
            )

        rollout_news = asyncio.Event()
        await asyncio.gather(
            self.poll(),
            self.resync_all(),
            self.rollout_steps(rollout_news),
            run_batches(self.queue, reconcile, self.workers, batch=PLAN_BATCH, on_error=failed),
        )

    async def rollout_steps(self, news: asyncio.Event) -> None:
        """Step the rollouts reports brought `news` for, ROLLOUT_SPACING apart at most, and
        every rollout each ROLLOUT_TICK: bakes end, deadlines pass, devices go offline, and
        none of them sends a report."""
        ticked = time.monotonic()
        while not self.queue.shutting_down:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    news.wait(), max(0.0, ticked + ROLLOUT_TICK - time.monotonic())
                )
            news.clear()
            refresh = time.monotonic() >= ticked + ROLLOUT_TICK
            if refresh:
                ticked = time.monotonic()
            try:
                changed = await self.call(self.controller.step_rollouts, refresh)
            except Exception as exc:  # the database away: the next tick tries again
                log.warning("rollout step failed", error=str(exc) or type(exc).__name__)
                changed = []
            for device in changed:
                self.queue.add(device)
            await asyncio.sleep(ROLLOUT_SPACING)

    # -- replicas ------------------------------------------------------------------------------

    async def _replicate(self, cluster: Cluster) -> None:
        """Listen to the other replicas, follow the leader's revisions, and lead when elected."""
        await asyncio.gather(cluster.listen(self._heard), self._following(), self._terms(cluster))

    def _heard(self, notice: Notice) -> None:
        if notice.channel in (None, APPLIED, ROLLOUTS) and not (
            notice.channel == ROLLOUTS and self.leading
        ):  # None: reconnected, a notice may be missed
            self._follow.set()
        elif notice.channel == OBSERVED and self.leading:
            for device in notice.devices:  # stored by another replica: re-plan here
                self.queue.add(device)
        elif notice.channel == WAKE and self.leading:
            self._wake.set()

    async def _following(self) -> None:
        """Take up each revision the leader applies: at its NOTIFY, or within FOLLOW_EVERY."""
        while not self.queue.shutting_down:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._follow.wait(), FOLLOW_EVERY)
            self._follow.clear()
            try:
                await self.call(self.controller.take_stored)  # polls wake now
                changed = await self.call(self.controller.follow)
                if not self.leading:
                    await self.call(self.controller.follow_rollouts)
            except Exception as exc:  # the database or git is away: try again later
                log.warning("follow failed", error=str(exc) or type(exc).__name__)
                continue
            if changed is not None:
                log.info("revision followed", revision=self.revision(), devices=len(changed))

    async def _terms(self, cluster: Cluster) -> None:
        """Campaign; lead while the lock holds; then follow and campaign again."""
        while not self.queue.shutting_down:
            term = await cluster.campaign(lambda: self.queue.shutting_down)
            if term is None:
                return
            try:  # the last leader's revision first: this one goes on from it
                await self.call(self.controller.follow)
            except Exception as exc:
                log.warning("cannot take up the last revision", error=str(exc) or repr(exc))
                await cluster.resign()
                await asyncio.sleep(CAMPAIGN_EVERY)
                continue
            self.controller.forget_plans()
            self.controller.term, self.leading = term, True
            log.info("leading", replica=cluster.name, term=term)
            lead = asyncio.ensure_future(self._lead())
            held = asyncio.ensure_future(cluster.hold())
            try:
                await asyncio.wait({lead, held}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (lead, held):
                    task.cancel()
                results = await asyncio.gather(lead, held, return_exceptions=True)
                self.controller.term, self.leading = None, False
                await cluster.resign()
            failed = [str(r) or type(r).__name__ for r in results if isinstance(r, Exception)]
            log.warning("no longer leading", replica=cluster.name, term=term, errors=failed)
