"""Long polls of desired documents: answered from memory, woken when a document may change.

A device holds `GET .../desired?wait=S` with its ETag; the request waits until its document
changes (a new revision touching it, pull credentials gained or lost) or the wait ends (304).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Sequence
from contextlib import suppress
from urllib.parse import parse_qs

import msgspec
from fastapi import HTTPException
from starlette.responses import Response

from reconciler import wire
from reconciler.core.document import etag
from reconciler.server.backend import Backend

MAX_WAIT = 60.0


class Changes:
    """Wakes the long polls of devices whose desired document may have changed.

    Notified from the controller's worker thread (a revision applied) or from the event loop (a
    report that changes a device's pull credentials). Each waiter is a `Wake` set through its
    own loop's `call_soon_threadsafe`, so any thread may notify.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Wake]] = {}  # lists: one a device, nearly always

    def notify(self, devices: Sequence[str] | None) -> None:
        """Wake the waiters of `devices`, or every waiter for None."""
        with self._lock:
            if devices is None:
                waiters = [w for group in self._waiters.values() for w in group]
            else:
                waiters = [w for device in devices for w in self._waiters.get(device, ())]
        by_loop: dict[asyncio.AbstractEventLoop, list[Wake]] = {}
        for wake in waiters:
            by_loop.setdefault(wake.loop, []).append(wake)
        for loop, wakes in by_loop.items():  # one wake-up of each loop, not one per waiter
            with suppress(RuntimeError):  # that loop is closed: nobody waits on it any more
                loop.call_soon_threadsafe(_set_all, wakes)

    def watch(self, device: str) -> Wake:
        """A `Wake` set on each change of `device` while its `with` block runs; enter it
        before reading the document, so that no change between the read and the wait is
        missed."""
        return Wake(self, device, asyncio.get_running_loop())

    def _add(self, wake: Wake) -> None:
        with self._lock:
            self._waiters.setdefault(wake.device, []).append(wake)

    def _discard(self, wake: Wake) -> None:
        with self._lock:
            group = self._waiters.get(wake.device, [])
            if wake in group:
                group.remove(wake)
            if not group:
                self._waiters.pop(wake.device, None)


class Wake:
    """One long poll's waiter, a flag and, while it waits, a future and one loop timer: every
    held poll keeps its waiter for up to a minute, and an asyncio.Event awaited through
    `wait_for` cost a deque, a second task, its context and a timer more each (about 2 KiB
    a poll). Set and cleared on its loop only."""

    __slots__ = ("_future", "_timer", "changes", "device", "is_set", "loop")

    def __init__(self, changes: Changes, device: str, loop: asyncio.AbstractEventLoop) -> None:
        self.changes, self.device, self.loop = changes, device, loop
        self.is_set = False
        self._future: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> Wake:
        self.changes._add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.changes._discard(self)
        self._settle()  # a waiter cancelled (the server stopping) leaves no timer behind

    def set(self) -> None:
        self.is_set = True
        self._settle()

    def clear(self) -> None:
        self.is_set = False

    def wait(self, timeout: float) -> asyncio.Future[None]:
        """Done when set, or once `timeout` seconds have passed; at once when set already.
        A future, not a coroutine: no frame of its own is held while the poll waits."""
        self._settle()
        future = self._future = self.loop.create_future()
        if self.is_set:
            future.set_result(None)
        else:
            self._timer = self.loop.call_later(timeout, self._settle)
        return future

    def _settle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._future is not None:
            if not self._future.done():
                self._future.set_result(None)
            self._future = None


def _set_all(wakes: list[Wake]) -> None:
    for wake in wakes:
        wake.set()


class Documents:
    """Each device's ETag, kept until its document key (revision, desired state, images
    reported) changes: an unchanged poll is then a comparison on the event loop, with no
    thread hop, no database read and no document built. Bodies are not kept: a 200 builds
    its body again (a join of parts the controller shares across devices), so memory does
    not grow with the fleet."""

    def __init__(self, backend: Backend, pending: Callable[[str], bool] | None = None) -> None:
        self.backend = backend
        self.pending = pending or (lambda device: False)
        self._tags: dict[str, tuple[Hashable, str]] = {}

    def tag(self, device: str) -> str | None:
        """The device's current ETag, when it is known without building anything."""
        key = self.backend.document_key(device)
        cached = self._tags.get(device)
        return cached[1] if cached is not None and key is not None and cached[0] == key else None

    async def get(self, device: str) -> tuple[bytes, str] | None:
        key = self.backend.document_key(device)
        if key is None:
            return self._pending(device)
        body = await self.backend.document(device)
        if body is None:
            return None
        tag = etag(body)
        self._tags[device] = (key, tag)
        return body, tag

    def _pending(self, device: str) -> tuple[bytes, str] | None:
        """A Pending device's document (enrolled, not admitted by a Device manifest): nothing
        to run, at the applied revision; None when it is not one, or nothing is applied."""
        revision = self.backend.revision()
        if revision is None or not self.pending(device):
            return None
        body = msgspec.json.encode(
            wire.DesiredDocument(device=device, revision=revision, deployments=[])
        )
        return body, etag(body)


async def long_poll(
    documents: Documents,
    changes: Changes,
    name: str,
    wait: float,
    if_none_match: bytes | None,
) -> tuple[Response, bool]:
    """The device's document, or 304 after up to `wait` seconds; and whether it waited.
    `if_none_match` is the header's raw value, decoded at each look (no copy held). A
    poll that waited must check its token again before it sends a document (see
    `device.DesiredRoute`)."""
    if wait <= 0:  # a plain conditional GET: no waiter to register
        return await _current(documents, name, if_none_match), False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    waited = False
    with changes.watch(name) as changed:
        while True:
            response = await _current(documents, name, if_none_match)
            if response.status_code != 304 or deadline - loop.time() <= 0:
                return response, waited
            del response  # a 304 is built again at the end: not held while waiting
            await changed.wait(deadline - loop.time())
            waited = True
            changed.clear()  # before reading again: a change during the read wakes us anew


async def _current(documents: Documents, name: str, raw: bytes | None) -> Response:
    """304 from the cached ETag alone when it still holds, else the document built."""
    if_none_match = None if raw is None else raw.decode("latin-1")
    tag = documents.tag(name)
    if tag is not None and matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": "no-store"})
    return answer(await documents.get(name), name, if_none_match)


def answer(found: tuple[bytes, str] | None, name: str, if_none_match: str | None) -> Response:
    """200 with the document, or 304 when the device holds it already."""
    if found is None:
        raise HTTPException(
            404, f"device {name!r} is not in the applied revision, nor enrolled and pending"
        )
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
