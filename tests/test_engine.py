"""The agent on a real Docker engine: deploy, stop, start, upgrade, redeploy, drift, delete,
private pulls and a release that fails at start, each checked by asking the engine itself.

Fixtures from tests/docker_env.py start a private dockerd and registry for the session. Ports are
published on 127.0.0.1 only, and the tests talk to containers only through those ports. After
every pass the engine is read back and planned again: a real pass must leave nothing to do.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import msgspec
import pytest

from agent.converge import Outcome, converge
from agent.engine import (
    DiskSpaceError,
    Engine,
    PullError,
    healthcheck_config,
    host_config_options,
    network_plan,
    port_bindings,
    split_reference,
)
from agent.steps import EngineState, plan_steps, release_reports
from reconciler.demo.daemons import free_port
from reconciler.wire import (
    Container,
    Deployment,
    DesiredDocument,
    Healthcheck,
    Network,
    RegistryAuth,
)
from tests.support.agent import HEALTH_PROBE, healthchecked
from tests.support.docker import DockerEngine, Images, Registry

# -- translation of the wire contract, without an engine ----------------------------------------


@pytest.mark.parametrize(
    ("spec", "exposed", "bindings"),
    [
        ("80", [(80, "tcp")], {"80/tcp": [("", "")]}),
        ("8080:80", [(80, "tcp")], {"80/tcp": [("", "8080")]}),
        ("127.0.0.1:8080:80/udp", [(80, "udp")], {"80/udp": [("127.0.0.1", "8080")]}),
        ("127.0.0.1::80", [(80, "tcp")], {"80/tcp": [("127.0.0.1", "")]}),
        ("[::1]:8080:80", [(80, "tcp")], {"80/tcp": [("::1", "8080")]}),
        ("[::1]::80/sctp", [(80, "sctp")], {"80/sctp": [("::1", "")]}),
        (
            "9000-9001:80-81",
            [(80, "tcp"), (81, "tcp")],
            {"80/tcp": [("", "9000")], "81/tcp": [("", "9001")]},
        ),
        ("9000-9010:80", [(80, "tcp")], {"80/tcp": [("", "9000-9010")]}),
        ("80-81", [(80, "tcp"), (81, "tcp")], {"80/tcp": [("", "")], "81/tcp": [("", "")]}),
        ("0:80", [(80, "tcp")], {"80/tcp": [("", "")]}),
    ],
)
def test_port_bindings(
    spec: str, exposed: list[tuple[int, str]], bindings: dict[str, list[tuple[str, str]]]
) -> None:
    got_exposed, got = port_bindings([spec])
    assert got_exposed == exposed
    assert {k: [(b["HostIp"], b["HostPort"]) for b in v] for k, v in got.items()} == bindings


def test_one_port_bound_on_two_addresses() -> None:
    exposed, bindings = port_bindings(["127.0.0.1:8080:80", "[::1]:8080:80"])
    assert exposed == [(80, "tcp")] and len(bindings["80/tcp"]) == 2


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("busybox", ("busybox", "latest")),
        ("127.0.0.1:5000/private/app:1", ("127.0.0.1:5000/private/app", "1")),
        ("localhost:5000/app", ("localhost:5000/app", "latest")),
        ("app:1@sha256:" + "a" * 64, ("app", "sha256:" + "a" * 64)),
    ],
)
def test_split_reference(image: str, parts: tuple[str, str]) -> None:
    assert split_reference(image) == parts


def test_every_container_field_reaches_the_host_config() -> None:
    spec = msgspec.convert(
        {
            "name": "all",
            "image": "x",
            "restartPolicy": "on-failure",
            "networkMode": "host",
            "binds": ["/srv:/srv:ro", "data:/data"],
            "volumes": [{"volume": "logs", "target": "/logs"}],
            "extraHosts": ["a:10.0.0.1", "b:[::1]"],
            "privileged": True,
            "capAdd": ["NET_ADMIN"],
            "capDrop": ["ALL"],
            "cpu": {
                "period": 100000,
                "quota": 50000,
                "realtimePeriod": 1000,
                "realtimeRuntime": 10,
            },
            "memory": 64 << 20,
            "memoryReservation": 32 << 20,
            "memorySwap": -1,
            "memorySwappiness": 10,
            "deviceMappings": [{"pathOnHost": "/dev/ttyUSB0", "pathInContainer": "/dev/gps"}],
            "deviceRequests": [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}],
            "readOnlyRootfs": True,
            "tmpfs": [{"path": "/run", "options": "size=1m"}],
            "storageOpt": {"size": "1G"},
        },
        Container,
    )
    options = host_config_options(spec, network_plan(spec)[0])
    assert options["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 0}
    assert options["network_mode"] == "host"
    assert options["binds"] == ["/srv:/srv:ro", "data:/data"]
    assert [(m["Source"], m["Target"], m["Type"]) for m in options["mounts"]] == [
        ("logs", "/logs", "volume")
    ]
    assert options["extra_hosts"] == ["a:10.0.0.1", "b:::1"]
    assert (options["privileged"], options["cap_add"], options["cap_drop"]) == (
        True,
        ["NET_ADMIN"],
        ["ALL"],
    )
    assert (options["cpu_period"], options["cpu_quota"]) == (100000, 50000)
    assert (options["cpu_rt_period"], options["cpu_rt_runtime"]) == (1000, 10)
    assert (options["mem_limit"], options["mem_reservation"]) == (64 << 20, 32 << 20)
    assert (options["memswap_limit"], options["mem_swappiness"]) == (-1, 10)
    assert options["devices"] == ["/dev/ttyUSB0:/dev/gps:rwm"]
    assert options["device_requests"][0]["Count"] == -1
    assert options["device_requests"][0]["Capabilities"] == [["gpu"]]
    assert options["read_only"] is True
    assert options["tmpfs"] == {"/run": "size=1m"}
    assert options["storage_opt"] == {"size": "1G"}


def test_listed_networks_replace_the_default_bridge() -> None:
    assert network_plan(Container(name="a", image="x", networks=["front", "back"])) == (
        "front",
        ["back"],
    )
    assert network_plan(Container(name="a", image="x")) == ("bridge", [])


# -- on the real engine ---------------------------------------------------------------------------


@pytest.fixture
def engine(docker_engine: DockerEngine) -> Iterator[Engine]:
    """An agent's engine; everything Hedgerow made is removed after the test."""
    yield Engine(docker_engine.client, device="pi-1", start_grace=0.5, stop_timeout=5)
    docker_engine.remove_managed()


