"""Replicas: three real `hedgerow controller` processes on one real PostgreSQL database, and a
simulated fleet spread over them that fails over as agents do.

Each scenario breaks something while a commit is on its way: the leader killed with SIGKILL
mid-apply, a follower killed during a fan-out, PostgreSQL restarted, a commit pushed while the
leader is gone. In each, every device's document ends at the right revision, every commit is
applied exactly once, and every event the devices made is stored exactly once.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import git
import httpx
import pytest
import sqlalchemy as sa

from reconciler.demo.daemons import free_port
from reconciler.secrets import tokens
from reconciler.server.webhook import sign
from reconciler.store import Store
from tests.support.postgres import PostgresServer, start_server
from tests.support.repos import commit, write_tree
from tests.support.simulator import Fleet, simulated

pytestmark = pytest.mark.e2e  # controller processes, and a PostgreSQL server of their own

DEVICES = 90
SECRET = b"replicas-webhook-secret"
FAILOVER = 15.0  # seconds: the issue's bound for another replica to lead
APPLIED_EVENTS = sa.text(
    "SELECT revision, count(*) FROM events WHERE kind = 'applied' GROUP BY revision"
)
DEVICE_EVENTS = sa.text(
    "SELECT device, agent_seq, count(*) FROM events WHERE agent_seq IS NOT NULL "
    "GROUP BY device, agent_seq"
)


def manifests(versions: list[str]) -> dict[str, str]:
    """An application with a release per version, DEVICES devices, and one deployment by
    label selector at the last version: a new version changes every device's document."""
    files = {
        "app.yaml": "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: web}\n",
        "network.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Network\nmetadata: {name: front}\n"
        ),
        "devices.yaml": "---\n".join(
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Device\n"
            f"metadata: {{name: dev-{n}, labels: {{fleet: all}}}}\nspec: {{systemModel: rpi4}}\n"
            for n in range(DEVICES)
        ),
        "deployment.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Deployment\nmetadata: {name: web-all}\n"
            f'spec: {{application: web, release: "{versions[-1]}", '
            "selector: {matchLabels: {fleet: all}}}\n"
        ),
    }
    for version in versions:
        files[f"releases/{version}.yaml"] = (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Release\n"
            f"metadata: {{name: web-{version.replace('.', '-')}}}\n"
            f'spec: {{application: web, version: "{version}", containers: '
            f"[{{name: server, image: local/app:{version}, networks: [front]}}]}}\n"
        )
    return files


@dataclass
class Replica:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


class Replicas:
    """Three controller processes on one database, each with its own data folder and port."""

    def __init__(self, root: Path, db: str, count: int = 3) -> None:
        self.root, self.db = root, db
        self.repo = git.Repo.init(
            write_tree(root / "repo", manifests(["1.0.0"])), initial_branch="main"
        )
        self.repo.git.add(A=True)
        self.repo.git.commit(m="1.0.0")
        self.versions = ["1.0.0"]
        (root / "secret").write_bytes(SECRET)
        self.ports = [free_port() for _ in range(count)]
        self.replicas: list[Replica | None] = [None] * count
        self.starts = 0

    def start(self, index: int) -> None:
        self.starts += 1
        port = self.ports[index]
        log = self.root / f"replica-{index}-{self.starts}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "controller",
                 "--repo", str(self.root / "repo"), "--db", self.db,
                 "--data-dir", str(self.root / f"data-{index}"),
                 "--listen", f"127.0.0.1:{port}", "--interval", "3600", "--log-format", "json",
                 "--webhook-secret-file", str(self.root / "secret")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        self.replicas[index] = Replica(f"http://127.0.0.1:{port}", log, process)

    @property
    def urls(self) -> str:
        return ",".join(f"http://127.0.0.1:{port}" for port in self.ports)

    def alive(self) -> list[int]:
        return [i for i, r in enumerate(self.replicas) if r and r.process.poll() is None]

    def health(self, index: int) -> dict[str, str] | None:
        replica = self.replicas[index]
        assert replica is not None
        try:
            found: dict[str, str] = httpx.get(f"{replica.url}/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None
        return found

    def leader(self) -> int | None:
        """The one live replica that says it leads (None while there is none, or two)."""
        leading = [i for i in self.alive() if (self.health(i) or {}).get("role") == "leader"]
        return leading[0] if len(leading) == 1 else None

    def kill(self, index: int) -> None:
        replica = self.replicas[index]
        assert replica is not None
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(10)

    def push(self, version: str) -> str:
        """A commit of a new release, deployed to every device; the webhook to every live
        replica (a follower passes it to the leader)."""
        self.versions.append(version)
        sha = commit(self.repo, version, manifests(self.versions))
        body = f'{{"after": "{sha}"}}'.encode()
        for index in self.alive():
            replica = self.replicas[index]
            assert replica is not None
            with contextlib.suppress(httpx.HTTPError):  # a replica dying now: others have it
                httpx.post(
                    f"{replica.url}/v1/hooks/git",
                    content=body,
                    headers={"X-Hub-Signature-256": sign(SECRET, body)},
                    timeout=5,
                )
        return sha

    def stop(self) -> None:
        running = [r for r in self.replicas if r is not None and r.process.poll() is None]
        for replica in running:
            replica.process.send_signal(signal.SIGINT)
        for replica in running:
            try:
                replica.process.wait(15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()

    def shas(self) -> list[str]:
        """Every commit of the branch, newest first."""
        return [c.hexsha for c in self.repo.iter_commits("main")]

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.root.glob("replica-*.log"))
        )


