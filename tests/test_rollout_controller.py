"""Rollouts driven by the real controller on a real git repository and a real store (SQLite
and PostgreSQL): devices held back, moved wave by wave, halted, rolled back, resumed, and
carried on by a controller restarted mid-rollout."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import git
import msgspec
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reconciler.cli.app import app as cli
from reconciler.controller.controller import Controller
from reconciler.controller.rollouts import decode
from reconciler.controller.runner import Runner
from reconciler.controller.source import open_repo, resolve, tree_files
from reconciler.manifests.problems import Problem
from reconciler.server.app import create_app
from reconciler.store import Store
from reconciler.wire import DesiredDocument, ReleaseReport, StatusReport
from tests.support.repos import commit, write_tree

DEVICES = [f"dev-{i:02}" for i in range(12)]
CANARY = {"dev-03", "dev-07"}


def _release(version: str) -> str:
    return f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: web-{version.replace(".", "-")}}}
spec:
  application: web
  version: "{version}"
  containers:
  - {{name: server, image: "local/web:{version}"}}
"""


def _deployment(release: str, rollout: str) -> str:
    return f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: web}}
spec:
  application: web
  release: "{release}"
  selector: {{matchLabels: {{fleet: shop}}}}
  readiness: {{minReadySeconds: 1, progressDeadlineSeconds: 60}}
{rollout}"""


ROLLOUT = """\
  rollout:
    waves:
    - name: canary
      selector: {{matchLabels: {{ring: canary}}}}
    - name: half
      percent: 50
    - name: rest
    maxInFlight: 2
    maxFailures: {failures}
    onFailure: {on_failure}
    paused: {paused}