def http(port: int, path: str = "/VERSION") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        text: str = answer.read().decode().strip()
        return text


def release(
    images: Images,
    version: str = "1.0.0",
    *,
    app: str = "web",
    image: str | None = None,
    port: int | None = None,
    state: str = "Running",
    redeploy: str | None = None,
    networks: tuple[str, ...] = ("front",),
    volumes: tuple[tuple[str, str], ...] = (("data", "Retain"),),
) -> Deployment:
    """`server` serves /www/VERSION on 8080 and mounts the volumes; `worker` sleeps."""
    server: dict[str, Any] = {
        "name": "server",
        "image": image or images.v1,
        "env": {"GREETING": "hello", "RELEASE": version},
        "networks": list(networks),
        "volumes": [{"volume": v, "target": f"/{v}"} for v, _ in volumes],
        "dependsOn": ["worker"],
    }
    if port is not None:
        server["portBindings"] = [f"127.0.0.1:{port}:8080"]
    worker = {"name": "worker", "image": images.sleeper, "networks": list(networks)}
    return msgspec.convert(
        {
            "deployment": f"{app}-lyon",
            "application": app,
            "release": version,
            "state": state,
            "redeploy": redeploy,
            "digest": f"digest-of-{version}",
            "containers": [server, worker],
            "networks": [Network(name=n) for n in networks],
            "volumes": [{"name": v, "deletionPolicy": p} for v, p in volumes],
        },
        Deployment,
    )


def doc(
    *deployments: Deployment, auth: tuple[RegistryAuth, ...] = (), device: str = "pi-1"
) -> DesiredDocument:
    return DesiredDocument(
        device=device, revision="r", deployments=list(deployments), registry_auth=list(auth)
    )


