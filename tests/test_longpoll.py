"""The long poll's waiter and uvicorn's lighter parts: the same semantics as what they replace."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from reconciler.server.connections import _Event, _Pipeline, lighter
from reconciler.server.longpoll import Changes


def test_a_waiter_is_woken_by_a_change_from_any_thread_and_else_by_its_timeout() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        changes = Changes()
        seen = []
        with changes.watch("pi-1") as wake:
            start = loop.time()
            await wake.wait(0.05)  # nothing changes: the timeout
            seen.append("timeout" if loop.time() - start >= 0.04 else "early")
            threading.Thread(target=changes.notify, args=(["pi-1"],)).start()
            await asyncio.wait_for(wake.wait(5), 2)
            seen.append("woken")
            await wake.wait(5)  # set, not cleared: at once
            seen.append("still set")
            wake.clear()
            changes.notify(["pi-2"])  # another device: no wake-up
            changes.notify(None)  # every device
            await asyncio.wait_for(wake.wait(5), 2)
            seen.append("everyone")
            wake.clear()
            pending = wake.wait(5)
        assert pending.done() and wake._timer is None  # leaving the block ends the wait
        assert changes._waiters == {}
        return seen

    assert asyncio.run(scenario()) == ["timeout", "woken", "still set", "everyone"]


def test_a_change_between_the_read_and_the_wait_is_not_missed() -> None:
    async def scenario() -> None:
        changes = Changes()
        with changes.watch("pi-1") as wake:
            changes.notify(["pi-1"])
            await asyncio.sleep(0)  # the notification lands before anyone waits
            await asyncio.wait_for(wake.wait(5), 1)

    asyncio.run(scenario())


def test_the_lighter_event_and_pipeline_behave_as_asyncio_and_deque() -> None:
    async def scenario() -> None:
        assert lighter(asyncio.Event()).is_set() is False
        done = asyncio.Event()
        done.set()
        event = lighter(done)
        assert isinstance(event, _Event) and event.is_set()
        event.clear()
        waiter = asyncio.ensure_future(event.wait())
        await asyncio.sleep(0)
        event.set()
        assert await asyncio.wait_for(waiter, 1) is True
        assert event._waiters == []

    asyncio.run(scenario())
    pipeline, reference = _Pipeline(), deque[int]()
    for item in (1, 2, 3):
        pipeline.appendleft(item)
        reference.appendleft(item)
    assert [pipeline.pop(), pipeline.pop()] == [reference.pop(), reference.pop()]
    assert bool(pipeline) == bool(reference) is True
