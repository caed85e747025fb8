"""The work queue: de-duplication, one worker per key, backoff, delays, shutdown and workers.

Time is a FakeClock throughout, so every delay is checked exactly and nothing sleeps; async
tests run their own loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reconciler.controller.queue import (
    FakeClock,
    MonotonicClock,
    QueueShutDown,
    Timer,
    WorkQueue,
    resync_delay,
    run_batches,
    run_workers,
    sleep,
)
from tests.support.properties import examples


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def settle(rounds: int = 100) -> None:
    """Let every runnable task run to its next wait: with a fake clock nothing else can move."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def take(queue: WorkQueue) -> str:
    key = queue.get_nowait()
    assert key is not None
    return key


def drain(queue: WorkQueue) -> list[str]:
    """Every ready key, each taken and released."""
    keys = []
    while (key := queue.get_nowait()) is not None:
        keys.append(key)
        queue.done(key)
    return keys


# De-duplication and FIFO


def test_waiting_key_is_not_added_twice() -> None:
    queue = WorkQueue(FakeClock())
    for key in ["a", "b", "a", "a", "b"]:
        queue.add(key)
    assert len(queue) == queue.depth() == 2
    assert drain(queue) == ["a", "b"]
    assert queue.get_nowait() is None


def test_ready_keys_come_out_in_fifo_order() -> None:
    queue = WorkQueue(FakeClock())
    keys = [f"device-{i}" for i in (5, 2, 9, 1, 7)]
    for key in keys:
        queue.add(key)
    assert drain(queue) == keys


def test_key_added_while_processing_is_requeued_once_after_done() -> None:
    queue = WorkQueue(FakeClock())
    queue.add("a")
    assert take(queue) == "a"
    queue.add("b")
    for _ in range(3):
        queue.add("a")  # three changes mid-reconcile: one more reconcile, not three
    assert len(queue) == 1  # only b: a waits for its worker to finish
    assert take(queue) == "b"
    assert queue.get_nowait() is None
    queue.done("a")
    assert len(queue) == 1
    assert take(queue) == "a"
    queue.done("a")
    queue.done("b")
    assert queue.get_nowait() is None


def test_done_without_processing_is_an_error() -> None:
    queue = WorkQueue(FakeClock())
    queue.add("a")
    with pytest.raises(ValueError, match="not being processed"):
        queue.done("a")


def test_key_being_processed_is_never_handed_to_another_worker() -> None:
    async def scenario() -> None:
        queue = WorkQueue(FakeClock())
        queue.add("a")
        first = await queue.get()
        waiting = [asyncio.create_task(queue.get()) for _ in range(2)]
        queue.add("a")
        await settle()
        assert not any(task.done() for task in waiting)
        queue.done(first)
        await settle()
        assert [task.result() for task in waiting if task.done()] == ["a"]
        queue.shutdown()
        await settle()
        assert sum(isinstance(task.exception(), QueueShutDown) for task in waiting) == 1

    run(scenario())


# Backoff


def test_backoff_doubles_up_to_the_cap_and_forget_resets_it() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    delays = []
    for _ in range(11):
        delays.append(queue.retry("a"))
        clock.advance(delays[-1])
        assert drain(queue) == ["a"]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert queue.failures("a") == 11
    assert queue.failures("b") == 0
    queue.forget("a")
    assert queue.failures("a") == 0
    assert queue.retry("a") == 1


def test_retried_key_becomes_ready_exactly_when_its_backoff_ends() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.retry("a")
    queue.retry("a")  # second failure: 2 s, but the 1 s deadline already set is earlier
    assert queue.delayed() == 1
    clock.advance(0.75)
    assert len(queue) == 0
    clock.advance(0.25)
    assert (len(queue), queue.delayed()) == (1, 0)
    assert queue.failures("a") == 2


def test_backoff_base_and_cap_are_configurable() -> None:
    queue = WorkQueue(FakeClock(), base=0.5, cap=3.0)
    assert [queue.retry("a") for _ in range(5)] == [0.5, 1, 2, 3, 3]
    for base, cap in [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0)]:
        with pytest.raises(ValueError, match="base"):
            WorkQueue(FakeClock(), base=base, cap=cap)


def test_huge_failure_counts_saturate_at_the_cap() -> None:
    queue = WorkQueue(FakeClock())
    for _ in range(1100):
        delay = queue.retry("a")
    assert delay == 300


# Delayed adds


