"""The controller's work queue: level-triggered, de-duplicated, with per-key backoff; no threads.

Modelled on client-go's workqueue as controller-runtime uses it. Keys are device names and
carry no payload: a worker reconciles the device's whole desired state, so ten changes to one
device while it waits are one reconcile, not ten.
- `add` de-duplicates: a waiting key is not queued twice; a key being processed is marked dirty
  and queued once more when its worker calls `done`, so one device never has two workers and a
  change that arrives mid-reconcile is never lost.
- `get` hands out ready keys in FIFO order of readiness.
- `add_after` delays a key (periodic resync, see `resync_delay`); `retry` delays it by a
  per-key exponential backoff, `forget` resets that backoff after a success.
- `shutdown` drops what is pending and makes `get` raise `QueueShutDown`, so workers stop at
  once. Unlike client-go it does not drain the ready keys first: reconciliation is
  level-triggered, so the next start resyncs every device anyway.
Time comes from a `Clock`, so tests drive delays with `FakeClock.advance` and never sleep.
Everything runs on one event loop: no locks, and the methods must be called from that loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Protocol

from reconciler.errors import HedgerowError

__all__ = [
    "Clock",
    "FakeClock",
    "MonotonicClock",
    "QueueShutDown",
    "Timer",
    "WorkQueue",
    "resync_delay",
    "run_workers",
    "sleep",
]


class Timer(Protocol):
    """A scheduled callback that can be called off (`asyncio.TimerHandle` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time plus callbacks at a time: all the queue needs, and all a test must fake."""

    def now(self) -> float:
        """Monotonic seconds; only differences matter."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the event loop once `now() >= when`."""
        ...


class MonotonicClock:
    """The production clock: `time.monotonic`, timers on the running asyncio loop."""

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        # A relative delay, so this works whatever the loop's own time base is.
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - self.now()), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told, so tests of delays are exact and take no time.

    Timers fire synchronously inside `advance`, in deadline order (ties in scheduling order),
    with `now()` reading the timer's deadline. A timer scheduled at or before `now()` waits for
    the next `advance` (even `advance(0)`), as a real loop would run it on its next iteration.
    Futures those callbacks complete resume their tasks once the test yields to the loop.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due on the way."""
        if not seconds >= 0:
            raise ValueError(f"cannot advance a clock by {seconds!r} seconds")
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = target


async def sleep(clock: Clock, seconds: float) -> None:
    """Wait `seconds` on `clock`: a periodic loop built on it is testable with a `FakeClock`."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    timer = clock.call_at(clock.now() + seconds, wake)
    try:
        await woken
    finally:
        timer.cancel()


class QueueShutDown(HedgerowError):
    """Raised by `get` once the queue is shut down, so that workers stop."""