def run(engine: Engine, desired: DesiredDocument) -> Outcome:
    """One pass that must succeed and leave nothing to do while it is judged (what a redeploy
    set aside is kept meanwhile), read back from the engine."""
    outcome = converge(engine, desired)
    assert outcome.ok, [f.message for f in outcome.failures]
    assert plan_steps(desired, engine.read(), {d.application for d in desired.deployments}) == []
    return outcome


def states(engine: Engine) -> dict[str, str]:
    return {c.name: c.state for c in engine.read().containers}


def inspect(engine: Engine, name: str) -> dict[str, Any]:
    info: dict[str, Any] = engine.api.inspect_container(name)
    return info


def sh(engine: Engine, name: str, command: str) -> str:
    exec_id = engine.api.exec_create(name, ["sh", "-c", command])
    output: bytes = engine.api.exec_start(exec_id["Id"])
    return output.decode().strip()


S1, W1 = "hedgerow-pi-1-web-lyon-1-0-0-server", "hedgerow-pi-1-web-lyon-1-0-0-worker"
S2, W2 = "hedgerow-pi-1-web-lyon-1-1-0-server", "hedgerow-pi-1-web-lyon-1-1-0-worker"
FRONT, DATA = "hedgerow-pi-1-front", "hedgerow-pi-1-data"  # network and volume on pi-1


