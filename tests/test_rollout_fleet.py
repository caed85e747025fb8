"""Rollouts end to end: a real `hedgerow controller` process and 200 simulated devices that
speak the real wire protocol (long polls with ETags, status reports as agents send them: Ready,
switched back and Degraded, or nothing at all), on SQLite and on PostgreSQL.

One story per database, in the order an operator lives it: a release that fails on 5% of the
fleet halts at its budget; a larger budget resumes it; offline devices never block it and get
the release when back; pause and resume by commit; a controller killed mid-rollout goes on
where it was; a superseding commit starts from where each device is; and Rollback."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import git
import pytest

from bench.fleet import Controller, issue_tokens
from reconciler.core.rollout_status import decoded
from reconciler.store import Store
from tests.support.repos import commit, write_tree
from tests.support.simulator import Fleet, simulated

pytestmark = pytest.mark.e2e

DEVICES = [f"sim-{i:03}" for i in range(200)]
CANARY = DEVICES[:10]


def _spread(devices: list[str], salt: str, count: int) -> list[str]:
    return sorted(devices, key=lambda d: hashlib.sha256(f"{salt}{d}".encode()).digest())[:count]


FAILING = _spread(DEVICES[10:], "failing", 16)  # 8%: more than a 5% budget
OFFLINE = _spread([d for d in DEVICES[10:] if d not in FAILING], "offline", 6)


def release(version: str) -> str:
    return f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: shop-{version.replace(".", "-")}}}
spec:
  application: shop
  version: "{version}"
  containers:
  - {{name: server, image: "local/shop:{version}"}}
"""


def deployment(version: str, **rollout: str) -> str:
    fields = {"maxInFlight": "10%", "maxFailures": "5%", "onFailure": "Halt", "paused": "false"}
    fields.update(rollout)
    body = "".join(f"    {key}: {value}\n" for key, value in fields.items())
    return f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: shop}}
