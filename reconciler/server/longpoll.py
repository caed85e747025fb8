"""Long polls of desired documents: answered from memory, woken when a document may change.

A device holds `GET .../desired?wait=S` with its ETag; the request waits until its document
changes (a new revision touching it, pull credentials gained or lost) or the wait ends (304).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.responses import Response

from reconciler.core.document import etag
from reconciler.server.backend import Backend

MAX_WAIT = 60.0


class Changes:
    """Wakes the long polls of devices whose desired document may have changed.

    Notified from the controller's worker thread (a revision applied) or from the event loop (a
    report that changes a device's pull credentials). Each waiter has an asyncio.Event set
    through its own loop's `call_soon_threadsafe`, so any thread may notify.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, devices: Sequence[str] | None) -> None:
        """Wake the waiters of `devices`, or every waiter for None."""
        with self._lock:
            if devices is None:
                waiters = [w for group in self._waiters.values() for w in group]
            else:
                waiters = [w for device in devices for w in self._waiters.get(device, ())]
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
        for loop, event in waiters:
            by_loop.setdefault(loop, []).append(event)
        for loop, events in by_loop.items():  # one wake-up of each loop, not one per waiter
            with suppress(RuntimeError):  # that loop is closed: nobody waits on it any more
                loop.call_soon_threadsafe(_set_all, events)

    @contextmanager
    def watch(self, device: str) -> Iterator[asyncio.Event]:
        """An event set on each change of `device` while the block runs; enter it before
        reading the document, so that no change between the read and the wait is missed."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(device, set()).add(waiter)
        try:
            yield waiter[1]
        finally:
            with self._lock:
                group = self._waiters.get(device, set())
                group.discard(waiter)
                if not group:
                    self._waiters.pop(device, None)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


class Documents:
    """Each device's ETag, kept until its document key (revision, images reported) changes: an
    unchanged poll is then a comparison on the event loop, with no thread hop, no database
    read and no document built. Bodies are not kept: a 200 builds its body again (a join of
    parts the controller shares across devices), so memory does not grow with the fleet."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._tags: dict[str, tuple[Hashable, str]] = {}

    def tag(self, device: str) -> str | None:
        """The device's current ETag, when it is known without building anything."""
        key = self.backend.document_key(device)
        cached = self._tags.get(device)
        return cached[1] if cached is not None and key is not None and cached[0] == key else None

    async def get(self, device: str) -> tuple[bytes, str] | None:
        key = self.backend.document_key(device)
        if key is None:
            return None
        body = await self.backend.document(device)
        if body is None:
            return None
        tag = etag(body)
        self._tags[device] = (key, tag)
        return body, tag


async def long_poll(
    documents: Documents,
    changes: Changes,
    name: str,
    wait: float,
    if_none_match: str | None,
    recheck: Callable[[], Awaitable[None]],
) -> Response:
    """The device's document, or 304 after up to `wait` seconds. A poll that waited and is
    about to send a document calls `recheck` first (the token, read again from the store):
    a token revoked while the poll waited never receives a document, nor the pull
    credentials it may carry."""
    if wait <= 0:  # a plain conditional GET: no waiter to register
        return await _current(documents, name, if_none_match)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    waited = False
    with changes.watch(name) as changed:
        while True:
            response = await _current(documents, name, if_none_match)
            if response.status_code != 304:
                if waited:
                    await recheck()
                return response
            if deadline - loop.time() <= 0:
                return response
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), deadline - loop.time())
            waited = True
            changed.clear()  # before reading again: a change during the read wakes us anew


async def _current(documents: Documents, name: str, if_none_match: str | None) -> Response:
    """304 from the cached ETag alone when it still holds, else the document built."""
    tag = documents.tag(name)
    if tag is not None and matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": "no-store"})
    return answer(await documents.get(name), name, if_none_match)


def answer(found: tuple[bytes, str] | None, name: str, if_none_match: str | None) -> Response:
    """200 with the document, or 304 when the device holds it already."""
    if found is None:
        raise HTTPException(404, f"device {name!r} is not in the applied revision")
    body, tag = found
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def matches(if_none_match: str | None, tag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in if_none_match.split(","))


def parse_wait(query_string: bytes) -> float:
    """`?wait=S` of a raw query string: 0 without it, 422 unless 0 ≤ S ≤ MAX_WAIT."""
    if not query_string:
        return 0.0
    raw = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw[-1])
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise HTTPException(422, f"wait must be a number of seconds from 0 to {MAX_WAIT}")
    return wait