def test_deploy_runs_a_release_with_labels_env_mounts_and_loopback_ports(
    engine: Engine, images: Images
) -> None:
    port = free_port()
    run(engine, doc(release(images, port=port)))
    assert states(engine) == {S1: "running", W1: "running"}
    assert http(port) == "1"

    server = inspect(engine, S1)
    labels = server["Config"]["Labels"]
    assert {k: v for k, v in labels.items() if k.startswith("hedgerow.")} == {
        "hedgerow.managed": "true",
        "hedgerow.deployment": "web-lyon",
        "hedgerow.application": "web",
        "hedgerow.release": "1.0.0",
        "hedgerow.container": "server",
        "hedgerow.digest": "digest-of-1.0.0",
        "hedgerow.order": "1",
        "hedgerow.level": "1",
        "hedgerow.device": "pi-1",
    }
    assert {"GREETING=hello", "RELEASE=1.0.0"} <= set(server["Config"]["Env"])
    assert [(m["Type"], m["Name"], m["Destination"]) for m in server["Mounts"]] == [
        ("volume", DATA, "/data")
    ]
    assert server["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    assert server["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert set(server["NetworkSettings"]["Networks"]) == {FRONT}  # not the default bridge
    assert "server" in server["NetworkSettings"]["Networks"][FRONT]["Aliases"]
    assert sh(engine, W1, "busybox wget -qO- http://server:8080/VERSION") == "1"

    state = engine.read()
    assert state.networks == {FRONT} and state.volumes == {DATA: "Retain"}
    assert state.has_image(images.v1) and state.has_image(images.sleeper)
    [report] = release_reports(doc(release(images, port=port)), state)
    assert (report.deployment, report.running, report.complete) == ("web-lyon", True, True)
    assert [(c.name, c.state) for c in report.containers] == [(W1, "running"), (S1, "running")]


def test_stop_then_start_again(engine: Engine, images: Images) -> None:
    port = free_port()
    run(engine, doc(release(images, port=port)))
    outcome = run(engine, doc(release(images, port=port, state="Stopped")))
    assert [s.kind for s in outcome.done] == ["stop", "stop"]
    assert states(engine) == {S1: "exited", W1: "exited"}
    run(engine, doc(release(images, port=port)))
    assert states(engine) == {S1: "running", W1: "running"}
    assert http(port) == "1"


def test_upgrade_keeps_the_old_release_stopped_then_redeploy_and_drift(
    engine: Engine, images: Images
) -> None:
    port = free_port()
    run(engine, doc(release(images, port=port)))
    sh(engine, S1, "echo kept > /data/file")

    run(engine, doc(release(images, "1.1.0", image=images.v2, port=port)))
    assert states(engine) == {S1: "exited", W1: "exited", S2: "running", W2: "running"}
    assert http(port) == "2"
    assert sh(engine, S2, "cat /data/file") == "kept"

    ids = {name: inspect(engine, name)["Id"] for name in (S1, S2, W2)}
    run(engine, doc(release(images, "1.1.0", image=images.v2, port=port, redeploy="again")))
    assert inspect(engine, S2)["Id"] != ids[S2] and inspect(engine, W2)["Id"] != ids[W2]
    assert inspect(engine, S1)["Id"] == ids[S1], "the old release is left alone"
    assert inspect(engine, S2)["Config"]["Labels"]["hedgerow.redeploy"] == "again"
    assert http(port) == "2", "the port handed over: the old server is set aside, stopped"
    aside = inspect(engine, f"{S2}_aside")
    assert aside["Id"] == ids[S2] and aside["State"]["Status"] == "exited"

    engine.api.remove_container(W2, force=True)  # drift: removed by hand
    desired = doc(release(images, "1.1.0", image=images.v2, port=port, redeploy="again"))
    kept = inspect(engine, S2)["Id"]
    outcome = run(engine, desired)
    assert [s.kind for s in outcome.done].count("create") == 1
    assert inspect(engine, S2)["Id"] == kept, "only what drifted is recreated"
    assert states(engine) == {S1: "exited", W1: "exited", S2: "running", W2: "running"}
    assert http(port) == "2"


def test_drift_recreates_only_the_container_removed_by_hand(engine: Engine, images: Images) -> None:
    port = free_port()
    desired = doc(release(images, port=port))
    run(engine, desired)
    ids = {name: inspect(engine, name)["Id"] for name in (S1, W1)}
    engine.api.remove_container(S1, force=True)
    outcome = run(engine, desired)
    assert [(s.kind, getattr(s, "name", "")) for s in outcome.done] == [
        ("create", S1),
        ("start", S1),
    ]
    assert inspect(engine, W1)["Id"] == ids[W1], "the sibling keeps its container"
    assert inspect(engine, S1)["Id"] != ids[S1]
    assert http(port) == "1"

    engine.api.remove_container(W1, force=True)  # the dependency this time
    run(engine, desired)
    assert inspect(engine, S1)["State"]["Running"] and states(engine) == {
        S1: "running",
        W1: "running",
    }
    assert sh(engine, S1, "busybox wget -qO- http://server:8080/VERSION") == "1"


def test_a_container_sharing_a_namespace_is_recreated_with_its_owner(
    engine: Engine, images: Images
) -> None:
    """`networkMode: container:server` names the sibling; Docker gets its container name. When
    the server is recreated, the sidecar left in the old namespace is recreated with it."""
    base = release(images, volumes=())
    sidecar = Container(name="sidecar", image=images.sleeper, network_mode="container:server")
    desired = doc(msgspec.structs.replace(base, containers=[*base.containers, sidecar]))
    run(engine, desired)
    side = "hedgerow-pi-1-web-lyon-1-0-0-sidecar"
    assert sh(engine, side, "busybox wget -qO- http://127.0.0.1:8080/VERSION") == "1"
    worker = inspect(engine, W1)["Id"]
    engine.api.remove_container(S1, force=True)
    outcome = run(engine, desired)
    assert sorted(getattr(s, "name", "") for s in outcome.done if s.kind == "create") == [
        S1,
        side,
    ]
    assert inspect(engine, W1)["Id"] == worker
    assert sh(engine, side, "busybox wget -qO- http://127.0.0.1:8080/VERSION") == "1"


STUBBORN = "local/stubborn:1"


def stubborn_image(engine: Engine, images: Images) -> str:
    """The sleeper with `sleep` as PID 1 and no handler: the kernel drops SIGTERM for it, so
    only the SIGKILL after the stop timeout ends it, as an application ignoring SIGTERM."""
    if STUBBORN not in tags(engine):
        made = engine.api.create_container(images.sleeper)
        try:
            engine.api.commit(made["Id"], "local/stubborn", "1", conf={"Cmd": ["sleep", "1000000"]})
        finally:
            engine.api.remove_container(made["Id"])
    return STUBBORN


def test_containers_ignoring_sigterm_stop_together_in_one_grace_period(
    engine: Engine, images: Images
) -> None:
    timeout = 2
    patient = Engine(engine.client, device="pi-1", start_grace=0.5, stop_timeout=timeout)
    image = stubborn_image(engine, images)
    deployment = msgspec.convert(
        {
            "deployment": "stubborn",
            "application": "stubborn",
            "release": "1.0.0",
            "state": "Running",
            "digest": "d",
            "containers": [{"name": n, "image": image} for n in ("a", "b")],
        },
        Deployment,
    )
    run(patient, doc(deployment))
    stopped = doc(msgspec.structs.replace(deployment, state="Stopped"))
    began = time.monotonic()
    outcome = run(patient, stopped)
    took = time.monotonic() - began
    assert [s.kind for s in outcome.done] == ["stop"], "one level, one step"
    assert timeout <= took < 1.6 * timeout, f"{took:.1f} s: stopped one after the other?"
    for name in ("a", "b"):
        assert inspect(engine, f"hedgerow-pi-1-stubborn-1-0-0-{name}")["State"]["ExitCode"] == 137


def test_two_devices_share_one_engine_without_touching_each_other(
    engine: Engine, images: Images
) -> None:
    """One engine standing in for two devices running the same deployment, network and
    volume names: each agent sees, changes and removes only its own."""
    one = engine
    two = Engine(engine.client, device="pi-2", start_grace=0.5, stop_timeout=5)
    desired = release(images, volumes=(("data", "Retain"), ("scratch", "Delete")))
    run(one, doc(desired))
    run(two, doc(desired, device="pi-2"))
    first, second = one.read(), two.read()
    assert {c.name for c in first.containers} == {S1, W1}
    assert {c.name for c in second.containers} == {
        "hedgerow-pi-2-web-lyon-1-0-0-server",
        "hedgerow-pi-2-web-lyon-1-0-0-worker",
    }
    assert first.networks == {FRONT} and second.networks == {"hedgerow-pi-2-front"}
    assert set(second.volumes) == {"hedgerow-pi-2-data", "hedgerow-pi-2-scratch"}
    assert not first.adopted and not second.adopted
    S = "hedgerow-pi-2-web-lyon-1-0-0-server"
    sh(engine, S1, "echo one > /data/file")
    assert sh(engine, S, "cat /data/file 2>&1 || true") != "one", "each its own volume"
    assert sh(engine, S, "busybox wget -qO- http://server:8080/VERSION") == "1"
    ids = {c.name: c.id for c in second.containers}

    run(one, doc(release(images, "1.1.0", image=images.v2, volumes=(("data", "Retain"),))))
    run(one, doc())  # pi-1's deployment removed: its containers, network, Delete volumes
    assert one.read().containers == () and one.read().networks == frozenset()
    after = two.read()
    assert {c.name: c.id for c in after.containers} == ids, "pi-2's containers untouched"
    assert all(c.up for c in after.containers)
    assert after.networks == {"hedgerow-pi-2-front"}
    assert set(after.volumes) == {"hedgerow-pi-2-data", "hedgerow-pi-2-scratch"}
    assert images.v1 in tags(engine), "pi-2's containers still use the image: kept"
    assert plan_steps(doc(desired, device="pi-2"), after) == []


def test_an_agent_upgraded_in_place_adopts_what_it_made_before_device_labels(
    engine: Engine, images: Images
) -> None:
    """An Engine without a device acts as the agent before device labels did: its containers,
    network and volume carry no device. The upgraded agent of pi-1 adopts them: nothing is
    restarted, the volume keeps its data; with another device on the engine, nobody does."""
    older = Engine(engine.client, device="", start_grace=0.5, stop_timeout=5)
    port = free_port()
    run(older, doc(release(images, port=port), device=""))
    legacy = "hedgerow-web-lyon-1-0-0-server"
    assert "hedgerow.device" not in inspect(engine, legacy)["Config"]["Labels"]
    sh(engine, legacy, "echo kept > /data/file")
    ids = {c.name: c.id for c in older.read().containers}

    state = engine.read()
    assert {c.name: c.id for c in state.containers} == ids
    assert state.adopted == {"front", "data"}
    assert plan_steps(doc(release(images, port=port)), state) == [], "nothing restarted"
    run(engine, doc(release(images, "1.1.0", image=images.v2, port=port)))
    assert sh(engine, S2, "cat /data/file") == "kept"
    assert http(port) == "2"

    stranger = Engine(engine.client, device="pi-9")
    assert stranger.read().containers == () and not stranger.read().adopted
    run(stranger, doc(release(images, networks=(), volumes=()), device="pi-9"))
    assert not engine.read().adopted, "another device is here: unlabelled ones are nobody's"
    assert {c.name for c in engine.read().containers} == {S2, W2}


def tags(engine: Engine) -> set[str]:
    return {tag for image in engine.api.images() for tag in image.get("RepoTags") or []}


def test_a_second_upgrade_removes_the_oldest_release_and_its_image(
    engine: Engine, images: Images
) -> None:
    for tag, source in (("1", images.v1), ("2", images.v2), ("3", images.v1)):
        engine.api.tag(source, "local/prune", tag)  # references of this test's own
    run(engine, doc(release(images, image="local/prune:1")))
    run(engine, doc(release(images, "1.1.0", image="local/prune:2")))
    assert {c.release for c in engine.read().containers} == {"1.0.0", "1.1.0"}
    run(engine, doc(release(images, "1.2.0", image="local/prune:3")))
    assert {c.release for c in engine.read().containers} == {"1.1.0", "1.2.0"}
    assert "local/prune:1" not in tags(engine), "no container uses it any more"
    assert {"local/prune:2", "local/prune:3", images.v1, images.sleeper} <= tags(engine)
    run(engine, doc())
    assert not any(tag.startswith("local/prune:") for tag in tags(engine))
    assert images.sleeper in tags(engine), "a container not Hedgerow's still uses it: kept"


def test_delete_keeps_a_shared_network_and_the_volume_data(engine: Engine, images: Images) -> None:
    web = release(images, volumes=(("data", "Retain"), ("scratch", "Delete")))
    cam = release(images, app="cam", networks=("front",), volumes=())
    run(engine, doc(web, cam))
    sh(engine, S1, "echo kept > /data/file")

    run(engine, doc(cam))
    state = engine.read()
    assert {c.application for c in state.containers} == {"cam"}
    assert state.networks == {FRONT}, "cam still uses it"
    assert state.volumes == {DATA: "Retain"}, "Retain keeps data, Delete removes the volume"

    run(engine, doc(release(images), cam))
    assert sh(engine, S1, "cat /data/file") == "kept"

    run(engine, doc())
    state = engine.read()
    assert state.containers == () and state.networks == frozenset()
    assert state.volumes == {DATA: "Retain"}


def test_a_release_failing_at_start_is_reported_and_the_old_one_runs_again(
    engine: Engine, images: Images
) -> None:
    port = free_port()
    run(engine, doc(release(images, port=port)))
    broken = release(images, "1.1.0", image=images.failing, port=port)
    first = converge(engine, doc(broken))
    assert first.ok and set(first.switched) == {"web"}, "the pass does not wait for the grace"
    grace = engine.next_check()
    assert grace is not None and 0 < grace <= engine.start_grace
    deadline = time.monotonic() + grace
    while True:  # as the agent's passes at Docker events: the crash is seen when it happens
        outcome = converge(engine, doc(broken), switched=first.switched)
        if outcome.failures or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert [f.step.kind if f.step else None for f in outcome.failures] == ["start"]
    message = outcome.failures[0].message
    assert message.startswith(f"container {S2} exited with code 3"), message
    assert "starting" in message  # its last output, to tell why
    assert outcome.failures[0].deployment == "web-lyon"
    assert states(engine) == {S1: "running", W1: "running", S2: "exited", W2: "exited"}
    assert http(port) == "1"
    while (wait := engine.next_check()) is not None:  # 1.0.0 runs through its grace
        time.sleep(wait)
        assert engine.failed_starts() == []


def test_a_private_image_needs_its_credentials(
    engine: Engine, images: Images, registry: Registry
) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):  # pulled by an earlier test
        engine.api.remove_image(registry.image)
    desired = doc(release(images, image=registry.image, networks=(), volumes=()))
    outcome = converge(engine, desired)
    assert [f.step.kind if f.step else None for f in outcome.failures] == ["pull"]
    message = outcome.failures[0].message
    assert message.startswith(f"pulling {registry.image}: "), message
    assert "no basic auth credentials" in message
    assert outcome.skipped and engine.read().containers == (), "nothing switched"

    wrong = RegistryAuth(
        image=registry.image,
        serveraddress=registry.host,
        username=registry.username,
        password="not-" + registry.password,
    )
    with pytest.raises(PullError) as failed:
        engine.pull(registry.image, wrong)
    assert wrong.password not in str(failed.value) and "unauthorized" in str(failed.value).lower()

    auth = RegistryAuth(
        image=registry.image,
        serveraddress=registry.host,
        username=registry.username,
        password=registry.password,
    )
    outcome = run(engine, doc(*desired.deployments, auth=(auth,)))
    assert registry.password not in repr(outcome)
    assert states(engine) == {
        "hedgerow-pi-1-web-lyon-1-0-0-server": "running",
        "hedgerow-pi-1-web-lyon-1-0-0-worker": "running",
    }
    assert engine.read().has_image(registry.image)


