"""Readiness on the device: the pure judgement (tables), and the agent's loop over a model
engine — Ready only after minReadySeconds, a switch not Ready by its deadline switched back
and reported Degraded, and the switch record kept across a restart of the agent."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import readiness
from agent.poll import Agent
from agent.steps import ContainerState, EngineState, Step
from reconciler.wire import DesiredDocument, Readiness, StatusReport
from tests.support.agent import IMAGE, ModelEngine, doc, show, web

RULES = Readiness(min_ready_seconds=10, progress_deadline_seconds=60)


def box(state: str = "running", health: str | None = None, order: int = 0) -> ContainerState:
    return ContainerState(
        name=f"c{order}", application="web", release="1", container=f"c{order}",
        deployment="web", state=state, health=health, order=order,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("containers", "expected", "stuck"),
    [
        ([box(), box(order=1)], 2, None),
        ([box(health="healthy"), box(order=1)], 2, None),
        ([box(health="starting"), box(order=1)], 2, 0),
        ([box(), box(health="unhealthy", order=1)], 2, 1),
        ([box(), box("exited", order=1)], 2, 1),
        ([box("restarting"), box(order=1)], 2, 0),
        ([box()], 2, 0),  # one missing: not Ready
        ([], 1, None),  # nothing at all: the caller sees no container
    ],
)
def test_what_keeps_a_release_from_being_ready(
    containers: list[ContainerState], expected: int, stuck: int | None
) -> None:
    found = readiness.blocking(containers, expected)
    assert (found.order if found is not None else None) == stuck


@pytest.mark.parametrize(
    ("since", "switched", "now", "verdict"),
    [
        (100.0, None, 109.9, "Waiting"),
        (100.0, None, 110.0, "Ready"),
        (None, None, 1e9, "Waiting"),  # no switch: nowhere to go back to, never Failed
        (None, 100.0, 159.9, "Waiting"),
        (None, 100.0, 160.0, "Failed"),
        (150.0, 100.0, 160.0, "Ready"),  # Ready at the deadline wins
        (155.0, 100.0, 160.0, "Failed"),  # running, not yet long enough: too late
    ],
)
def test_the_verdict(since: float | None, switched: float | None, now: float, verdict: str) -> None:
    assert readiness.verdict(since, switched, RULES, now) == verdict


def test_since_restarts_at_each_break_and_the_next_look_is_the_nearest_change() -> None:
    assert readiness.ok_since(None, True, 5.0) == 5.0
    assert readiness.ok_since(5.0, True, 9.0) == 5.0
    assert readiness.ok_since(5.0, False, 9.0) is None
    assert readiness.next_look(5.0, None, RULES, 9.0) == 6.0
    assert readiness.next_look(None, 0.0, RULES, 9.0) == 51.0
    assert readiness.next_look(None, None, RULES, 9.0) is None


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ("Up 5 seconds (healthy)", "healthy"),
        ("Up 2 minutes (unhealthy)", "unhealthy"),
        ("Up 1 second (health: starting)", "starting"),
        ("Up 3 hours", None),
        ("Exited (0) 1 second ago", None),
    ],
)
def test_docker_health_in_a_listed_status(status: str, health: str | None) -> None:
    assert readiness.health_of(status) == health


# -- the agent's loop --------------------------------------------------------------------------


class Controller:
    device = "pi-1"

    def __init__(self, document: DesiredDocument) -> None:
        self.document = document
        self.reports: list[StatusReport] = []

    def desired(self, etag: str | None, wait: float) -> object:
        from agent.client import Fetched

        return Fetched(self.document, "e" + str(id(self.document)))

    def report(self, report: StatusReport) -> int | None:
        self.reports.append(report)
        return report.events[-1].seq if report.events else None


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 4, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def ready_of(report: StatusReport, release: str) -> tuple[bool | None, object]:
    (found,) = [r for r in report.releases if r.release == release]
    return found.ready, found.degraded


def make(tmp_path: Path, controller: Controller, engine: ModelEngine, clock: Clock) -> Agent:
    return Agent(controller, engine, tmp_path, interval=30, now=clock, sleep=lambda s: None)  # type: ignore[arg-type]


def ready(
    tmp_path: Path, engine: ModelEngine | None = None
) -> tuple[Clock, ModelEngine, Controller, Agent]:
    """An agent that has run web 1.0.0 for minReadySeconds: Ready, so a change is a switch."""
    clock = Clock()
    engine = engine or ModelEngine(EngineState(images=frozenset({IMAGE})), {})
    controller = Controller(doc(web()))
    agent = make(tmp_path, controller, engine, clock)
    agent.step(0)
    clock.advance(10)
    agent.step(0)
    return clock, engine, controller, agent


def unhealthy(engine: ModelEngine, release: str) -> None:
    engine.state = dataclasses.replace(
        engine.state,
        containers=tuple(
            dataclasses.replace(c, health="unhealthy") if c.release == release else c
            for c in engine.state.containers
        ),
    )


def test_ready_only_after_min_ready_seconds(tmp_path: Path) -> None:
    clock, engine = Clock(), ModelEngine(EngineState(images=frozenset({IMAGE})), {})
    controller = Controller(doc(web()))
    agent = make(tmp_path, controller, engine, clock)
    agent.step(0)
    assert ready_of(controller.reports[-1], "1.0.0") == (False, None)
    clock.advance(9)
    agent.step(0)
    assert ready_of(controller.reports[-1], "1.0.0") == (False, None)
    clock.advance(1)
    agent.step(0)
    assert ready_of(controller.reports[-1], "1.0.0") == (True, None)


def test_an_upgrade_not_ready_by_its_deadline_is_switched_back_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    clock, engine, controller, agent = ready(tmp_path)
    controller.document = doc(web("2.0.0", digest="d2"))
    agent.step(0)  # switched to 2.0.0, which never becomes healthy
    unhealthy(engine, "2.0.0")
    clock.advance(200)
    agent.step(0)
    assert ready_of(controller.reports[-1], "2.0.0") == (False, None)

    # the agent restarts: the switch is remembered, and judged again
    again = make(tmp_path, controller, engine, clock)
    assert set(again.switches) == {"web"}
    clock.advance(101)  # past the default deadline of 300 s
    again.step(0)
    running = {c.release for c in engine.state.containers if c.up}
    assert running == {"1.0.0"}
    found = next(r for r in controller.reports[-1].releases if r.release == "2.0.0")
    assert found.error is not None and "not Ready within 300 s" in found.error
    assert found.degraded is not None and found.degraded.container in {"db", "server"}
    assert "is unhealthy" in found.degraded.reason

    # held: neither a pass nor another restart tries 2.0.0 again
    clock.advance(60)
    make(tmp_path, controller, engine, clock).step(0)
    assert {c.release for c in engine.state.containers if c.up} == {"1.0.0"}


@pytest.mark.parametrize(
    ("base", "last", "counts", "expected"),
    [
        ({"a": 0}, {"a": 0}, {"a": 0}, (False, None, 0)),
        ({"a": 0}, {"a": 0}, {"a": 1}, (True, "a", 1)),
        ({"a": 0, "b": 2}, {"a": 1, "b": 2}, {"a": 1, "b": 4}, (True, "b", 3)),
        ({"a": 0}, {"a": 2}, {"a": 2}, (False, "a", 2)),  # none since the last look
        ({}, {}, {"a": 5}, (False, None, 0)),  # first seen now: its count is the base
    ],
)
def test_restarts_since_the_last_look_and_since_the_first(
    base: dict[str, int], last: dict[str, int], counts: dict[str, int], expected: object
) -> None:
    assert readiness.restarted(base, last, counts) == expected


class Restarting(ModelEngine):
    """A model engine whose containers of `release` restart once between two reads."""

    def __init__(self, release: str) -> None:
        super().__init__(EngineState(images=frozenset({IMAGE})), {})
        self.release, self.count = release, 0

    def restarts(self, names: object) -> dict[str, int]:
        mine = [c.name for c in self.state.containers if c.release == self.release]
        self.count += 1
        return {name: self.count for name in mine}


def test_a_release_that_keeps_restarting_is_switched_back_before_its_deadline(
    tmp_path: Path,
) -> None:
    engine = Restarting("2.0.0")
    clock, _, controller, agent = ready(tmp_path, engine)
    controller.document = doc(web("2.0.0", digest="d2"))
    for _ in range(4):  # each look finds a restart more: never Ready, and after 3, Failed
        clock.advance(5)
        agent.step(0)
    assert {c.release for c in engine.state.containers if c.up} == {"1.0.0"}
    found = next(r for r in controller.reports[-1].releases if r.release == "2.0.0")
    assert found.degraded is not None and "keeps restarting" in found.degraded.reason
    first = next(r for r in controller.reports[1].releases if r.release == "1.0.0")
    assert first.ready is True


def test_a_redeploy_not_ready_by_its_deadline_switches_back_to_what_it_set_aside(
    tmp_path: Path,
) -> None:
    clock, engine, controller, agent = ready(tmp_path)
    first = {c.id for c in engine.state.containers}
    controller.document = doc(web(redeploy="r2"))
    agent.step(0)  # the running containers set aside, new ones started
    assert {c.id for c in engine.state.containers if c.up}.isdisjoint(first)
    engine.state = dataclasses.replace(
        engine.state,
        containers=tuple(
            dataclasses.replace(c, health="unhealthy") if c.redeploy == "r2" else c
            for c in engine.state.containers
        ),
    )
    clock.advance(150)
    agent.step(0)
    assert {c.id for c in engine.state.containers} > first, "kept while judged"
    clock.advance(151)  # past the default deadline of 300 s
    agent.step(0)
    assert {c.id for c in engine.state.containers if c.up} == first, "the old ones run again"
    (found,) = controller.reports[-1].releases
    assert found.redeploy == "r2" and not found.running
    assert found.degraded is not None and "is unhealthy" in found.degraded.reason

    clock.advance(60)  # held: not tried again, by this agent or a restarted one
    make(tmp_path, controller, engine, clock).step(0)
    assert {c.id for c in engine.state.containers if c.up} == first


def test_a_redeploy_removes_what_it_set_aside_once_ready(tmp_path: Path) -> None:
    clock, engine, controller, agent = ready(tmp_path)
    controller.document = doc(web(redeploy="r2"))
    agent.step(0)
    clock.advance(5)
    agent.step(0)
    assert {c.redeploy for c in engine.state.containers} == {None, "r2"}
    assert ready_of(controller.reports[-1], "1.0.0") == (False, None)
    clock.advance(5)
    agent.step(0)  # Ready: the switch is over
    assert ready_of(controller.reports[-1], "1.0.0") == (True, None)
    agent.step(0)
    assert {c.redeploy for c in engine.state.containers} == {"r2"}
    assert all(c.up for c in engine.state.containers)


class Killed(BaseException):
    """The agent's process dying in the middle of a step."""


class DyingAt(ModelEngine):
    """A model engine whose agent dies as it runs the step shown as `line`."""

    def __init__(self, line: str) -> None:
        super().__init__(EngineState(images=frozenset({IMAGE})), {})
        self.line = line

    def run(self, step: Step) -> None:
        if show([step])[0] == self.line:
            raise Killed
        super().run(step)


@pytest.mark.parametrize(
    "line", ["stop web-lyon-1-0-0-server", "start web-lyon-2-0-0-db", "start web-lyon-2-0-0-server"]
)
def test_a_switch_is_on_disk_before_it_stops_anything(tmp_path: Path, line: str) -> None:
    clock, engine = Clock(), DyingAt(line)
    controller = Controller(doc(web()))
    make(tmp_path, controller, engine, clock).step(0)
    first = tuple(sorted(c.id for c in engine.state.containers))
    controller.document = doc(web("2.0.0", digest="d2"))
    with pytest.raises(Killed):
        make(tmp_path, controller, engine, clock).step(0)
    again = make(tmp_path, controller, engine, clock)
    assert tuple(sorted(again.switches["web"].up)) == first
