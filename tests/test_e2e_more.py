"""More end to end scenarios on real parts: private images pulled with forwarded credentials,
pulls that fail, redeploys, and an agent or a controller that goes away and comes back.

The harness is test_e2e's (`Fleet`, `wait` of `tests.support.e2e`), with the processes under
the test's control: each can be stopped and started again on the same data and the same address.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker.errors
import git
import pytest
from pyrage import x25519
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.demo.daemons import free_port
from reconciler.manifests.credentials import DEFAULT_RULES, CreationRule, render_credential
from reconciler.secrets.secret import Secret
from tests.support.docker import DockerEngine, Images, Registry
from tests.support.e2e import SECRET, Fleet, healthy, wait
from tests.support.fleet import fleet_manifests
from tests.support.repos import commit, write_tree

pytestmark = pytest.mark.usefixtures("git_identity")
LABEL = "hedgerow.deployment=web-pi-1"
CREDENTIAL_FILE = "credentials/private.yaml"
# a registry's refusal without credentials, in dockerd's words and in Podman's
REFUSED = ("no basic auth credentials", "unauthorized: authentication required")


def manifests(
    port: int,
    version: str,
    image: str,
    *,
    credential: str | None = None,
    redeploy: str | None = None,
) -> dict[str, str]:
    """test_e2e's manifests, with a container `imageCredential` and a deployment `redeploy`."""
    files = fleet_manifests(version, image, port=port)
    release = f"releases/{version}.yaml"
    if credential is not None:
        files[release] = re.sub(
            r"^( *)image: (.*)$",
            rf"\g<0>\n\g<1>imageCredential: {credential}",
            files[release],
            flags=re.MULTILINE,
        )
        assert "imageCredential" in files[release]
    if redeploy is not None:
        files["deployment.yaml"] = files["deployment.yaml"].replace(
            "state: Running}", f'state: Running, redeploy: "{redeploy}"}}'
        )
        assert "redeploy" in files["deployment.yaml"]
    return files


def credential_manifest(registry: Registry, identity: x25519.Identity) -> str:
    rule = CreationRule((str(identity.to_public()),), DEFAULT_RULES, "test")
    return render_credential(
        "private",
        Secret(registry.username),
        Secret(registry.password),
        registry.host,
        rule,
        now=datetime.now(UTC),
        file=CREDENTIAL_FILE,
    )


@dataclass
class Site(Fleet):
    """A Fleet whose controller and agent the test may stop, kill and start again."""

    root: Path = Path()
    listen: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
        log.close()

    def start_controller(self) -> None:
        self._spawn("controller", [
            "reconciler", "controller", "--repo", str(self.repo.working_dir),
            "--data-dir", str(self.data), "--listen", self.listen,
            "--webhook-secret-file", str(self.root / "secret"), "--interval", "3600",
            "--age-key-file", str(self.root / "age.txt"),
        ])  # fmt: skip
        wait(lambda: healthy(self.url), "the controller")

    def start_agent(self) -> None:
        self._spawn("agent", [
            "agent", "--controller", self.url, "--device", "pi-1",
            "--token-file", str(self.root / "token"), "--data-dir", str(self.root / "agent"),
            "--poll-interval", "2s",
        ], {"DOCKER_HOST": self.engine.host})  # fmt: skip

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def apply(self, message: str, files: dict[str, str]) -> str:
        """Push a commit and wait until the controller has applied it (not rejected it)."""
        sha = self.push(message, files)

        def decided() -> bool:
            status = self.status()
            return status["revision"] == sha or any(
                r["revision"] == sha for r in status["rejected"]
            )

        wait(decided, f"commit {message!r} applied or rejected", 30)
        status = self.status()
        assert status["revision"] == sha, status["rejected"]
        return sha

    def ids(self) -> dict[str, str]:
        """Release → container id."""
        found = self.engine.client.containers.list(all=True, filters={"label": LABEL})
        return {c.labels["hedgerow.release"]: str(c.id) for c in found}

    def degraded(self) -> str | None:
        """The Degraded condition's message when it is True, else None."""
        deployments = self.status()["deployments"]
        for condition in deployments[0]["conditions"] if deployments else ():
            if condition["type"] == "Degraded" and condition["status"] == "True":
                return str(condition["message"])
        return None

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--data-dir", str(self.data), "-o", "json"])
        assert result.exit_code == 0, result.output
        return result.output


def _remove_image(engine: DockerEngine, image: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):  # Podman's "image not known" is no Image…
        engine.client.images.remove(image, force=True)