def test_a_pull_that_outlives_its_deadline_fails(engine: Engine, registry: Registry) -> None:
    auth = RegistryAuth(
        image=registry.image,
        serveraddress=registry.host,
        username=registry.username,
        password=registry.password,
    )
    hasty = Engine(engine.client, device="pi-1", pull_timeout=0)
    with pytest.raises(PullError, match=r"pulling .*: not done after 0 s; will try again"):
        hasty.pull(registry.image, auth)


def test_a_pull_is_refused_when_disk_space_is_low(engine: Engine, images: Images) -> None:
    careful = Engine(engine.client, device="pi-1", min_free_bytes=1 << 60)
    with pytest.raises(DiskSpaceError, match=r"not pulling busybox: only \d+ MiB free in /"):
        careful.pull("busybox")


def test_a_network_hedgerow_did_not_create_is_not_adopted(engine: Engine, images: Images) -> None:
    """Under the very Docker name the device's network would have (`hedgerow-pi-1-theirs`):
    one of the same short name is no clash at all, as the device's names are its own."""
    network = engine.api.create_network("hedgerow-pi-1-theirs")
    try:
        outcome = converge(engine, doc(release(images, networks=("theirs",), volumes=())))
        assert [f.step.kind if f.step else None for f in outcome.failures] == ["create-network"]
        assert "not created by Hedgerow" in outcome.failures[0].message
        assert engine.read().containers == ()
    finally:
        engine.api.remove_network(network["Id"])