def test_add_after_orders_by_deadline_then_fifo() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add_after("late", 5)
    queue.add_after("tie-1", 2)
    queue.add_after("early", 1)
    queue.add_after("tie-2", 2)
    assert queue.delayed() == 4
    clock.advance(1.5)
    assert drain(queue) == ["early"]
    clock.advance(10)  # several deadlines pass at once: still in deadline order
    assert drain(queue) == ["tie-1", "tie-2", "late"]
    assert queue.delayed() == 0


def test_add_after_keeps_the_earlier_deadline() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add_after("a", 10)
    queue.add_after("a", 3)
    queue.add_after("a", 7)
    assert queue.delayed() == 1
    clock.advance(2.5)
    assert len(queue) == 0
    clock.advance(0.5)
    assert drain(queue) == ["a"]
    clock.advance(100)  # the superseded deadlines do not add it again
    assert queue.get_nowait() is None


def test_delayed_key_already_waiting_is_not_duplicated() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add("a")
    queue.add_after("a", 1)
    clock.advance(1)
    assert drain(queue) == ["a"]


def test_add_after_without_delay_adds_now() -> None:
    queue = WorkQueue(FakeClock())
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert queue.delayed() == 0
    assert drain(queue) == ["a", "b"]
    with pytest.raises(ValueError, match="NaN"):
        queue.add_after("c", float("nan"))


def test_get_waits_for_a_delayed_key() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        queue = WorkQueue(clock)
        getter = asyncio.create_task(queue.get())
        queue.add_after("a", 30)
        await settle()
        assert not getter.done()
        clock.advance(30)
        await settle()
        assert getter.result() == "a"

    run(scenario())


@given(seed=st.integers(), period=st.floats(0.001, 86_400))
def test_resync_delay_is_jittered_by_ten_percent(seed: int, period: float) -> None:
    delay = resync_delay(period, random.Random(seed))
    assert period * 0.9 <= delay <= period * 1.1


def test_resync_delays_differ() -> None:
    rng = random.Random(1)
    assert len({resync_delay(60, rng) for _ in range(20)}) == 20


# Shutdown and cancellation


def test_shutdown_wakes_every_waiting_getter() -> None:
    async def scenario() -> None:
        queue = WorkQueue(FakeClock())
        getters = [asyncio.create_task(queue.get()) for _ in range(3)]
        await settle()
        assert not any(task.done() for task in getters)
        queue.shutdown()
        results = await asyncio.gather(*getters, return_exceptions=True)
        assert all(isinstance(result, QueueShutDown) for result in results)

    run(scenario())


def test_shutdown_drops_pending_keys_and_ignores_new_ones() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add("held")
    take(queue)
    queue.add("held")
    queue.add("ready")
    queue.add_after("later", 5)
    queue.shutdown()
    assert queue.shutting_down
    queue.add("new")
    queue.add_after("new", 1)
    queue.retry("new")
    queue.done("held")  # a worker may still finish; nothing is queued again
    clock.advance(10)
    assert (len(queue), queue.delayed(), queue.failures("new")) == (0, 0, 0)
    with pytest.raises(QueueShutDown):
        queue.get_nowait()


def test_cancelled_getter_passes_its_key_on() -> None:
    async def scenario() -> None:
        queue = WorkQueue(FakeClock())
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await settle()
        queue.add("a")  # wakes the first getter ...
        first.cancel()  # ... which is cancelled before it runs
        await settle()
        assert first.cancelled()
        assert second.result() == "a"

    run(scenario())


# Clocks


def test_fake_clock_fires_timers_in_order_at_their_deadline() -> None:
    clock = FakeClock(start=100)
    fired: list[tuple[str, float]] = []

    def record(name: str) -> Callable[[], None]:
        return lambda: fired.append((name, clock.now()))

    clock.call_at(105, record("b"))
    clock.call_at(102, record("a"))
    clock.call_at(105, record("c"))
    clock.call_at(103, record("cancelled")).cancel()
    clock.advance(4)
    assert fired == [("a", 102)]
    assert clock.now() == 104
    clock.advance(1)
    assert fired == [("a", 102), ("b", 105), ("c", 105)]
    with pytest.raises(ValueError, match="advance"):
        clock.advance(-1)