def wait(check: Callable[[], bool], seconds: float, what: str, cluster: Replicas) -> float:
    """Seconds until `check()`; fails with the replicas' logs after `seconds`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s: {what}\n{cluster.logs()}", pytrace=False)
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """A server of this module's own: a test restarts it."""
    return start_server(request)


@dataclass
class World:
    cluster: Replicas
    fleet: Fleet
    db: str

    def at_revision(self, sha: str) -> bool:
        """Every device's last document names `sha`."""
        seen = self.fleet.seen()
        return len(seen) == DEVICES and all(docs and docs[-1][1] == sha for docs in seen.values())

    def converge(self, sha: str, seconds: float = 60) -> None:
        wait(lambda: self.at_revision(sha), seconds, f"every device at {sha[:12]}", self.cluster)

    def check_exactly_once(self) -> None:
        """Every commit applied once; every event the devices made stored once."""
        left = self.fleet.flush(60)
        assert left == 0, f"{left} events never acknowledged\n{self.cluster.logs()}"
        engine = sa.create_engine(self.db)
        try:
            with engine.connect() as connection:
                applied = connection.execute(APPLIED_EVENTS).all()
                stored = connection.execute(DEVICE_EVENTS).all()
        finally:
            engine.dispose()
        assert {count for _, count in applied} == {1}, applied
        assert sorted(applied) == sorted((sha, 1) for sha in self.shas()), "each commit applied"
        made = self.fleet.sent()
        expected = {(device, seq) for device, last in made.items() for seq in range(1, last + 1)}
        assert {(device, seq) for device, seq, _ in stored} == expected
        assert {count for *_, count in stored} <= {1}

    def shas(self) -> list[str]:
        return self.cluster.shas()


@pytest.fixture
def world(tmp_path: Path, git_identity: None, postgres: PostgresServer) -> Iterator[World]:
    name = postgres.create_database()
    db = postgres.url(name)
    issued = {f"dev-{n}": tokens.issue() for n in range(DEVICES)}
    with Store.open(db) as store:
        store.put_tokens({d: tokens.hash_token(t) for d, t in issued.items()}, datetime.now(UTC))
    cluster = Replicas(tmp_path, db)
    try:
        for index in range(3):
            cluster.start(index)
        wait(lambda: cluster.leader() is not None, 60, "a leader", cluster)
        first = cluster.shas()[0]
        wait(
            lambda: all((cluster.health(i) or {}).get("revision") == first for i in range(3)),
            60,
            "every replica at the first commit",
            cluster,
        )
        with simulated(cluster.urls, list(issued.items()), processes=1, wait=20) as fleet:
            fleet.hold()
            found = World(cluster, fleet, db)
            found.converge(first)
            yield found
    finally:
        cluster.stop()
        postgres.drop_database(name)


def test_a_commit_reaches_every_device_through_every_replica_within_a_second(
    world: World,
) -> None:
    """Only the leader applies; the followers hear it through NOTIFY and wake their polls."""
    sha = world.cluster.push("1.1.0")
    seconds = wait(lambda: world.at_revision(sha), 30, "the fan-out", world.cluster)
    assert seconds < 2, f"the fan-out took {seconds:.1f} s"  # NOTIFY, not the 5 s fallback
    world.fleet.reports(rate=60, seconds=2)
    world.check_exactly_once()


def test_the_leader_killed_mid_apply_leaves_the_commit_to_its_successor(world: World) -> None:
    cluster = world.cluster
    leader = cluster.leader()
    assert leader is not None
    sha = cluster.push("1.1.0")
    cluster.kill(leader)  # as it applies (or just before, or just after): once in any case
    took = wait(lambda: cluster.leader() is not None, FAILOVER, "a new leader", cluster)
    assert cluster.leader() != leader
    world.converge(sha)
    assert took < FAILOVER
    world.fleet.reports(rate=60, seconds=2)
    world.check_exactly_once()


def test_a_follower_killed_during_a_fan_out_loses_no_device(world: World) -> None:
    cluster = world.cluster
    leader = cluster.leader()
    follower = next(i for i in cluster.alive() if i != leader)
    sha = cluster.push("1.1.0")
    cluster.kill(follower)  # its devices move to the next replica, as agents do
    world.converge(sha)
    world.fleet.reports(rate=60, seconds=2)
    world.check_exactly_once()


def test_postgresql_restarted_loses_no_commit_and_no_event(
    world: World, postgres: PostgresServer
) -> None:
    cluster = world.cluster
    postgres.halt()
    try:
        world.fleet.reports(rate=30, seconds=2)  # refused with 503: kept for later
    finally:
        postgres.start(postgres.port)
    wait(lambda: cluster.leader() is not None, 30, "a leader after the restart", cluster)
    sha = cluster.push("1.1.0")
    world.converge(sha)
    world.fleet.reports(rate=60, seconds=2)
    world.check_exactly_once()


def test_a_commit_during_the_failover_is_applied_once_by_the_next_leader(world: World) -> None:
    cluster = world.cluster
    leader = cluster.leader()
    assert leader is not None
    cluster.kill(leader)
    sha = cluster.push("1.1.0")  # nobody leads at this moment
    world.converge(sha, seconds=FAILOVER + 30)
    cluster.start(leader)  # the old leader comes back as a follower
    wait(
        lambda: (cluster.health(leader) or {}).get("revision") == sha,
        30,
        "the restarted replica follows",
        cluster,
    )
    assert (cluster.health(leader) or {}).get("role") == "follower"
    world.fleet.reports(rate=60, seconds=2)
    world.check_exactly_once()