def test_every_container_option_is_accepted_by_the_engine(engine: Engine, images: Images) -> None:
    port = free_port()
    spec = {
        "name": "tuned",
        "image": images.v1,
        "hostname": "tuned-host",
        "restartPolicy": "on-failure",
        "portBindings": [f"127.0.0.1:{port}-{port + 1}:8080-8081/tcp", "127.0.0.1::9000/udp"],
        "extraHosts": ["gateway.local:10.0.0.1", "six.local:[::1]"],
        "capAdd": ["NET_ADMIN"],
        "capDrop": ["MKNOD"],
        "cpu": {"period": 100000, "quota": 50000},
        "memory": 64 << 20,
        "memoryReservation": 32 << 20,
        "memorySwap": 128 << 20,
        "deviceMappings": [{"pathOnHost": "/dev/null", "pathInContainer": "/dev/nothing"}],
        "readOnlyRootfs": True,
        "tmpfs": [{"path": "/scratch", "options": "size=1m"}],
        "binds": ["/etc/hostname:/host-name:ro"],
    }
    deployment = msgspec.convert(
        {
            "deployment": "tuned",
            "application": "tuned",
            "release": "1.0.0",
            "state": "Running",
            "digest": "d",
            "containers": [spec],
        },
        Deployment,
    )
    run(engine, doc(deployment))
    info = inspect(engine, "hedgerow-pi-1-tuned-1-0-0-tuned")
    host = info["HostConfig"]
    assert info["Config"]["Hostname"] == "tuned-host"
    assert host["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}],
        "8081/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port + 1)}],
        "9000/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
    }
    assert host["ExtraHosts"] == ["gateway.local:10.0.0.1", "six.local:::1"]
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_ADMIN"], ["MKNOD"])
    assert (host["CpuPeriod"], host["CpuQuota"]) == (100000, 50000)
    assert (host["Memory"], host["MemoryReservation"], host["MemorySwap"]) == (
        64 << 20,
        32 << 20,
        128 << 20,
    )
    assert host["Devices"] == [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/nothing", "CgroupPermissions": "rwm"}
    ]
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == {"/scratch": "size=1m"}
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 0}
    assert http(port) == "1"
    assert "six.local" in sh(engine, "hedgerow-pi-1-tuned-1-0-0-tuned", "cat /etc/hosts")


