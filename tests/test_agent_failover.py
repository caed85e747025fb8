"""The agent with several controller URLs, against real HTTP replicas on loopback sharing one
store: it passes over a replica that is down or failing at once, carries on with another when
the one it long-polls dies, sends a report that failed on one to the next with the same
numbers, keeps its ETag, and takes a 4xx as an answer. The engine is the model of the plan
tests; the HTTP, the client and the loop are the agent's own. Last, the command line that takes
the URLs."""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from typer.testing import CliRunner

from agent.client import ControllerClient, ControllerUnreachable, ReportConflict
from agent.main import controllers, main, parser
from agent.poll import Agent
from agent.steps import EngineState
from reconciler.cli.app import app
from reconciler.wire import StatusReport
from tests.support.agent import V1, ModelEngine, doc, web
from tests.support.replicas import Replica, closed_port_url, replicas

T = datetime(2026, 11, 26, tzinfo=UTC)
TOKEN = "hdr_agent-failover-test-token"
SWITCH = "controller unreachable, trying the next"


@dataclass
class Rig:
    a: Replica
    b: Replica
    client: ControllerClient
    agent: Agent
    engine: ModelEngine
    sleeps: list[float]
    logs: list[MutableMapping[str, Any]]

    def settle(self) -> None:
        """A step, then more until no started container is due for its check: the next poll
        is a long one."""
        self.agent.step(wait=0)
        while self.engine.next_check() is not None:
            self.agent.step(wait=0)

    def switches(self) -> list[tuple[str, str]]:
        return [(e["from"], e["to"]) for e in self.logs if e["event"] == SWITCH]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with replicas(doc(web())) as (a, b), structlog.testing.capture_logs() as logs:
        client = ControllerClient([a.url, b.url], "pi-1", TOKEN)
        engine = ModelEngine(EngineState(images=frozenset({V1})), {})
        sleeps: list[float] = []
        agent = Agent(client, engine, tmp_path, interval=30, now=lambda: T, sleep=sleeps.append)
        try:
            yield Rig(a, b, client, agent, engine, sleeps, logs)
        finally:
            client.close()
        assert TOKEN not in repr(logs)  # the token is never logged, a switch's line neither


@pytest.mark.parametrize("failure", ["down", "503"])
def test_a_replica_down_or_failing_is_passed_over_at_once(rig: Rig, failure: str) -> None:
    if failure == "down":
        rig.a.die()
    else:
        rig.a.status = 503
    rig.agent.step(wait=0)
    assert rig.agent.desired == doc(web()) and len(rig.engine.state.containers) == 2
    assert rig.sleeps == [] and rig.agent.failures == 0  # no back-off for the first switch
    assert [r.method for r in rig.b.seen] == ["GET", "PUT"]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in rig.b.seen)
    assert rig.switches() == [(rig.a.url, rig.b.url)]  # one line, naming both
    seen_on_a = len(rig.a.seen)
    rig.settle()
    rig.agent.step(wait=30)  # it sticks to B, with the ETag it got there
    assert len(rig.a.seen) == seen_on_a and rig.client.current == rig.b.url
    assert rig.b.requests("GET")[-1].if_none_match == '"r1"'
    assert rig.switches() == [(rig.a.url, rig.b.url)]


def test_the_replica_that_dies_in_a_long_poll_is_left_for_another_with_the_same_etag(
    rig: Rig,
) -> None:
    rig.settle()  # document and reports from A
    assert rig.b.seen == [] and rig.a.requests("PUT")
    rig.a.hold = 30.0  # the next long poll waits there until A dies
    rig.a.holding.clear()
    polling = threading.Thread(target=rig.agent.step, kwargs={"wait": 30})
    polling.start()
    assert rig.a.holding.wait(5)
    rig.a.die()
    polling.join(10)
    assert not polling.is_alive()
    assert rig.sleeps == [] and rig.agent.failures == 0
    (poll,) = rig.b.requests("GET")
    assert poll.if_none_match == '"r1"' and "wait=" in poll.path  # 304 there: nothing new
    assert rig.b.requests("PUT") and rig.switches() == [(rig.a.url, rig.b.url)]
    rig.b.store.document = msgspec.structs.replace(doc(web("1.1.0")), revision="r2")
    rig.agent.step(wait=30)
    assert rig.agent.desired is not None and rig.agent.desired.revision == "r2"
    assert rig.agent.etag == '"r2"'


