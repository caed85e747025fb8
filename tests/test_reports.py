"""Agents' status reports against the real app and store, on SQLite and on PostgreSQL: bad input
is a 4xx naming the field, never a 500; large reports never hold a commit back; and no event is
ever dropped silently (journal epochs, conflicting sequence numbers refused with 409).

The agent's side runs for real too: its journal on disk and its HTTP client, against the app
served by uvicorn; only the container engine is the model the agent's loop tests use.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import git
import httpx
import msgspec
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agent.client import ControllerClient
from agent.poll import Agent, Journal, report_images
from agent.steps import EngineState
from reconciler import wire
from reconciler.controller.controller import Controller
from reconciler.controller.runner import Runner
from reconciler.controller.source import open_repo, resolve, tree_files
from reconciler.core.reports import EARLIEST, LATEST
from reconciler.demo.daemons import free_port
from reconciler.manifests.problems import Problem
from reconciler.secrets import tokens
from reconciler.server.app import create_app
from reconciler.store import EventRecord, Store
from tests.support.agent import V1, ModelEngine, doc, web
from tests.support.repos import commit

OPERATOR = "hdr_operator-token-for-report-tests"
EPOCH, WIPED = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
AT = "2026-01-01T00:00:00Z"


class BranchSource:
    def __init__(self, path: Path) -> None:
        self.repo = open_repo(str(path))

    def fetch(self) -> str:
        return resolve(self.repo, "main")

    def files(self, sha: str) -> list[tuple[str, bytes | Problem]]:
        return list(tree_files(self.repo, sha))


@dataclass
class Env:
    repo: git.Repo
    store: Store
    controller: Controller
    runner: Runner
    app: FastAPI
    tokens: dict[str, str]
    url: str  # the database's

    def auth(self, device: str = "pi-1") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[device]}"}

    def agent_events(self, device: str = "pi-1") -> list[tuple[str | None, int | None, str]]:
        return [
            (e.agent_epoch, e.agent_seq, e.message)
            for e in all_events(self.store, device)
            if e.agent_seq is not None
        ]


@pytest.fixture
def env(upstream: git.Repo, database_url: str) -> Iterator[Env]:
    """The controller over BASE, its app, and tokens for pi-1 and pi-2, on each backend."""
    with Store.open(database_url) as store:
        controller = Controller(
            BranchSource(Path(upstream.working_dir)), store, identities=[], fingerprint_key=b"k"
        )
        runner = Runner(controller, interval=3600, resync=3600)
        issued = {}
        for device in ("pi-1", "pi-2"):
            issued[device] = tokens.issue()
            store.put_token(device, tokens.hash_token(issued[device]), datetime.now(UTC))
        app = create_app(runner, webhook_secret=None, operator_token=OPERATOR)
        yield Env(upstream, store, controller, runner, app, issued, database_url)


def all_events(store: Store, device: str | None = None) -> list[EventRecord]:
    found: list[EventRecord] = []
    while page := store.events(device=device, after_id=found[-1].id if found else None, limit=500):
        found += page
    return found


def event(seq: int, message: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": AT,
        "kind": "started",
        "message": f"event {seq}" if message is None else message,
        **fields,
    }


def report(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"device": "pi-1", "images": ["nginx:1.27"], "events": list(events), **fields}


def status(device: str = "pi-1") -> str:
    return f"/v1/devices/{device}/status"


# -- bad input is a 4xx naming the field, never a 500 -------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"device": "pi-1", "extra": ' + b"[" * depth + b"]" * depth + b"}"


REFUSED: list[tuple[str, Any, str]] = [
    ("seq of 2^63", report(event(2**63)), "$.events[0].seq"),
    ("seq beyond 64 bits", report(event(10**30)), "$.events[0].seq"),
    ("seq 0", report(event(0)), "$.events[0].seq"),
    ("time after 9999 in UTC", report(event(1, at="9999-12-31T23:59:59-14:00")), "$.events[0].at"),
    ("time before 1 in UTC", report(event(1, at="0001-01-01T00:00:00+14:00")), "$.events[0].at"),
    ("time not RFC 3339", report(event(1, at="2026-W01")), "$.events[0].at"),
    ("NUL in a message", report(event(1, "a\x00b")), "$.events[0].message"),
    ("NUL in an image", report(images=["nginx\x00"]), "$.images[0]"),
    ("message too long", report(event(1, "m" * (wire.MAX_TEXT + 1))), "$.events[0].message"),
    ("name too long", report(event(1, deployment="d" * 1025)), "$.events[0].deployment"),
    ("too many images", report(images=["i"] * (wire.MAX_IMAGES + 1)), "$.images"),
    ("too many events", report(*(event(n) for n in range(1, 502))), "$.events"),
    ("an epoch that is no id", report(event(1), epoch="../x"), "$.epoch"),
    ("JSON nested 100,000 deep", nested(100_000), "nested too deeply"),
]


@pytest.mark.parametrize(("case", "body", "named"), REFUSED, ids=[c for c, _, _ in REFUSED])
def test_bad_input_is_refused_with_422_naming_the_field_and_nothing_is_stored(
    env: Env, case: str, body: Any, named: str
) -> None:
    env.controller.sync()
    client = TestClient(env.app, raise_server_exceptions=False)
    if isinstance(body, bytes):
        response = client.put(status(), content=body, headers=env.auth())
    else:
        response = client.put(status(), json=body, headers=env.auth())
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]
    assert env.store.get_observed("pi-1") is None and env.agent_events() == []


def test_values_at_the_bounds_are_stored_and_read_back(env: Env) -> None:
    """The largest sequence number, the earliest and latest times (read back also by a
    PostgreSQL session a day's worth of time zones away from UTC), the longest message."""
    env.controller.sync()
    client = TestClient(env.app)
    earliest = "0001-01-02T09:00:00+09:00"
    latest = "9999-12-30T13:59:59.999999-10:00"
    edges = [
        event(wire.MAX_SEQ, "m" * wire.MAX_TEXT, at=earliest),
        event(1, "é" * wire.MAX_TEXT, at=latest),
        *(event(n, at="2026-06-01T12:00:00.123456789+14:00") for n in range(2, wire.MAX_EVENTS)),
    ]
    response = client.put(status(), json=report(*edges, epoch=EPOCH), headers=env.auth())
    assert response.status_code == 200 and response.json()["lastSeq"] == wire.MAX_SEQ
    urls = [env.url]
    if env.url.startswith("postgresql"):  # sessions in UTC+14 and UTC-12
        zones = ("Etc/GMT-14", "Etc/GMT+12")
        urls += [f"{env.url}?options={quote(f'-c timezone={zone}')}" for zone in zones]
    for url in urls:
        with Store.open(url) as store:
            stored = {e.agent_seq: e for e in all_events(store, "pi-1") if e.agent_seq}
        assert len(stored) == wire.MAX_EVENTS
        assert stored[wire.MAX_SEQ].at == EARLIEST and stored[1].at == LATEST
        assert stored[1].message == "é" * wire.MAX_TEXT
        assert stored[2].at == datetime(2026, 5, 31, 22, 0, 0, 123456, tzinfo=UTC)


def test_a_naive_or_impossible_event_time_is_refused_by_name(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    sent = report(event(1), event(2, at="2026-01-01T00:00:00"))
    naive = client.put(status(), json=sent, headers=env.auth())
    assert naive.status_code == 422
    assert (
        naive.json()["detail"].startswith("$.events[1].at: ")
        and "UTC offset" in naive.json()["detail"]
    )
    impossible = client.put(
        status(), json=report(event(1, at="2026-02-30T00:00:00Z")), headers=env.auth()
    )
    assert impossible.status_code == 422 and "$.events[0].at" in impossible.json()["detail"]
    assert env.store.get_observed("pi-1") is None and env.agent_events() == []


# -- reports never hold a commit back ------------------------------------------------------------


def run_with_runner(env: Env, body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """The controller's loops and the app on one event loop, as `hedgerow controller` runs."""

    async def main() -> None:
        task = asyncio.create_task(env.runner.run())
        try:
            await asyncio.wait_for(env.runner.synced.wait(), 20)
            transport = httpx.ASGITransport(app=env.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://hedgerow.test", timeout=120
            ) as client:
                await body(client)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


REPORTS = 20  # in flight at once, each of the most events a report may hold
LONG = "x" * 1_400  # each report some 0.8 MB: under the 1 MiB cap on a report's body


def test_a_commit_is_applied_promptly_while_large_reports_are_in_flight(env: Env) -> None:
    """Reports have their own worker: before, a commit waited behind every report queued."""
    total = REPORTS * wire.MAX_EVENTS

    outside = sa.create_engine(env.url)  # not the store's pool, which the workers use

    def stored() -> int:
        with outside.connect() as connection:
            query = sa.text("SELECT count(*) FROM events WHERE agent_seq IS NOT NULL")
            return connection.scalar(query) or 0

    async def body(client: httpx.AsyncClient) -> None:
        headers = env.auth()

        async def send(n: int) -> httpx.Response:
            first = n * wire.MAX_EVENTS + 1
            events = [event(seq, LONG) for seq in range(first, first + wire.MAX_EVENTS)]
            return await client.put(status(), json=report(*events, epoch=EPOCH), headers=headers)

        # Committed first (the runner polls hourly here), so only the wake below is timed and
        # the burst cannot be over before the commit is even written.
        sha = await asyncio.to_thread(commit, env.repo, "a third device", {"more.yaml": PI_3})
        sending = [asyncio.create_task(send(n)) for n in range(REPORTS)]
        while await asyncio.to_thread(stored) == 0:  # the first report is being stored
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        env.runner.wake()
        while env.runner.revision() != sha:
            assert time.perf_counter() - started < 30, "the commit was never applied"
            await asyncio.sleep(0.005)
        applied = time.perf_counter() - started
        stored_then = await asyncio.to_thread(stored)
        answers = await asyncio.gather(*sending)
        assert [a.status_code for a in answers] == [200] * REPORTS
        assert stored_then < total, "the burst was over before the commit: nothing proven"
        assert applied < 10, f"the commit waited {applied:.2f} s behind the reports"

    try:
        run_with_runner(env, body)
    finally:
        outside.dispose()
    assert len(env.agent_events()) == total


PI_3 = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Device
    metadata: {name: pi-3, labels: {site: lyon}}
    spec: {systemModel: rpi4}
    """


# -- no event is dropped silently ---------------------------------------------------------------


def test_a_number_reused_for_another_event_is_refused_with_409_and_a_retry_is_counted_once(
    env: Env,
) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    for epoch in (EPOCH, None):  # an agent with a journal epoch, and an older agent
        first = report(event(1), event(2), **({"epoch": epoch} if epoch else {}))
        answer = client.put(status(), json=first, headers=env.auth())
        assert answer.json() == {"accepted": True, "lastSeq": 2}
        retried = client.put(status(), json=first, headers=env.auth())
        assert retried.json() == {"accepted": True, "lastSeq": 2}

        other = {**first, "events": [event(2, "what a wiped journal numbers 2"), event(3)]}
        other["images"] = ["changed:1"]
        refused = client.put(status(), json=other, headers=env.auth())
        assert refused.status_code == 409
        assert "event 2 " in refused.json()["detail"]
        both = {**first, "events": [event(3), event(3, "another 3")]}
        twice = client.put(status(), json=both, headers=env.auth())
        assert twice.status_code == 409 and "$.events[1].seq" in twice.json()["detail"]

        same = {**first, "events": [event(3), event(3)]}  # one event, sent twice in a report
        assert client.put(status(), json=same, headers=env.auth()).json()["lastSeq"] == 3
    assert env.agent_events() == [
        (EPOCH, 1, "event 1"), (EPOCH, 2, "event 2"), (EPOCH, 3, "event 3"),
        (None, 1, "event 1"), (None, 2, "event 2"), (None, 3, "event 3"),
    ]  # fmt: skip
    stored = env.store.get_observed("pi-1")
    assert stored is not None and stored[0].images == ["nginx:1.27"]  # refused: not stored


def test_a_wiped_journal_is_a_new_epoch_recorded_as_a_journal_reset(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    before = client.put(status(), json=report(event(1), event(2), epoch=EPOCH), headers=env.auth())
    assert before.json()["lastSeq"] == 2
    wiped = report(event(1, "after the wipe"), epoch=WIPED)
    assert client.put(status(), json=wiped, headers=env.auth()).json() == {
        "accepted": True,
        "lastSeq": 1,  # of the new journal
    }
    old = client.put(status(), json=report(epoch=EPOCH), headers=env.auth())
    assert old.json()["lastSeq"] == 2
    assert env.agent_events() == [
        (EPOCH, 1, "event 1"), (EPOCH, 2, "event 2"), (WIPED, 1, "after the wipe")
    ]  # fmt: skip
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    shown = client.get("/v1/events", params={"device": "pi-1"}, headers=operator).json()
    kinds = [e["event"] for e in shown]
    assert kinds[-4:] == ["started", "started", "journal-reset", "started"]
    assert WIPED in shown[-2]["message"]


# -- the agent: bounded reports, a journal with an epoch ------------------------------------------


@contextmanager
def serving(env: Env) -> Iterator[str]:
    """The app and the controller's loops under uvicorn, on a thread, on a free port."""
    server = uvicorn.Server(
        uvicorn.Config(
            env.app, host="127.0.0.1", port=free_port(), log_level="warning", log_config=None
        )
    )

    async def main() -> None:
        loops = asyncio.create_task(env.runner.run())
        try:
            await server.serve()
        finally:
            loops.cancel()
            with suppress(asyncio.CancelledError):
                await loops

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)


def device_agent(env: Env, url: str, folder: Path) -> Agent:
    client = ControllerClient(url, "pi-1", env.tokens["pi-1"])
    engine = ModelEngine(EngineState(), {})
    return Agent(client, engine, folder, interval=30, sleep=lambda _: None)


def test_the_agent_sends_a_backlog_in_bounded_reports_and_starts_a_new_journal_when_wiped(
    env: Env, tmp_path: Path
) -> None:
    folder = tmp_path / "agent"
    backlog = 2 * wire.MAX_EVENTS + 100
    journal = Journal.open(folder)
    first = journal.epoch
    assert first is not None and Journal.open(folder).epoch == first  # kept on disk
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(1, backlog + 1):
        journal.add("error", f"pull {n}: " + "denied " * 30, "web-lyon", at)
    with serving(env) as url:
        agent = device_agent(env, url, folder)
        agent.report()  # more than one report may hold: the controller refuses more than 500
        assert agent.journal.pending == [] and Journal.open(folder).pending == []
        stored = env.agent_events()
        assert [(epoch, seq) for epoch, seq, _ in stored] == [
            (first, n) for n in range(1, backlog + 1)
        ]

        (folder / "events.json").unlink()  # the data folder lost: a new journal
        wiped = device_agent(env, url, folder)
        assert wiped.journal.epoch not in (None, first)
        copy = tmp_path / "copy.json"
        shutil.copy(folder / "events.json", copy)
        wiped.journal.add("started", "after the wipe", "web-lyon", at)
        wiped.report()
        # a copy of the journal restored: its next number, 1, names another event
        shutil.copy(copy, folder / "events.json")
        restored = device_agent(env, url, folder)
        assert restored.journal.epoch == wiped.journal.epoch
        restored.journal.add("stopped", "after the restore", "web-lyon", at)
        restored.report()  # 409: numbered again in a new journal, then stored
        assert restored.journal.pending == []

    epochs = [wiped.journal.epoch, restored.journal.epoch]
    assert len({first, *epochs}) == 3
    messages = [(epoch, seq, message) for epoch, seq, message in env.agent_events()[backlog:]]
    assert messages == [
        (epochs[0], 1, "after the wipe"),
        (epochs[1], 1, "after the restore"),
    ]
    resets = [e for e in all_events(env.store, "pi-1") if e.kind == "journal-reset"]
    assert [e.agent_epoch for e in resets] == epochs


def test_the_journal_keeps_its_epoch_and_bounds_what_it_sends(tmp_path: Path) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    journal = Journal.open(tmp_path)
    assert journal.epoch is not None and len(journal.epoch) == 32
    journal.add("error", "x\x00" * wire.MAX_TEXT, None, at)  # an engine's error, too long
    for n in range(wire.MAX_EVENTS + 10):
        journal.add("started", f"event {n}", None, at)
    batch = journal.batch()
    assert [e.seq for e in batch] == list(range(1, wire.MAX_EVENTS + 1))  # oldest first
    assert len(batch[0].message) == wire.MAX_TEXT and "\x00" not in batch[0].message
    big = Journal.open(tmp_path / "big")
    for n in range(wire.MAX_EVENTS):
        big.pending.append(wire.Event(seq=n + 1, at=AT, kind="error", message="é" * wire.MAX_TEXT))
    assert len(wire.StatusReport(device="d", events=big.batch()).events) < wire.MAX_EVENTS
    encoded = len(b"".join(msgspec.json.encode(e) for e in big.batch()))
    assert encoded <= wire.REPORT_EVENT_BYTES

    (tmp_path / "old").mkdir()  # a journal an older agent wrote: no epoch, unbounded messages
    (tmp_path / "old" / "events.json").write_text(
        '{"seq": 7, "pending": [{"seq": 7, "at": "2026-01-01T00:00:00+00:00", "kind": "error",'
        f' "message": "{"y" * (wire.MAX_TEXT + 5)}"}}]}}'
    )
    old = Journal.open(tmp_path / "old")
    assert old.epoch is None and old.seq == 7 and len(old.pending[0].message) == wire.MAX_TEXT
    old.restart()
    assert old.epoch is not None and [e.seq for e in old.pending] == [1] and old.seq == 1
    assert Journal.open(tmp_path / "old").epoch == old.epoch

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "events.json").write_text("{")
    assert Journal.open(tmp_path / "broken").epoch not in (None, old.epoch)


def test_the_agent_reports_the_images_its_containers_use_first_within_the_bound() -> None:
    """An engine may hold more images than a report takes: the controller must still see the
    ones the device runs, or it would keep sending their pull credentials."""
    others = [f"cache/layer:{n:05}" for n in range(wire.MAX_IMAGES + 50)]
    sent = report_images(doc(web(image=V1)), sorted([*others, V1]))
    assert len(sent) == wire.MAX_IMAGES and sent[0] == V1 and sent[1:] == others[:-51]