def test_a_healthcheck_reaches_the_engine_in_nanoseconds() -> None:
    check = Healthcheck(
        test=["CMD-SHELL", "true"], interval="1m30s", timeout="500ms", retries=2, start_period="2s"
    )
    assert healthcheck_config(check) == {
        "test": ["CMD-SHELL", "true"],
        "interval": 90 * 10**9,
        "timeout": 500 * 10**6,
        "start_period": 2 * 10**9,
        "retries": 2,
    }
    assert healthcheck_config(Healthcheck(test=["NONE"])) == {"test": ["NONE"]}
    assert healthcheck_config(None) is None  # the image's own HEALTHCHECK stays


def test_docker_runs_the_release_healthcheck(engine: Engine, images: Images) -> None:
    deployment = healthchecked(images.v1)
    run(engine, doc(deployment))
    config = inspect(engine, "hedgerow-pi-1-checked-1-0-0-checked")["Config"]["Healthcheck"]
    assert config == {"Test": HEALTH_PROBE, "Interval": 10**9, "Timeout": 2 * 10**9, "Retries": 1}

    def health(name: str) -> str:
        status: str = inspect(engine, f"hedgerow-pi-1-checked-1-0-0-{name}")["State"]["Health"][
            "Status"
        ]
        return status

    deadline = time.monotonic() + 30
    while (health("checked"), health("failing")) != ("healthy", "unhealthy"):
        assert time.monotonic() < deadline, (health("checked"), health("failing"))
        time.sleep(0.2)