@pytest.mark.parametrize("failure", ["503", "answer lost"])
def test_a_report_that_failed_on_one_replica_is_sent_to_the_next_and_counted_once(
    rig: Rig, failure: str
) -> None:
    rig.agent.fetch(0)  # the document from A, then A fails its reports
    if failure == "503":
        rig.a.status = 503
    else:
        rig.a.lose_answers = True  # A stores the report, and the answer never comes back
    assert rig.agent.react()
    (on_a,) = rig.a.requests("PUT")
    (on_b,) = rig.b.requests("PUT")
    assert on_a.body is not None and on_b.body is not None
    assert on_b.body["events"] == on_a.body["events"] and on_b.body["epoch"] == on_a.body["epoch"]
    sent = [e["seq"] for e in on_a.body["events"]]
    assert sent == list(range(1, len(sent) + 1)) and len(sent) >= 4
    assert sorted(seq for _, seq in rig.a.store.events) == sent  # each once, none lost
    assert rig.agent.journal.pending == [] and rig.sleeps == []


def test_a_4xx_is_an_answer_not_a_reason_to_switch(rig: Rig) -> None:
    for status in (401, 403, 404):
        rig.a.status = status
        rig.agent.step(wait=0)
    assert rig.b.seen == [] and rig.client.current == rig.a.url and rig.switches() == []
    assert len(rig.sleeps) == 3 and rig.agent.failures == 3  # backed off, as with one URL
    rig.a.status = 409
    with pytest.raises(ReportConflict):  # the loop numbers its events in a new journal
        rig.client.report(StatusReport(device="pi-1"))
    rig.a.status = 422
    with pytest.raises(ControllerUnreachable) as refused:
        rig.client.report(StatusReport(device="pi-1"))
    assert refused.value.status == 422 and not refused.value.elsewhere
    assert rig.b.seen == [] and rig.switches() == []


def test_every_replica_failing_is_one_round_then_a_back_off(rig: Rig) -> None:
    rig.a.status = rig.b.status = 503
    rig.agent.step(wait=0)
    assert (len(rig.a.seen), len(rig.b.seen)) == (1, 1) and len(rig.sleeps) == 1
    rig.agent.step(wait=0)
    assert (len(rig.a.seen), len(rig.b.seen)) == (2, 2) and len(rig.sleeps) == 2
    assert rig.agent.failures == 2
    rig.b.status = None
    rig.agent.step(wait=0)  # A first (the round goes on), then B answers
    assert rig.client.current == rig.b.url and rig.agent.failures == 0 and len(rig.sleeps) == 2


def test_a_single_url_behaves_as_before(tmp_path: Path) -> None:
    down = closed_port_url()
    client = ControllerClient(down, "pi-1", TOKEN)
    engine = ModelEngine(EngineState(images=frozenset({V1})), {})
    sleeps: list[float] = []
    agent = Agent(client, engine, tmp_path, interval=30, now=lambda: T, sleep=sleeps.append)
    try:
        with structlog.testing.capture_logs() as logs:
            agent.step(wait=0)
            agent.step(wait=0)
    finally:
        client.close()
    assert len(sleeps) == 2 and agent.failures == 2 and client.current == down
    assert not [e for e in logs if e["event"] == SWITCH]


# -- the command line ----------------------------------------------------------------------------
REQUIRED = ["--device", "pi-1", "--token-file", "t"]


def test_controller_urls_are_comma_separated_or_repeated_and_one_is_as_before() -> None:
    one = parser().parse_args(["--controller", "https://c:8080/", *REQUIRED])
    assert controllers(one.controller) == ["https://c:8080"]
    several = parser().parse_args(
        ["--controller", "https://a:8080,https://b:8080", "--controller", "https://c", *REQUIRED]
    )
    assert controllers(several.controller) == ["https://a:8080", "https://b:8080", "https://c"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["https://a:8080,controller:8080"], "'controller:8080' is not an http:// or https://"),
        (["https://a:8080,"], "an empty controller URL"),
        (["https://a:8080", "https://a:8080/"], "'https://a:8080' is listed twice"),
        (["https://device:s3cret@a:8080"], "'https://…@a:8080' holds credentials"),
    ],
)
def test_a_bad_controller_url_is_a_usage_error_naming_it(
    values: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = [item for value in values for item in ("--controller", value)]
    with pytest.raises(SystemExit) as exited:
        main([*options, *REQUIRED])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and named in error
    assert "Traceback" not in error and "s3cret" not in error
    token = tmp_path / "token"
    token.write_text(TOKEN)
    result = CliRunner().invoke(
        app, ["agent", *options, "--device", "pi-1", "--token-file", str(token)]
    )
    assert result.exit_code == 2 and named in result.stderr
    assert "Traceback" not in result.output and "s3cret" not in result.output