"""


def rollout(failures: int = 0, on_failure: str = "Halt", paused: str = "false") -> str:
    return ROLLOUT.format(failures=failures, on_failure=on_failure, paused=paused)


def _files(release: str = "1.0.0", spec: str = "") -> dict[str, str]:
    files = {
        "app.yaml": "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: web}\n",
        "releases/1.0.0.yaml": _release("1.0.0"),
        "releases/1.1.0.yaml": _release("1.1.0"),
        "releases/1.2.0.yaml": _release("1.2.0"),
        "deployment.yaml": _deployment(release, spec or rollout()),
    }
    for name in DEVICES:
        ring = "canary" if name in CANARY else "main"
        files[f"devices/{name}.yaml"] = (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Device\n"
            f"metadata: {{name: {name}, labels: {{fleet: shop, ring: {ring}}}}}\n"
            "spec: {systemModel: rpi4}\n"
        )
    return files


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def tick(self, seconds: float = 1.0) -> None:
        self.at += timedelta(seconds=seconds)


class Source:
    def __init__(self, path: Path) -> None:
        self.repo = open_repo(str(path))

    def fetch(self) -> str:
        return resolve(self.repo, "main")

    def files(self, sha: str) -> Iterable[tuple[str, bytes | Problem]]:
        return tree_files(self.repo, sha)


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    upstream = git.Repo.init(write_tree(tmp_path / "upstream", _files()), initial_branch="main")
    commit(upstream, "fleet at 1.0.0")
    return upstream


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


def _controller(repo: git.Repo, store: Store, clock: Clock) -> Controller:
    return Controller(
        Source(Path(repo.working_dir)), store, identities=[], fingerprint_key=b"k" * 32, now=clock
    )


def release_of(ctl: Controller, device: str) -> str:
    body = ctl.document(device)
    assert body is not None
    (deployment,) = msgspec.json.decode(body, type=DesiredDocument).deployments
    return deployment.release


def report(
    device: str, release: str, *, ready: bool = True, error: str | None = None
) -> StatusReport:
    found = ReleaseReport(
        application="web",
        release=release,
        deployment="web",
        running=True,
        complete=True,
        ready=ready,
        error=error,
    )
    return StatusReport(device=device, releases=[found])


def serve(ctl: Controller, clock: Clock, *, failing: frozenset[str] = frozenset()) -> list[str]:
    """Every device reports what its document names: Ready, or switched back and Degraded
    when it is among `failing`; the controller plans and steps. The devices that moved."""
    reports = []
    for device in DEVICES:
        release = release_of(ctl, device)
        if device in failing and release != "1.0.0":
            reports.append(report(device, "1.0.0", error="healthcheck failed: exit 1"))
        else:
            reports.append(report(device, release))
    ctl.ingest_many(reports)
    ctl.reconcile_many(DEVICES)
    moved = ctl.step_rollouts()
    clock.tick()
    return moved


def on(ctl: Controller, release: str) -> set[str]:
    return {d for d in DEVICES if release_of(ctl, d) == release}


def settle(ctl: Controller, clock: Clock, rounds: int = 20, **kwargs: frozenset[str]) -> None:
    for _ in range(rounds):
        serve(ctl, clock, **kwargs)
        ctl.step_rollouts(refresh=True)


def upgrade(repo: git.Repo, ctl: Controller, clock: Clock, release: str, spec: str = "") -> None:
    commit(repo, f"web {release}", {"deployment.yaml": _deployment(release, spec or rollout())})
    outcome = ctl.sync()
    assert outcome is not None and outcome.applied
    clock.tick()


@pytest.fixture
def fleet(repo: git.Repo, store: Store) -> tuple[Controller, Clock]:
    clock = Clock()
    ctl = _controller(repo, store, clock)
    assert ctl.sync() is not None
    serve(ctl, clock)
    assert on(ctl, "1.0.0") == set(DEVICES)
    return ctl, clock


def test_a_new_release_moves_wave_by_wave_never_more_than_max_in_flight(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    # the canary wave first, two at a time; nobody else yet
    assert on(ctl, "1.1.0") == CANARY
    waves = []
    for _ in range(12):
        serve(ctl, clock)
        waves.append(len(on(ctl, "1.1.0")))
    assert waves[-1] == len(DEVICES)
    # each round moves at most maxInFlight (2) devices
    assert all(b - a <= 2 for a, b in zip([2, *waves], waves, strict=False))
    kinds = [e.kind for e in store.events() if e.kind.startswith("rollout-")]
    assert kinds.count("rollout-wave-started") == 3 and kinds.count("rollout-wave-done") == 3
    assert kinds[-1] == "rollout-complete"
    ctl.step_rollouts(refresh=True)
    assert store.rollouts() == {}  # complete, every device moved: over


def test_failures_past_the_budget_halt_the_rollout_and_rollback_moves_them_back(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    settle(ctl, clock, failing=frozenset({"dev-03"}))
    (record,) = [decode(r) for r in store.rollouts().values()]
    assert record.state.phase == "Halted" and record.state.failed == {"dev-03"}
    assert "healthcheck failed" in record.reasons["dev-03"]
    assert on(ctl, "1.1.0") == {"dev-03", "dev-07"}  # in flight finished; nothing new moved
    halted = [e for e in store.events() if e.kind == "rollout-halted"]
    assert len(halted) == 1 and "dev-03" in halted[0].message

    # a commit that raises maxFailures resumes it
    upgrade(repo, ctl, clock, "1.1.0", rollout(failures=1))
    settle(ctl, clock, failing=frozenset({"dev-03"}))
    assert on(ctl, "1.1.0") == set(DEVICES)
    assert "rollout-resumed" in [e.kind for e in store.events()]


def test_rollback_gives_every_moved_device_the_old_release(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0", rollout(on_failure="Rollback"))
    settle(ctl, clock, failing=frozenset({"dev-07"}))
    assert on(ctl, "1.0.0") == set(DEVICES)
    (record,) = [decode(r) for r in store.rollouts().values()]
    assert record.state.phase == "RolledBack"


def test_pause_and_resume_by_commit(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    serve(ctl, clock)
    upgrade(repo, ctl, clock, "1.1.0", rollout(paused="true"))
    before = on(ctl, "1.1.0")
    settle(ctl, clock)
    assert on(ctl, "1.1.0") == before != set(DEVICES)
    upgrade(repo, ctl, clock, "1.1.0", rollout(paused="false"))
    settle(ctl, clock)
    assert on(ctl, "1.1.0") == set(DEVICES)
    kinds = [e.kind for e in store.events()]
    assert "rollout-paused" in kinds and "rollout-resumed" in kinds


def test_offline_devices_do_not_block_and_get_the_release_when_back(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    clock.tick(120)  # nobody has reported for three poll intervals: all offline
    online = [d for d in DEVICES if d != "dev-05"]
    for _ in range(15):
        ctl.ingest_many([report(d, release_of(ctl, d)) for d in online])
        ctl.reconcile_many(online)
        ctl.step_rollouts(refresh=True)
        clock.tick()
    assert on(ctl, "1.1.0") == set(online)  # every wave done without dev-05
    assert release_of(ctl, "dev-05") == "1.0.0"
    settle(ctl, clock)  # dev-05 is back
    assert on(ctl, "1.1.0") == set(DEVICES)


def test_a_restarted_controller_goes_on_where_it_was(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    for _ in range(3):
        serve(ctl, clock)
    moved = on(ctl, "1.1.0")
    assert CANARY < moved < set(DEVICES)
    again = _controller(repo, store, clock)
    again.resume()
    assert on(again, "1.1.0") == moved  # the same documents, not the whole fleet at once
    assert {d: again.document(d) for d in DEVICES} == {d: ctl.document(d) for d in DEVICES}
    settle(again, clock)
    assert on(again, "1.1.0") == set(DEVICES)


def test_a_superseding_commit_starts_from_where_each_device_is(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    serve(ctl, clock)
    middle = on(ctl, "1.1.0")
    upgrade(repo, ctl, clock, "1.2.0")
    # nothing jumps: those on 1.1.0 stay there, the others on 1.0.0, until moved to 1.2.0
    assert on(ctl, "1.1.0") | on(ctl, "1.2.0") >= middle
    assert on(ctl, "1.0.0") == set(DEVICES) - middle - on(ctl, "1.2.0")
    settle(ctl, clock)
    assert on(ctl, "1.2.0") == set(DEVICES)
    kinds = [e.message for e in store.events() if e.kind == "rollout-complete"]
    assert any("superseded" in m for m in kinds)


def test_operators_see_a_halted_rollout_in_the_cli_the_api_and_the_metrics(
    repo: git.Repo, store: Store, fleet: tuple[Controller, Clock]
) -> None:
    ctl, clock = fleet
    upgrade(repo, ctl, clock, "1.1.0")
    settle(ctl, clock, failing=frozenset({"dev-07"}))
    db = ["--db", store.url]

    shown = CliRunner().invoke(cli, ["rollout", "status", "web", *db, "-o", "json"])
    assert shown.exit_code == 0, shown.output
    (found,) = json.loads(shown.stdout)
    assert (found["from"], found["to"], found["state"], found["wave"]) == (
        "1.0.0",
        "1.1.0",
        "Halted",
        "canary",
    )
    assert found["devices"]["Failed"] == 1 and found["devices"]["Pending"] == 10
    assert found["failed"] == [{"device": "dev-07", "reason": "healthcheck failed: exit 1"}]
    text = CliRunner().invoke(cli, ["rollout", "status", *db])
    assert "rollout web: 1.0.0 -> 1.1.0 Halted wave canary" in text.stdout
    assert "failed dev-07: healthcheck failed: exit 1" in text.stdout
    status = CliRunner().invoke(cli, ["status", *db])
    assert "rollout web: 1.0.0 -> 1.1.0 Halted" in status.stdout
    missing = CliRunner().invoke(cli, ["rollout", "status", "nothing", *db])
    assert missing.exit_code == 1 and "no rollout in progress" in missing.output

    client = TestClient(create_app(Runner(ctl), webhook_secret=None, operator_token="op"))
    operator = {"Authorization": "Bearer op"}
    assert client.get("/v1/rollouts", headers=operator).json() == [found]
    metrics = client.get("/metrics", headers=operator).text
    assert 'hedgerow_rollout_devices{deployment="web",outcome="Failed"} 1.0' in metrics
    assert 'hedgerow_rollout_state{deployment="web",state="Halted"} 1.0' in metrics
    assert 'hedgerow_rollout_state{deployment="web",state="Progressing"} 0.0' in metrics