def test_reading_an_engine_without_hedgerow_finds_nothing_of_anyone_else(
    engine: Engine, images: Images
) -> None:
    other = engine.api.create_container(images.sleeper, name="not-ours")
    try:
        assert engine.read().containers == ()
        state: EngineState = engine.read()
        assert plan_steps(doc(), state) == []
    finally:
        engine.api.remove_container(other["Id"], force=True)
    with pytest.raises(docker.errors.NotFound):
        engine.api.inspect_container("not-ours")


def test_engine_events_of_owned_objects_wake_the_agent(
    engine: Engine, docker_engine: DockerEngine, images: Images
) -> None:
    """A container stopped or removed by hand is noticed at once, not at the next poll."""

    heard = threading.Event()
    watcher = Engine(docker.DockerClient(base_url=docker_engine.host), device="pi-1")
    threading.Thread(target=watcher.watch, args=(heard.set,), daemon=True).start()
    time.sleep(0.3)  # the stream is open
    api = docker_engine.client.api
    unowned = api.create_container(images.sleeper, name="not-hedgerow")
    api.remove_container(unowned["Id"], force=True)
    assert not heard.wait(1.0)  # containers Hedgerow does not own are none of its business
    desired = DesiredDocument(
        device="pi-1",
        revision="r1",
        deployments=[
            Deployment(
                deployment="watch",
                application="watch",
                release="1.0.0",
                state="Running",
                digest="d",
                containers=[Container(name="c", image=images.sleeper)],
            )
        ],
    )
    assert converge(engine, desired).ok
    assert heard.wait(5.0)
