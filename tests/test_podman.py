"""The end-to-end scenarios that matter, on Podman: the same controller, the same agent process
(pointed at Podman's Docker-compatible socket with `DOCKER_HOST`) and the same scenario code as
on dockerd, with the engine, images and registry fixtures those scenarios take replaced here by
Podman's (`tests.support.podman`): deploy, upgrade with the old release kept stopped, stop,
start and delete (`test_deploy_upgrade_stop_and_delete_through_git`); a container removed by
hand comes back; a private image pulled with the credential the controller forwards; a pull
that fails, leaving the old release running; an upgrade whose container crashes at start (a
restart loop on Podman) switched back. Podman is started by the tests, as dockerd is.
"""

from __future__ import annotations

import msgspec
import pytest

from agent.converge import converge
from agent.engine import Engine
from agent.podman import dependents, docker_state, is_podman
from reconciler.wire import Deployment, DesiredDocument
from tests.support.agent import healthchecked
from tests.support.docker import DockerEngine, Images, Registry
from tests.support.e2e import wait
from tests.test_e2e import (  # the scenarios, collected here a second time, on Podman
    fleet,  # noqa: F401
    test_a_container_removed_by_hand_comes_back,  # noqa: F401
    test_a_failing_upgrade_switches_back_and_is_degraded,  # noqa: F401
    test_deploy_upgrade_stop_and_delete_through_git,  # noqa: F401
)
from tests.test_e2e_more import (
    site,  # noqa: F401
    test_a_private_image_needs_its_forwarded_credential_and_it_never_leaks,  # noqa: F401
    test_an_upgrade_whose_image_cannot_be_pulled_keeps_the_old_release,  # noqa: F401
)

pytestmark = pytest.mark.usefixtures("git_identity")


# The fixtures `fleet` and `site` take, overridden for this module's tests only.


@pytest.fixture(scope="session")
def docker_engine(podman_engine: DockerEngine) -> DockerEngine:
    return podman_engine


@pytest.fixture
def images(podman_images: Images) -> Images:
    return podman_images


@pytest.fixture(scope="session")
def registry(podman_registry: Registry) -> Registry:
    return podman_registry


# -- what the engine adapter puts in Docker's terms (agent.podman) -------------------------------


def test_podman_answers_read_in_docker_terms() -> None:
    """`stopping` (stopped or force-removed, process not gone yet) is Docker's `running`: read
    as stopped, the agent started a container `docker rm -f` was removing, and Podman kept its
    host port bound for good."""
    assert [docker_state(s) for s in ("stopping", "stopped", "configured", "running")] == [
        "running",
        "exited",
        "created",
        "running",
    ]
    refusal = "container 1f has dependent containers which must be removed before it: 2a,3b: x"
    assert dependents(refusal) == ["2a", "3b"]
    assert dependents("no such container") == []
    assert is_podman({"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]})
    assert not is_podman({"Components": [{"Name": "Engine", "Version": "20.10.24"}]})


def test_the_agent_runs_podmans_healthchecks(podman_engine: DockerEngine, images: Images) -> None:
    """Podman leaves healthchecks to systemd timers (none here, nor on many devices): the agent's
    engine runs each when due, and reads the result as Docker's health."""
    engine = Engine(podman_engine.client, device="pi-1", start_grace=0.5)
    deployment = healthchecked(images.v1)
    desired = DesiredDocument(device="pi-1", revision="r", deployments=[deployment])
    try:
        assert converge(engine, desired).ok

        def health() -> dict[str, str | None]:
            return {c.container: c.health for c in engine.read().containers}

        wait(lambda: health() == {"checked": "healthy", "failing": "unhealthy"}, "health", 30)
        due = engine.next_check()
        assert due is not None and due <= 1.0  # the agent's next pass comes in time for it
    finally:
        podman_engine.remove_managed()


def test_a_release_with_a_sidecar_in_its_namespace_is_deleted(
    podman_engine: DockerEngine, images: Images
) -> None:
    """Podman refuses to remove a container whose network namespace a sidecar joined before the
    sidecar (dockerd does not): the agent removes its own sidecar first, and the delete ends."""
    engine = Engine(podman_engine.client, device="pi-1", start_grace=0.5)
    server = {"name": "server", "image": images.v1}
    sidecar = {"name": "sidecar", "image": images.sleeper, "networkMode": "container:server"}
    deployment = msgspec.convert(
        {
            "deployment": "web-lyon",
            "application": "web",
            "release": "1.0.0",
            "state": "Running",
            "digest": "d",
            "containers": [server, sidecar],
        },
        Deployment,
    )
    try:
        assert converge(
            engine, DesiredDocument(device="pi-1", revision="r", deployments=[deployment])
        ).ok
        assert {c.container: c.state for c in engine.read().containers} == {
            "server": "running",
            "sidecar": "running",
        }
        deleted = converge(engine, DesiredDocument(device="pi-1", revision="r", deployments=[]))
        assert deleted.ok, [f.message for f in deleted.failures]
        assert engine.read().containers == ()
    finally:
        podman_engine.remove_managed()