spec:
  application: shop
  release: "{version}"
  selector: {{matchLabels: {{fleet: shops}}}}
  rollout:
    waves:
    - {{name: canary, selector: {{matchLabels: {{ring: canary}}}}}}
    - {{name: early, percent: 30}}
    - {{name: rest}}
{body}"""


def files(version: str, **rollout: str) -> dict[str, str]:
    found = {
        "app.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: shop}\n"
        ),
        "deployment.yaml": deployment(version, **rollout),
    }
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        found[f"releases/{v}.yaml"] = release(v)
    devices = [
        f"apiVersion: hedgerow.dev/v1alpha1\nkind: Device\nmetadata:\n  name: {d}\n"
        f"  labels: {{fleet: shops, ring: {'canary' if d in CANARY else 'main'}}}\n"
        "spec: {systemModel: rpi4}\n"
        for d in DEVICES
    ]
    found["devices.yaml"] = "---\n".join(devices)
    return found


class Story:
    def __init__(self, root: Path, db: str, fleet: Fleet, controller: Controller) -> None:
        self.root, self.db, self.fleet, self.controller = root, db, fleet, controller
        self.repo = git.Repo(root / "repo")

    def push(self, version: str, **rollout: str) -> None:
        sha = commit(
            self.repo, f"shop {version}", {"deployment.yaml": deployment(version, **rollout)}
        )
        self.controller.hook(sha)

    def record(self) -> dict[str, object] | None:
        with Store.open(self.db) as store:
            found = decoded(store.rollouts())
        if not found:
            return None
        (one,) = found
        return {
            "phase": one.state.phase,
            "moved": set(one.state.moved),
            "failed": set(one.state.failed),
            "to": one.target.release,
            "reasons": dict(one.reasons),
        }

    def on(self, version: str) -> set[str]:
        return {d for d, found in self.fleet.running().items() if found.get("shop") == version}

    def wait(self, check: Callable[[], bool], what: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-4000:] for p in self.root.glob("*.log"))
                pytest.fail(f"not within {seconds} s: {what}\n{self.record()}\n{logs}")
            time.sleep(0.3)


@pytest.fixture
def story(tmp_path: Path, database_url: str, git_identity: None) -> Iterator[Story]:
    repo = git.Repo.init(write_tree(tmp_path / "repo", files("1.0.0")), initial_branch="main")
    commit(repo, "shop 1.0.0")
    controller = Controller(tmp_path / "repo", tmp_path, database_url)
    controller.command += ["--offline-after", "6"]
    issued = issue_tokens(database_url, DEVICES)
    behaviours = {d: "failing" for d in FAILING} | {d: "offline" for d in OFFLINE}
    controller.start()
    try:
        with simulated(
            controller.url, list(issued.items()), processes=1, wait=2, behaviours=behaviours
        ) as fleet:
            fleet.hold()
            told = Story(tmp_path, database_url, fleet, controller)
            online = set(DEVICES) - set(OFFLINE)
            told.wait(lambda: told.on("1.0.0") == online, "every online device runs 1.0.0")
            yield told
    finally:
        controller.stop()


def test_a_rollout_on_a_simulated_fleet(story: Story) -> None:
    ready = set(DEVICES) - set(FAILING) - set(OFFLINE)

    # 1. 8% of the fleet fails 1.1.0, with a budget of 5% (10 devices): it halts, and once
    # halted no further device moves
    story.push("1.1.0")
    story.wait(lambda: (story.record() or {}).get("phase") == "Halted", "the rollout halts")
    halted = story.record()
    assert halted is not None
    assert len(halted["failed"]) > 10  # type: ignore[arg-type]
    assert halted["failed"] <= set(FAILING)  # type: ignore[operator]
    assert "unhealthy" in next(iter(halted["reasons"].values()))  # type: ignore[attr-defined]
    assert len(halted["moved"]) < len(DEVICES) - len(OFFLINE)  # type: ignore[arg-type]
    time.sleep(4)  # the devices in flight finish; none is moved
    later = story.record()
    assert later is not None and later["moved"] == halted["moved"]
    assert story.on("1.1.0") <= halted["moved"]  # type: ignore[operator]

    # 2. a commit that raises the budget resumes it; offline devices do not block it
    story.push("1.1.0", maxFailures="10%")
    story.wait(lambda: story.on("1.1.0") == ready, "every ready device runs 1.1.0")
    story.wait(lambda: (story.record() or {}).get("phase") == "Complete", "the rollout completes")
    assert story.on("1.0.0") == set(FAILING)  # switched back
    story.fleet.behave(dict.fromkeys(OFFLINE, "ready"))  # back: they get the wave's release
    story.wait(lambda: story.on("1.1.0") == ready | set(OFFLINE), "offline devices catch up")
    ready |= set(OFFLINE)

    # 3. a new release, paused: nothing moves; unpaused, it moves
    story.push("1.2.0", paused="true", maxFailures="100%", maxInFlight="5")
    story.wait(lambda: (story.record() or {}).get("to") == "1.2.0", "the 1.2.0 rollout starts")
    time.sleep(3)
    assert story.on("1.2.0") == set()
    story.push("1.2.0", paused="false", maxFailures="100%", maxInFlight="5")
    story.wait(lambda: len(story.on("1.2.0")) >= 5, "the first devices run 1.2.0")

    # 4. the controller killed mid-rollout goes on where it was: nothing moves back
    story.controller.process.kill()  # type: ignore[union-attr]
    story.controller.process.wait(10)  # type: ignore[union-attr]
    before = story.record()
    assert before is not None and before["phase"] == "Progressing"
    assert before["moved"] != ready  # mid-rollout
    story.controller.start()
    story.wait(lambda: story.on("1.2.0") == ready, "every ready device runs 1.2.0")
    after = story.record()
    assert after is None or before["moved"] <= after["moved"]  # type: ignore[operator]

    # 5. with onFailure Rollback and no budget, a failure sends every moved device back
    story.push("1.3.0", maxFailures="0", onFailure="Rollback", maxInFlight="5")
    story.wait(
        lambda: (story.record() or {}).get("phase") == "RolledBack", "the rollout rolls back"
    )
    story.wait(lambda: story.on("1.2.0") == ready, "every moved device back on 1.2.0")
    assert story.on("1.3.0") == set()
    # no request refused: while the controller was down or starting, connections were
    # refused and polls answered 503 (retry), and that is all
    refused = [
        e for e in story.fleet.errors() if not e.endswith(("Error", "connection failed", "503"))
    ]
    assert refused == []