class WorkQueue:
    """De-duplicated FIFO of keys with delayed adds and per-key backoff; see the module doc."""

    def __init__(
        self, clock: Clock | None = None, *, base: float = 1.0, cap: float = 300.0
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r}, cap={cap!r}")
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._base = base
        self._cap = cap
        self._ready: deque[str] = deque()
        self._dirty: set[str] = set()  # needs a reconcile: in _ready, or processing and re-added
        self._processing: set[str] = set()
        # Delayed keys: the live (deadline, seq) per key; the heap may hold superseded entries.
        self._waiting: dict[str, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self._failures: dict[str, int] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutdown = False

    # Adding

    def add(self, key: str) -> None:
        """Ask for `key` to be reconciled; a no-op if it already waits or after shutdown."""
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # `done` queues it: one worker per key
        self._ready.append(key)
        self._wake_one()

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` once `delay` seconds have passed; a key already delayed keeps the earlier
        of its two deadlines, so a resync never postpones a retry (nor the reverse)."""
        if math.isnan(delay):
            raise ValueError("delay is NaN")
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        deadline = self._clock.now() + delay
        current = self._waiting.get(key)
        if current is not None and current[0] <= deadline:
            return
        seq = next(self._seq)
        self._waiting[key] = (deadline, seq)
        heapq.heappush(self._heap, (deadline, seq, key))
        self._promote_due()

    # Backoff

    def retry(self, key: str) -> float:
        """Re-add `key` after its backoff, `min(base * 2**failures, cap)`, and count the failure.

        Returns the delay, for logs and metrics.
        """
        failures = self._failures.get(key, 0)
        # The exponent is bounded so that huge failure counts saturate at the cap, not overflow.
        delay = min(self._base * 2.0 ** min(failures, 1023), self._cap)
        if not self._shutdown:
            self._failures[key] = failures + 1
            self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Reset `key`'s backoff after a success; also call it for deleted devices, whose count
        would otherwise be kept for ever."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        """How many times `key` has been retried since it was last forgotten."""
        return self._failures.get(key, 0)

    # Taking

    def get_nowait(self) -> str | None:
        """The next ready key, now marked as processing, or None if no key is ready."""
        if self._shutdown:
            raise QueueShutDown
        self._promote_due()
        if not self._ready:
            return None
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    async def get(self) -> str:
        """Wait for the next ready key and mark it as processing; call `done` with it after."""
        while True:
            key = self.get_nowait()
            if key is not None:
                return key
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                # Cancelled: if a key was already meant for this getter, pass it on.
                getter.cancel()
                with suppress(ValueError):
                    self._getters.remove(getter)
                if self._ready and not getter.cancelled():
                    self._wake_one()
                raise

    def done(self, key: str) -> None:
        """Release `key`; if it was added while processing it is queued again now."""
        if key not in self._processing:
            raise ValueError(f"{key!r} is not being processed")
        self._processing.remove(key)
        if key in self._dirty:
            self._ready.append(key)
            self._wake_one()

    # Metrics

    def __len__(self) -> int:
        return self.depth()

    def depth(self) -> int:
        """Keys ready and waiting for a worker."""
        self._promote_due()
        return len(self._ready)

    def delayed(self) -> int:
        """Keys waiting for a delay (a retry or a resync) to pass."""
        self._promote_due()
        return len(self._waiting)

    # Stopping

    @property
    def shutting_down(self) -> bool:
        return self._shutdown

    def shutdown(self) -> None:
        """Drop pending keys and make every `get`, waiting or future, raise `QueueShutDown`.

        Keys being processed may still be passed to `done`.
        """
        self._shutdown = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        self._ready.clear()
        self._dirty.clear()
        self._waiting.clear()
        self._heap.clear()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    # Internals

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _promote_due(self) -> None:
        """Add the delayed keys whose deadline has passed, in deadline order, then re-arm."""
        now = self._clock.now()
        while self._heap and self._heap[0][0] <= now:
            deadline, seq, key = heapq.heappop(self._heap)
            if self._waiting.get(key) == (deadline, seq):
                del self._waiting[key]
                self.add(key)
        self._arm()

    def _arm(self) -> None:
        """Keep exactly one clock timer, at the earliest live deadline."""
        while self._heap and self._waiting.get(self._heap[0][2]) != self._heap[0][:2]:
            heapq.heappop(self._heap)  # superseded by an earlier deadline
        head = self._heap[0][0] if self._heap else None
        if head == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, head
        if head is not None:
            self._timer = self._clock.call_at(head, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if not self._shutdown:
            self._promote_due()


def resync_delay(period: float, rng: random.Random) -> float:
    """`period` jittered by ±10 %, so that devices added together do not resync in lockstep."""
    return period * rng.uniform(0.9, 1.1)


async def run_workers(
    queue: WorkQueue,
    reconcile: Callable[[str], Awaitable[None]],
    workers: int,
    *,
    on_error: Callable[[str, Exception], None],
) -> None:
    """Run `workers` loops of get → reconcile → done until the queue shuts down.

    A success forgets the key's backoff; an exception retries the key with backoff and is
    reported to `on_error` (the queue has no logging dependency). An exception raised by
    `on_error` itself stops every worker and propagates, in an ExceptionGroup.
    """

    async def one(keys: list[str]) -> None:
        await reconcile(keys[0])

    def failed(keys: list[str], exc: Exception) -> None:
        on_error(keys[0], exc)

    await run_batches(queue, one, workers, batch=1, on_error=failed)


async def run_batches(
    queue: WorkQueue,
    reconcile: Callable[[list[str]], Awaitable[None]],
    workers: int,
    *,
    batch: int,
    on_error: Callable[[list[str], Exception], None],
) -> None:
    """`run_workers` taking up to `batch` ready keys at a time: a worker waits for one key,
    then takes the others already ready, so a burst is worked in a few batches while a lone
    key goes at once. A batch succeeds or fails (and is retried) whole."""
    if workers < 1:
        raise ValueError(f"need at least one worker, got {workers}")

    async def work() -> None:
        while True:
            try:
                keys = [await queue.get()]
            except QueueShutDown:
                return
            while len(keys) < batch and (more := queue.get_nowait()) is not None:
                keys.append(more)
            try:
                await reconcile(keys)
            except Exception as exc:
                for key in keys:
                    queue.retry(key)
                on_error(keys, exc)
            else:
                for key in keys:
                    queue.forget(key)
            finally:
                for key in keys:
                    queue.done(key)

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(work())
