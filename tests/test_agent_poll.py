"""The agent's loop around the engine: events, held releases, reports, debounce."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from agent.client import ControllerUnreachable, Fetched
from agent.errors import PullError
from agent.poll import Agent, Debounce, Journal
from agent.steps import EngineState
from reconciler.wire import DesiredDocument, StatusReport
from tests.support.agent import V1, V2, ModelEngine, doc, web

T = datetime(2026, 11, 26, tzinfo=UTC)


class FakeController:
    """Serves one document and records reports; `down` makes every call fail."""

    device = "pi-1"

    def __init__(self, document: DesiredDocument) -> None:
        self.document = document
        self.reports: list[StatusReport] = []
        self.down = False
        self.waits: list[float] = []

    def desired(self, etag: str | None, wait: float = 0) -> Fetched:
        self.waits.append(wait)
        if self.down:
            raise ControllerUnreachable("cannot reach the controller: ConnectError")
        if etag == self.document.revision:
            return Fetched(None, etag)
        return Fetched(self.document, self.document.revision)

    def report(self, report: StatusReport) -> int | None:
        if self.down:
            raise ControllerUnreachable("cannot reach the controller: ConnectError")
        self.reports.append(report)
        return max((e.seq for e in report.events), default=None)


def agent(tmp_path: Path, controller: FakeController, engine: ModelEngine) -> Agent:
    return Agent(controller, engine, tmp_path, interval=30, now=lambda: T, sleep=lambda s: None)  # type: ignore[arg-type]


def kinds(report: StatusReport) -> list[tuple[str, str]]:
    return [(e.kind, e.message) for e in report.events]


def test_a_start_is_announced_then_confirmed(tmp_path: Path) -> None:
    controller = FakeController(doc(web()))
    engine = ModelEngine(EngineState(images=frozenset({V1})), {})
    agent(tmp_path, controller, engine).step(wait=0)
    (report,) = controller.reports
    events = [e.kind for e in report.events]
    assert events.count("starting") == 2 and events.count("started") == 2
    assert events.index("starting") < events.index("started")
    assert [e.seq for e in report.events] == list(range(1, len(report.events) + 1))


def test_a_stuck_pull_is_one_error_event_not_one_per_pass(tmp_path: Path) -> None:
    controller = FakeController(doc(web()))
    engine = ModelEngine(EngineState(), {f"pull {V1}": PullError(f"pulling {V1}: denied")})
    running = agent(tmp_path, controller, engine)
    for _ in range(3):
        running.step(wait=0)
    errors = [e for r in controller.reports for e in r.events if e.kind == "error"]
    assert [e.message for e in errors] == [f"pulling {V1}: denied"]
    (release,) = controller.reports[-1].releases
    assert release.error == f"pulling {V1}: denied" and not release.running  # Degraded, says why


def test_a_release_that_exits_at_start_is_held_until_its_deployment_changes(
    tmp_path: Path,
) -> None:
    old = doc(web())
    controller = FakeController(old)
    engine = ModelEngine(
        EngineState(images=frozenset({V1, V2})),
        {},
        crash={"start web-lyon-1-1-0-server": "exited with code 3"},
    )
    running = agent(tmp_path, controller, engine)
    running.step(wait=0)
    controller.document = msgspec.structs.replace(doc(web("1.1.0", image=V2)), revision="r2")
    running.step(wait=0)  # switches to 1.1.0
    running.step(wait=0)  # finds it crashed: back to 1.0.0
    tries = engine.log.count("start web-lyon-1-1-0-server")
    running.step(wait=0)
    assert engine.log.count("start web-lyon-1-1-0-server") == tries  # held: not retried
    errors = {r.release: r.error for r in controller.reports[-1].releases}
    assert errors["1.0.0"] == "exited with code 3"


def test_the_long_poll_ends_when_started_containers_are_due_for_their_start_check(
    tmp_path: Path,
) -> None:
    controller = FakeController(doc(web()))
    engine = ModelEngine(EngineState(images=frozenset({V1})), {})
    running = agent(tmp_path, controller, engine)
    running.step(wait=30)  # starts the release
    running.step(wait=30)  # due at once: the grace is over in this model
    running.step(wait=30)  # nothing is watched any more, but readiness is due in 10 s
    assert controller.waits[:2] == [30, 0.0]
    assert 9 < controller.waits[2] <= 10.2  # minReadySeconds (10 by default), then judged


def test_the_controller_away_keeps_the_engine_converging_and_events_wait(tmp_path: Path) -> None:
    controller = FakeController(doc(web()))
    engine = ModelEngine(EngineState(images=frozenset({V1})), {})
    running = agent(tmp_path, controller, engine)
    running.step(wait=0)
    controller.down = True
    engine.state = EngineState(images=frozenset({V1}), networks=engine.state.networks)  # drift
    running.step(wait=0)
    assert running.failures == 1 and len(engine.state.containers) == 2  # repaired offline
    pending = list(running.journal.pending)
    assert pending and Journal.open(tmp_path).pending == pending  # kept on disk
    controller.down = False
    running.step(wait=0)
    assert [e.seq for e in controller.reports[-1].events] == [e.seq for e in pending]
    assert running.journal.pending == []


def test_debounce_answers_a_burst_once_per_period_and_loses_nothing() -> None:
    now = [0.0]
    debounce = Debounce(2.0, clock=lambda: now[0])
    assert not debounce.due()
    for _ in range(5):
        debounce.notify()
    assert debounce.due() and not debounce.due()
    now[0] = 1.0
    debounce.notify()
    assert not debounce.due()  # within the period: waits
    now[0] = 2.0
    assert debounce.due()  # answered when the period ends
    now[0] = 10.0
    assert not debounce.due()