@pytest.fixture
def site(tmp_path: Path, docker_engine: DockerEngine, images: Images) -> Iterator[Site]:
    port, http = free_port(), free_port()
    repo = git.Repo.init(tmp_path / "fleet", initial_branch="main")
    write_tree(Path(repo.working_dir), {})
    commit(repo, "v1", fleet_manifests("1.0.0", images.v1, port=port))
    (tmp_path / "secret").write_bytes(SECRET)
    identity = x25519.Identity.generate()
    (tmp_path / "age.txt").write_text(f"{identity}\n")
    (tmp_path / "logs").mkdir()
    url = f"http://127.0.0.1:{http}"
    site = Site(repo, url, tmp_path / "controller", docker_engine, port)
    site.root, site.listen = tmp_path, f"127.0.0.1:{http}"
    try:
        site.start_controller()
        token = CliRunner().invoke(app, ["device", "token", "pi-1", "--data-dir", str(site.data)])
        assert token.exit_code == 0, token.output
        (tmp_path / "token").write_text(token.stdout.strip())
        site.start_agent()
        yield site
    finally:
        for name in list(site.processes):
            site.stop(name)
        for container in docker_engine.client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
        for log in sorted(site.logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def identity_of(site: Site) -> x25519.Identity:
    return x25519.Identity.from_str((site.root / "age.txt").read_text().strip())


# -- scenarios ------------------------------------------------------------------------------


def test_a_private_image_needs_its_forwarded_credential_and_it_never_leaks(
    site: Site, registry: Registry
) -> None:
    wait(lambda: site.containers() == {"1.0.0": "running"}, "deploy → running")
    _remove_image(site.engine, registry.image)  # the engine must pull it from the registry

    # With the credential, the private image is pulled and runs.
    files = manifests(site.port, "1.1.0", registry.image, credential="private")
    files[CREDENTIAL_FILE] = credential_manifest(registry, identity_of(site))
    site.apply("private, with its credential", files)
    wait(
        lambda: site.containers() == {"1.0.0": "exited", "1.1.0": "running"},
        "the private release running",
        90,
    )
    wait(lambda: site.served() == "1", "the private image (a copy of app:1) serving")
    wait(lambda: site.conditions().get("Ready") == "True", "Ready")
    assert site.conditions() == {
        "Synced": "True",
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
    }

    # Fresh engine state: the deployment gone, the image removed.
    Path(site.repo.working_dir, "deployment.yaml").unlink()
    site.apply("delete", {})
    wait(lambda: site.containers() == {}, "delete: containers gone")
    _remove_image(site.engine, registry.image)

    # The same image in a release without the credential: the pull is refused, nothing runs,
    # and the deployment is Degraded and says why. (A new release: releases are immutable.)
    site.apply("private, no credential", manifests(site.port, "1.2.0", registry.image))
    wait(lambda: site.degraded() is not None, "Degraded without the credential", 60)
    message = site.degraded() or ""
    assert any(words in message for words in REFUSED), message
    assert registry.image in message
    assert site.containers() == {}
    assert site.engine.client.images.list(name=registry.image.rsplit(":", 1)[0]) == []
    conditions = site.conditions()
    assert (conditions["Ready"], conditions["Degraded"]) == ("False", "True")

    # The plaintext password is nowhere: logs, status, events, nor the agent's files on disk.
    outputs = {log.name: log.read_bytes() for log in site.logs.iterdir()}
    outputs["status"] = site.cli("status").encode()
    outputs["events"] = site.cli("events", "--device", "pi-1").encode()
    outputs.update(
        {str(f): f.read_bytes() for f in (site.root / "agent").rglob("*") if f.is_file()}
    )
    assert len(outputs) >= 6
    for log in site.logs.iterdir():  # JSON lines when not on a terminal, as in production
        for line in log.read_text().splitlines():
            if not line.startswith("hedgerow controller: following"):  # the command's banner
                assert {"timestamp", "level", "logger", "event"} <= json.loads(line).keys()
    leaks = [name for name, text in outputs.items() if registry.password.encode() in text]
    assert leaks == [], "the registry password appears in these outputs"
    assert registry.username  # sanity: the secret searched for is not empty
    assert len(registry.password) >= 16


def test_an_upgrade_whose_image_cannot_be_pulled_keeps_the_old_release(
    site: Site, images: Images
) -> None:
    wait(lambda: site.served() == "1", "the release serving")
    site.apply("unpullable upgrade", manifests(site.port, "1.2.0", "127.0.0.1:9/none:1"))
    wait(lambda: site.degraded() is not None, "Degraded", 90)
    assert "127.0.0.1:9/none:1" in (site.degraded() or "")
    assert site.containers() == {"1.0.0": "running"}
    assert site.served() == "1"
    status = site.status()["deployments"][0]
    assert (status["desiredRelease"], status["observedRelease"]) == ("1.2.0", "1.0.0")

    # A release that can be pulled ends it: upgraded, and no longer Degraded.
    site.apply("good upgrade", manifests(site.port, "1.3.0", images.v2))
    wait(lambda: site.served() == "2", "the new release serving")
    wait(lambda: site.containers() == {"1.0.0": "exited", "1.3.0": "running"}, "upgraded")
    wait(lambda: site.degraded() is None, "no longer Degraded")


def test_a_new_redeploy_token_recreates_the_container(site: Site, images: Images) -> None:
    wait(lambda: site.containers() == {"1.0.0": "running"}, "deploy → running")
    wait(lambda: site.conditions().get("Ready") == "True", "Ready")
    (before,) = site.ids().values()
    site.apply("redeploy", manifests(site.port, "1.0.0", images.v1, redeploy="2"))
    wait(lambda: set(site.ids().values()) - {before} != set(), "a new container")
    wait(lambda: site.containers() == {"1.0.0": "running"}, "the new container running")
    assert before not in site.ids().values()
    wait(lambda: site.served() == "1", "serving again")
    wait(lambda: site.conditions().get("Ready") == "True", "Ready again")
    assert site.degraded() is None


KILL_POINTS: dict[str, Callable[[dict[str, str]], bool]] = {
    "new container created": lambda found: "1.1.0" in found,
    "old container stopped": lambda found: found.get("1.0.0") == "exited",
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_an_agent_killed_during_an_upgrade_finishes_it_when_restarted(
    site: Site, images: Images, point: str
) -> None:
    wait(lambda: site.served() == "1", "the release serving")
    site.apply("upgrade", manifests(site.port, "1.1.0", images.v2))
    wait(lambda: KILL_POINTS[point](site.containers()), point, 30)
    site.stop("agent", signal.SIGKILL)
    site.start_agent()
    wait(
        lambda: site.containers() == {"1.0.0": "exited", "1.1.0": "running"},
        "the upgrade finished",
        90,
    )
    wait(lambda: site.served() == "2", "the new release serving")
    wait(lambda: site.conditions().get("Ready") == "True", "Ready")
    assert site.degraded() is None


def test_an_agent_killed_as_it_switches_judges_the_switch_when_restarted(
    site: Site, images: Images
) -> None:
    """The switch is on disk before the old release stops: an agent killed right after it
    started the new one switches back when the deadline passes; without it, 1.1.0 would stay."""
    wait(lambda: site.served() == "1", "the release serving")
    files = manifests(site.port, "1.1.0", images.v2)
    files["releases/1.1.0.yaml"] += (
        '    healthcheck: {test: ["CMD-SHELL", "exit 1"], interval: 1s, retries: 1}\n'
    )
    files["deployment.yaml"] = files["deployment.yaml"].replace(
        "state: Running}", "state: Running, readiness: {progressDeadlineSeconds: 12}}"
    )
    site.apply("an upgrade that never gets healthy", files)
    wait(lambda: site.containers() == {"1.0.0": "exited", "1.1.0": "running"}, "switched", 30)
    site.stop("agent", signal.SIGKILL)
    site.start_agent()
    wait(lambda: site.containers() == {"1.0.0": "running", "1.1.0": "exited"}, "switched back")
    assert site.served() == "1"
    wait(lambda: "not Ready within 12 s" in (site.degraded() or ""), "Degraded", 30)


def test_an_agent_in_a_long_poll_stops_on_sigterm_at_once_and_exits_0(
    site: Site, images: Images
) -> None:
    """A service manager stops it with SIGTERM: it must not hold on for its poll interval."""
    wait(lambda: site.served() == "1", "the release serving")
    site.stop("agent")
    site._spawn("agent", [
        "agent", "--controller", site.url, "--device", "pi-1",
        "--token-file", str(site.root / "token"), "--data-dir", str(site.root / "agent"),
        "--poll-interval", "60s",
    ], {"DOCKER_HOST": site.engine.host})  # fmt: skip
    log = site.logs / "agent.log"
    wait(lambda: "agent started" in log.read_text(), "the agent started")
    time.sleep(4)  # converged: now in a long poll of up to 60 s
    process = site.processes.pop("agent")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert time.monotonic() - started < 10
    assert "agent stopped" in log.read_text()
    assert site.containers() == {"1.0.0": "running"}, "what it runs keeps running"


def test_a_commit_made_while_the_controller_is_down_is_applied_when_it_returns(
    site: Site, images: Images
) -> None:
    wait(lambda: site.served() == "1", "the release serving")
    wait(lambda: site.conditions().get("Ready") == "True", "Ready")
    site.stop("controller")
    time.sleep(5)  # a few failed polls: the device keeps what it runs
    assert site.containers() == {"1.0.0": "running"}
    assert site.served() == "1"

    sha = commit(site.repo, "upgrade while down", manifests(site.port, "1.1.0", images.v2))
    site.start_controller()
    wait(lambda: site.served() == "2", "the agent catching up", 90)
    wait(
        lambda: site.containers() == {"1.0.0": "exited", "1.1.0": "running"},
        "upgraded, old kept stopped",
    )
    wait(lambda: site.conditions().get("Ready") == "True", "Ready")
    assert site.status()["revision"] == sha
    events = json.loads(site.cli("events", "--device", "pi-1"))
    assert any(e["event"] == "started" and e["revision"] == sha for e in events)