class CountingClock(FakeClock):
    """Tracks the timers scheduled and neither fired nor cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.live: set[TrackedTimer] = set()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        def fire() -> None:
            self.live.discard(tracked)
            callback()

        tracked = TrackedTimer(self.live, super().call_at(when, fire))
        self.live.add(tracked)
        return tracked


class TrackedTimer:
    def __init__(self, live: set[TrackedTimer], inner: Timer) -> None:
        self.live = live
        self.inner = inner

    def cancel(self) -> None:
        self.live.discard(self)
        self.inner.cancel()


def test_queue_keeps_one_timer_however_many_keys_are_delayed() -> None:
    """Thousands of devices resyncing must not mean thousands of event-loop timers."""
    clock = CountingClock()
    queue = WorkQueue(clock)
    for i in range(100):
        queue.add_after(f"device-{i}", 200 - i)  # each deadline earlier than the last
        assert len(clock.live) == 1
    clock.advance(150)
    assert len(clock.live) == 1
    clock.advance(50)
    assert (len(clock.live), len(queue)) == (0, 100)


def test_sleep_on_a_fake_clock() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sleeper = asyncio.create_task(sleep(clock, 10))
        await settle()
        clock.advance(9.5)
        await settle()
        assert not sleeper.done()
        clock.advance(0.5)
        await settle()
        assert sleeper.done()
        await sleep(clock, 0)  # returns without the clock moving

    run(scenario())


def test_monotonic_clock_runs_due_timers_on_the_loop() -> None:
    async def scenario() -> None:
        clock = MonotonicClock()
        queue = WorkQueue(clock)
        getter = asyncio.create_task(queue.get())
        queue.add_after("a", 1e-6)  # a microsecond: the real loop's timer, barely a wait
        assert await asyncio.wait_for(getter, timeout=5) == "a"
        fired = asyncio.get_running_loop().create_future()
        clock.call_at(clock.now() - 1, lambda: fired.set_result(None))
        await asyncio.wait_for(fired, timeout=5)

    run(scenario())


# Workers


def test_run_workers_retries_with_backoff_then_forgets() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        queue = WorkQueue(clock)
        attempts: list[tuple[str, float]] = []
        errors: list[tuple[str, str]] = []
        active: set[str] = set()
        overlaps: list[str] = []

        async def reconcile(key: str) -> None:
            if key in active:
                overlaps.append(key)
            active.add(key)
            try:
                await asyncio.sleep(0)
                attempts.append((key, clock.now()))
                if key == "flaky" and sum(k == key for k, _ in attempts) <= 2:
                    raise RuntimeError(f"agent on {key} unreachable")
            finally:
                active.discard(key)

        def on_error(key: str, exc: Exception) -> None:
            errors.append((key, str(exc)))

        workers = asyncio.create_task(run_workers(queue, reconcile, 3, on_error=on_error))
        for key in ["a", "flaky", "b", "c"]:
            queue.add(key)
        await settle()
        assert sorted(attempts) == [("a", 0), ("b", 0), ("c", 0), ("flaky", 0)]
        assert queue.failures("flaky") == 1
        assert errors == [("flaky", "agent on flaky unreachable")]

        clock.advance(0.75)
        await settle()
        assert len(attempts) == 4
        clock.advance(0.25)  # first retry: 1 s after the failure
        await settle()
        assert attempts[-1] == ("flaky", 1.0)
        assert queue.failures("flaky") == 2

        clock.advance(1.75)
        await settle()
        assert len(attempts) == 5
        clock.advance(0.25)  # second retry: 2 s after the second failure
        await settle()
        assert attempts[-1] == ("flaky", 3.0)
        assert queue.failures("flaky") == 0
        assert len(errors) == 2
        assert overlaps == []
        assert (len(queue), queue.delayed()) == (0, 0)

        queue.shutdown()
        await asyncio.wait_for(workers, timeout=5)

    run(scenario())


def test_run_workers_needs_a_worker() -> None:
    async def reconcile(key: str) -> None:
        pass

    with pytest.raises(ValueError, match="worker"):
        run(run_workers(WorkQueue(FakeClock()), reconcile, 0, on_error=lambda k, e: None))


def test_failing_on_error_stops_the_workers() -> None:
    async def scenario() -> None:
        queue = WorkQueue(FakeClock())

        async def reconcile(key: str) -> None:
            raise RuntimeError("reconcile failed")

        def on_error(key: str, exc: Exception) -> None:
            raise LookupError("on_error failed")

        queue.add("a")
        with pytest.raises(ExceptionGroup) as caught:
            await asyncio.wait_for(run_workers(queue, reconcile, 2, on_error=on_error), 5)
        assert caught.group_contains(LookupError)
        assert queue.failures("a") == 1
        assert queue.get_nowait() is None  # released by done, waiting for its backoff

    run(scenario())


def test_a_burst_is_worked_in_batches_and_a_failed_batch_is_retried_whole() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        queue = WorkQueue(clock)
        batches: list[list[str]] = []
        failures: list[list[str]] = []

        async def reconcile(keys: list[str]) -> None:
            batches.append(keys)
            if len(batches) == 1:
                raise RuntimeError("the database went away")

        for key in "abcde":
            queue.add(key)
        workers = asyncio.create_task(
            run_batches(
                queue, reconcile, 1, batch=3, on_error=lambda keys, e: failures.append(keys)
            )
        )
        for _ in range(10):
            await asyncio.sleep(0)
        assert batches == [["a", "b", "c"], ["d", "e"]]  # what was ready, 3 at a time
        assert failures == [["a", "b", "c"]]
        assert [queue.failures(k) for k in "abcde"] == [1, 1, 1, 0, 0]
        clock.advance(1.5)  # their backoff: the failed batch comes back whole
        for _ in range(10):
            await asyncio.sleep(0)
        assert batches[2:] == [["a", "b", "c"]]
        queue.shutdown()
        await asyncio.wait_for(workers, 5)

    run(scenario())


# Properties

KEYS = st.sampled_from(["a", "b", "c", "d"])
WORKERS = st.sampled_from([0, 1, 2])


class QueueMachine(RuleBasedStateMachine):
    """Random add/get/done/retry/advance: no key held twice; every added key is processed."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.queue = WorkQueue(self.clock, base=1.0, cap=8.0)
        self.held: dict[int, str] = {}  # worker → key
        self.owed: set[str] = set()  # added since it was last handed out

    @rule(key=KEYS)
    def add(self, key: str) -> None:
        self.queue.add(key)
        self.owed.add(key)

    @rule(key=KEYS, delay=st.sampled_from([0, 0.5, 1, 3, 10]))
    def add_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)
        self.owed.add(key)

    @rule(worker=WORKERS)
    def get(self, worker: int) -> None:
        if worker in self.held:
            return
        key = self.queue.get_nowait()
        if key is not None:
            assert key not in self.held.values(), f"{key} handed to two workers"
            self.held[worker] = key
            self.owed.discard(key)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), outcome=st.sampled_from(["done", "success", "retry"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        worker = data.draw(st.sampled_from(sorted(self.held)))
        key = self.held.pop(worker)
        if outcome == "retry":
            failures = self.queue.failures(key)
            assert self.queue.retry(key) == min(2**failures, 8)
            self.owed.add(key)
        elif outcome == "success":
            self.queue.forget(key)
            assert self.queue.failures(key) == 0
        self.queue.done(key)

    @rule(seconds=st.sampled_from([0, 0.5, 1, 2, 5]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def counts_are_bounded(self) -> None:
        free = 4 - len(self.held)
        assert 0 <= len(self.queue) <= free
        assert 0 <= self.queue.delayed() <= 4

    def teardown(self) -> None:
        for key in self.held.values():
            self.queue.done(key)
        self.clock.advance(1_000)
        processed = drain(self.queue)
        assert len(processed) == len(set(processed))
        assert self.owed <= set(processed)
        assert (len(self.queue), self.queue.delayed()) == (0, 0)


QueueMachine.TestCase.settings = settings(
    max_examples=examples(150), stateful_step_count=40, deadline=None
)
TestQueueMachine = QueueMachine.TestCase


@settings(max_examples=examples(60), deadline=None)
@given(
    adds=st.lists(st.tuples(KEYS, st.integers(0, 3)), min_size=1, max_size=12),
    fails=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3)),
)
def test_workers_process_every_key_once_at_a_time(
    adds: list[tuple[str, int]], fails: dict[str, int]
) -> None:
    """Real async workers, adds interleaved with reconciles, failures retried with backoff."""

    async def scenario() -> None:
        clock = FakeClock()
        queue = WorkQueue(clock, cap=4.0)
        active: set[str] = set()
        overlaps: list[str] = []
        attempts: Counter[str] = Counter()
        succeeded: Counter[str] = Counter()

        async def reconcile(key: str) -> None:
            if key in active:
                overlaps.append(key)
            active.add(key)
            try:
                await asyncio.sleep(0)  # let the other workers interleave
                attempts[key] += 1
                if attempts[key] <= fails.get(key, 0):
                    raise RuntimeError(key)
                succeeded[key] += 1
            finally:
                active.discard(key)

        workers = asyncio.create_task(run_workers(queue, reconcile, 3, on_error=lambda k, e: None))
        for key, pause in adds:
            queue.add(key)
            for _ in range(pause):
                await asyncio.sleep(0)
        for _ in range(5):  # backoffs of 1, 2 and 4 s, each passed by one advance
            await settle()
            clock.advance(4)
        await settle()
        assert overlaps == []
        assert set(succeeded) == {key for key, _ in adds}
        assert all(queue.failures(key) == 0 for key, _ in adds)
        assert (len(queue), queue.delayed()) == (0, 0)
        queue.shutdown()
        await asyncio.wait_for(workers, timeout=5)

    run(scenario())
