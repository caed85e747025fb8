"""The agent's plan, table-driven and by property: ordered, idempotent, convergent in one pass.

Also the pass around it (`converge`, on a model engine with injected failures) and the saved
desired document. Nothing here needs Docker: `apply` is the model of a successful run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.converge import converge
from agent.errors import EngineError, PullError
from agent.state import FILE_NAME, load_desired, save_desired
from agent.steps import (
    ContainerState,
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    EngineState,
    PullImage,
    RemoveContainer,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    StartContainer,
    Step,
    StopContainer,
    StopContainers,
    apply,
    container_name,
    dependency_levels,
    dependency_order,
    normalise_image,
    one_shots,
    outdated,
    plan_steps,
    present_images,
    release_reports,
    rollback_steps,
    scoped_name,
)
from reconciler.wire import (
    Deployment,
    DesiredDocument,
    Mount,
    Network,
    RegistryAuth,
    Volume,
)
from tests.support.agent import DEVICE, IMAGE, V1, V2, ModelEngine, ctr, doc, short, show, web
from tests.support.properties import examples


def imported_by(modules: str) -> list[str]:
    code = (
        f"import {modules}, sys; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('reconciler', 'docker'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_agent_loads_only_what_it_shares_and_docker_only_in_its_engine() -> None:
    """At run time, as tests/test_architecture.py checks in the source: of the controller the
    agent loads the wire contract, the exception base and the logging setup, nothing else."""
    assert imported_by("agent.steps, agent.converge, agent.state") == [
        "reconciler",
        "reconciler.errors",
        "reconciler.wire",
    ]
    assert "docker" not in imported_by("agent.steps, agent.converge, agent.state")
    loaded = imported_by("agent.main")
    assert [m for m in loaded if m.startswith("reconciler")] == [
        "reconciler",
        "reconciler.errors",
        "reconciler.logs",
        "reconciler.wire",
    ]
    assert "docker" in loaded


def net(name: str) -> str:
    """A network's or volume's Docker name on device pi-1."""
    return scoped_name(DEVICE, name)


def converged(desired: DesiredDocument, images: tuple[str, ...] = (IMAGE,)) -> EngineState:
    """The engine once `desired` runs exactly, reached the way the agent would."""
    start = EngineState(images=frozenset(images))
    return apply(start, plan_steps(desired, start))


def run_and_check(desired: DesiredDocument, engine: EngineState) -> tuple[list[Step], EngineState]:
    """Plan and apply; a second plan while the switch is judged has nothing left to do, and
    once it is Ready only removes what a redeploy set aside. Returns the engine after that."""
    steps = plan_steps(desired, engine)
    after = apply(engine, steps)
    judging = {d.application for d in desired.deployments}
    assert plan_steps(desired, after, judging) == [], "a second plan must have nothing to do"
    ready = plan_steps(desired, after)
    wanted = {(d.application, d.release): d for d in desired.deployments}
    aside = {
        c.name
        for c in after.containers
        if (c.application, c.release) in wanted and outdated(c, wanted[c.application, c.release])
    }
    assert {s.name for s in ready if isinstance(s, RemoveContainer)} <= aside
    cleanup = RemoveContainer | RemoveImage | RemoveNetwork | RemoveVolume  # what it alone used
    assert all(isinstance(s, cleanup) for s in ready), show(ready)
    settled = apply(after, ready)
    assert plan_steps(desired, settled) == [], "once Ready, nothing is left to do"
    return steps, settled


def by_name(engine: EngineState) -> dict[str, ContainerState]:
    return {c.name: c for c in engine.containers}


def drop(engine: EngineState, name: str) -> EngineState:
    kept = tuple(c for c in engine.containers if c.name != name)
    return EngineState(kept, engine.networks, engine.volumes, engine.images)


# -- table: one desired change from a converged device --------------------------------------

CASES: list[tuple[str, DesiredDocument, DesiredDocument, list[str]]] = [
    ("nothing to do", doc(web()), doc(web()), []),
    (
        "stop: reverse dependency order",
        doc(web()),
        doc(web(state="Stopped")),
        ["stop web-lyon-1-0-0-server", "stop web-lyon-1-0-0-db"],
    ),
    (
        "upgrade: download, create new, stop old, start new",
        doc(web()),
        doc(web("1.1.0", image=V2)),
        [
            f"pull {V2}",
            "create web-lyon-1-1-0-db",
            "create web-lyon-1-1-0-server",
            "stop web-lyon-1-0-0-server",
            "stop web-lyon-1-0-0-db",
            "start web-lyon-1-1-0-db",
            "start web-lyon-1-1-0-server",
        ],
    ),
    (
        "upgrade to a stopped release: created, old stopped, nothing started",
        doc(web()),
        doc(web("1.1.0", state="Stopped")),
        [
            "create web-lyon-1-1-0-db",
            "create web-lyon-1-1-0-server",
            "stop web-lyon-1-0-0-server",
            "stop web-lyon-1-0-0-db",
        ],
    ),
    (
        "redeploy token: the old containers set aside, new ones made, no pull of a present image",
        doc(web()),
        doc(web(redeploy="again")),
        [
            "rename web-lyon-1-0-0-db web-lyon-1-0-0-db_aside",
            "rename web-lyon-1-0-0-server web-lyon-1-0-0-server_aside",
            "create web-lyon-1-0-0-db",
            "create web-lyon-1-0-0-server",
            "stop web-lyon-1-0-0-server_aside",
            "stop web-lyon-1-0-0-db_aside",
            "start web-lyon-1-0-0-db",
            "start web-lyon-1-0-0-server",
        ],
    ),
    (
        "digest changed: a redeploy",
        doc(web()),
        doc(web(digest="d2")),
        [
            "rename web-lyon-1-0-0-db web-lyon-1-0-0-db_aside",
            "rename web-lyon-1-0-0-server web-lyon-1-0-0-server_aside",
            "create web-lyon-1-0-0-db",
            "create web-lyon-1-0-0-server",
            "stop web-lyon-1-0-0-server_aside",
            "stop web-lyon-1-0-0-db_aside",
            "start web-lyon-1-0-0-db",
            "start web-lyon-1-0-0-server",
        ],
    ),
    (
        "delete: containers removed, a Retain volume and its data kept, network removed",
        doc(web()),
        doc(),
        [
            "stop web-lyon-1-0-0-server",
            "stop web-lyon-1-0-0-db",
            "remove web-lyon-1-0-0-db",
            "remove web-lyon-1-0-0-server",
            "remove-network front",
            f"remove-image {V1}",
        ],
    ),
    (
        "delete with deletionPolicy Delete removes the volume too",
        doc(web(volumes=(("data", "Delete"),))),
        doc(),
        [
            "stop web-lyon-1-0-0-server",
            "stop web-lyon-1-0-0-db",
            "remove web-lyon-1-0-0-db",
            "remove web-lyon-1-0-0-server",
            "remove-network front",
            "remove-volume data",
            f"remove-image {V1}",
        ],
    ),
]


@pytest.mark.parametrize(("title", "before", "after", "expected"), CASES, ids=[c[0] for c in CASES])
def test_one_change_from_a_converged_device(
    title: str, before: DesiredDocument, after: DesiredDocument, expected: list[str]
) -> None:
    steps, _ = run_and_check(after, converged(before))
    assert show(steps) == expected


V3 = "local/app:3"


def upgraded_twice(third: DesiredDocument) -> tuple[list[Step], EngineState]:
    """1.0.0, then 1.1.0, then `third`: the steps of the last switch and the engine after."""
    engine = converged(doc(web()), images=(V1, V2, V3))
    engine = apply(engine, plan_steps(doc(web("1.1.0", image=V2)), engine))
    return run_and_check(third, engine)


def test_an_upgrade_keeps_the_release_it_leaves_and_removes_older_ones_and_their_image() -> None:
    steps, after = upgraded_twice(doc(web("1.2.0", image=V3)))
    assert show(steps) == [
        "create web-lyon-1-2-0-db",
        "create web-lyon-1-2-0-server",
        "stop web-lyon-1-1-0-server",
        "stop web-lyon-1-1-0-db",
        "start web-lyon-1-2-0-db",
        "start web-lyon-1-2-0-server",
        "remove web-lyon-1-0-0-server",
        "remove web-lyon-1-0-0-db",
        f"remove-image {V1}",
    ]
    assert {c.release for c in after.containers} == {"1.1.0", "1.2.0"}
    assert after.images == {V2, V3}


def test_an_image_the_new_release_still_uses_is_kept() -> None:
    steps, after = upgraded_twice(doc(web("1.2.0", image=V1)))
    assert "remove web-lyon-1-0-0-db" in show(steps)
    assert not any(isinstance(s, RemoveImage) for s in steps) and V1 in after.images


def test_switching_back_to_the_kept_release_removes_nothing() -> None:
    steps, after = upgraded_twice(doc(web()))  # back to 1.0.0, kept stopped
    assert show(steps) == [
        "stop web-lyon-1-1-0-server",
        "stop web-lyon-1-1-0-db",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-server",
    ]
    assert {c.release for c in after.containers} == {"1.0.0", "1.1.0"}


def test_without_a_switch_older_stopped_releases_stay() -> None:
    """Which stopped release came last is not in the engine's state: only a switch tells."""
    engine = converged(doc(web()), images=(V1, V2, V3))
    engine = apply(engine, plan_steps(doc(web("1.1.0", image=V2)), engine))
    engine = apply(engine, plan_steps(doc(web("1.1.0", image=V2, state="Stopped")), engine))
    steps, after = run_and_check(doc(web("1.2.0", image=V3, state="Stopped")), engine)
    assert not any(isinstance(s, RemoveContainer) for s in steps)
    assert {c.release for c in after.containers} == {"1.0.0", "1.1.0", "1.2.0"}


def test_fresh_deploy_creates_resources_first_then_pulls_then_runs_in_dependency_order() -> None:
    steps, after = run_and_check(doc(web()), EngineState())
    assert show(steps) == [
        "create-network front",
        "create-volume data",
        f"pull {IMAGE}",
        "create web-lyon-1-0-0-db",
        "create web-lyon-1-0-0-server",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-server",
    ]
    server = by_name(after)["hedgerow-pi-1-web-lyon-1-0-0-server"]
    assert (server.application, server.release, server.container) == ("web", "1.0.0", "server")
    assert server.up and server.networks == {net("front")} and server.volumes == {net("data")}


def test_fresh_stopped_deployment_is_created_but_not_started() -> None:
    steps, after = run_and_check(doc(web(state="Stopped")), EngineState(images=frozenset([IMAGE])))
    assert [s.kind for s in steps] == ["create-network", "create-volume", "create", "create"]
    assert not any(c.up for c in after.containers)


def test_start_again_in_dependency_order() -> None:
    steps, _ = run_and_check(doc(web()), converged(doc(web(state="Stopped"))))
    assert show(steps) == ["start web-lyon-1-0-0-db", "start web-lyon-1-0-0-server"]


def test_upgrade_keeps_the_old_release_stopped_and_can_switch_back_without_recreating() -> None:
    engine = converged(doc(web()), images=(V1, V2))
    _, upgraded = run_and_check(doc(web("1.1.0", image=V2)), engine)
    states = {c.name: c.up for c in upgraded.containers}
    assert states == {
        "hedgerow-pi-1-web-lyon-1-0-0-db": False,
        "hedgerow-pi-1-web-lyon-1-0-0-server": False,
        "hedgerow-pi-1-web-lyon-1-1-0-db": True,
        "hedgerow-pi-1-web-lyon-1-1-0-server": True,
    }
    back, _ = run_and_check(doc(web()), upgraded)
    assert show(back) == [
        "stop web-lyon-1-1-0-server",
        "stop web-lyon-1-1-0-db",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-server",
    ]


def test_drift_a_container_removed_by_hand_is_recreated_alone() -> None:
    before = converged(doc(web()))
    engine = drop(before, "hedgerow-pi-1-web-lyon-1-0-0-db")
    steps, after = run_and_check(doc(web()), engine)
    assert show(steps) == ["create web-lyon-1-0-0-db", "start web-lyon-1-0-0-db"]
    server = "hedgerow-pi-1-web-lyon-1-0-0-server"
    assert by_name(after)[server].id == by_name(before)[server].id, "the sibling is kept"


def test_drift_of_a_stopped_release_recreates_the_container_without_starting_it() -> None:
    engine = drop(converged(doc(web(state="Stopped"))), "hedgerow-pi-1-web-lyon-1-0-0-server")
    steps, _ = run_and_check(doc(web(state="Stopped")), engine)
    assert show(steps) == ["create web-lyon-1-0-0-server"]


def test_drift_recreates_what_shares_the_network_namespace_of_a_recreated_container() -> None:
    """`networkMode: container:db` joins db's namespace: a new db leaves the sidecar in the
    old, dead one, so the sidecar is recreated with it; the server is left alone."""
    base = web()
    sidecar = ctr("sidecar", networkMode="container:db")
    release = msgspec.structs.replace(base, containers=[*base.containers, sidecar])
    before = converged(doc(release))
    created = [
        s.container
        for s in plan_steps(doc(release), EngineState())
        if isinstance(s, CreateContainer)
    ]
    assert [c.name for c in created] == ["db", "server", "sidecar"]
    assert created[2].network_mode == "container:hedgerow-pi-1-web-lyon-1-0-0-db", "its Docker name"
    engine = drop(before, "hedgerow-pi-1-web-lyon-1-0-0-db")
    steps, _ = run_and_check(doc(release), engine)
    assert show(steps) == [
        "stop web-lyon-1-0-0-sidecar",
        "remove web-lyon-1-0-0-sidecar",
        "create web-lyon-1-0-0-db",
        "create web-lyon-1-0-0-sidecar",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-sidecar",
    ]


def test_a_changed_release_is_still_redeployed_whole_even_with_a_container_missing() -> None:
    engine = drop(converged(doc(web())), "hedgerow-pi-1-web-lyon-1-0-0-db")
    steps, _ = run_and_check(doc(web(redeploy="again")), engine)
    assert show(steps) == [
        "rename web-lyon-1-0-0-server web-lyon-1-0-0-server_aside",
        "create web-lyon-1-0-0-db",
        "create web-lyon-1-0-0-server",
        "stop web-lyon-1-0-0-server_aside",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-server",
    ]


def test_a_redeploy_keeps_what_it_set_aside_while_judged_and_removes_it_once_ready() -> None:
    before = converged(doc(web()))
    want = doc(web(redeploy="again"))
    after = apply(before, plan_steps(want, before))
    old = {c.id for c in before.containers}
    aside = {c.name: c for c in after.containers if c.id in old}
    assert sorted(short(n) for n in aside) == [
        "web-lyon-1-0-0-db_aside",
        "web-lyon-1-0-0-server_aside",
    ]
    assert not any(c.up for c in aside.values()), "the old content is stopped, not removed"
    assert plan_steps(want, after, {"web"}) == [], "kept while the switch is judged"
    reports = release_reports(want, after)
    assert [(r.redeploy, [short(c.name) for c in r.containers]) for r in reports] == [
        ("again", ["web-lyon-1-0-0-db", "web-lyon-1-0-0-server"])
    ], "the report speaks of the new containers only"
    assert show(plan_steps(want, after)) == [
        "remove web-lyon-1-0-0-db_aside",
        "remove web-lyon-1-0-0-server_aside",
    ]


def test_a_failed_redeploy_switches_back_to_the_containers_it_set_aside() -> None:
    before = converged(doc(web()))
    after = apply(before, plan_steps(doc(web(redeploy="again")), before))
    back = rollback_steps(before, after, "web")
    assert show(back) == [
        "stop web-lyon-1-0-0-server",
        "stop web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-db_aside",
        "start web-lyon-1-0-0-server_aside",
    ]
    restored = apply(after, back)
    assert {c.id for c in restored.containers if c.up} == {c.id for c in before.containers}


def test_a_redeploy_back_to_the_content_set_aside_takes_it_back_as_it_is() -> None:
    """A revert while the switch is judged: the aside containers are the release again."""
    before = converged(doc(web()))
    after = apply(before, plan_steps(doc(web(redeploy="again")), before))
    after = apply(after, rollback_steps(before, after, "web"))
    steps, settled = run_and_check(doc(web()), after)
    assert show(steps) == ["remove web-lyon-1-0-0-db", "remove web-lyon-1-0-0-server"]
    assert {c.id for c in settled.containers} == {c.id for c in before.containers}


def test_a_second_redeploy_keeps_the_running_content_aside_and_drops_the_failed_one() -> None:
    before = converged(doc(web()))
    after = apply(before, plan_steps(doc(web(redeploy="r2")), before))
    after = apply(after, rollback_steps(before, after, "web"))  # r2 failed: the first runs
    steps, settled = run_and_check(doc(web(redeploy="r3")), after)
    assert show(steps) == [
        "remove web-lyon-1-0-0-db",
        "remove web-lyon-1-0-0-server",
        "create web-lyon-1-0-0-db",
        "create web-lyon-1-0-0-server",
        "stop web-lyon-1-0-0-server_aside",
        "stop web-lyon-1-0-0-db_aside",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-server",
    ]
    assert {c.redeploy for c in settled.containers} == {"r3"}


def test_drift_a_network_removed_by_hand_recreates_it_and_the_containers_on_it() -> None:
    engine = converged(doc(web()))
    engine = EngineState(engine.containers, frozenset(), engine.volumes, engine.images)
    steps, _ = run_and_check(doc(web()), engine)
    assert show(steps)[0] == "create-network front"
    assert [s.kind for s in steps].count("create") == 2


def test_drift_a_network_only_one_container_uses_recreates_that_one_only() -> None:
    base = web()
    server, db = base.containers
    release = msgspec.structs.replace(
        base,
        containers=[msgspec.structs.replace(server, networks=["front", "edge"]), db],
        networks=[*base.networks, Network(name="edge")],
    )
    engine = converged(doc(release))
    engine = EngineState(
        engine.containers, frozenset({net("front")}), engine.volumes, engine.images
    )
    steps, _ = run_and_check(doc(release), engine)
    assert show(steps) == [
        "create-network edge",
        "stop web-lyon-1-0-0-server",
        "remove web-lyon-1-0-0-server",
        "create web-lyon-1-0-0-server",
        "start web-lyon-1-0-0-server",
    ]


def test_a_stale_container_holding_a_name_is_removed_before_the_name_is_reused() -> None:
    squatter = ContainerState(
        "hedgerow-pi-1-web-lyon-1-0-0-db", "other", "9.9.9", "db", "web-lyon", "exited", id="x"
    )
    engine = EngineState((squatter,), images=frozenset([IMAGE]))
    steps, _ = run_and_check(doc(web()), engine)
    assert show(steps)[:3] == [
        "create-network front",
        "create-volume data",
        "remove web-lyon-1-0-0-db",
    ]


def test_delete_keeps_a_network_another_deployment_uses_and_volumes_by_policy() -> None:
    cam = web(app="cam", networks=("front", "cams"), volumes=(("clips", "Delete"),))
    both = doc(web(volumes=(("data", "Retain"), ("cache", "Delete"))), cam)
    steps, after = run_and_check(doc(cam), converged(both))
    assert show(steps) == [
        "stop web-lyon-1-0-0-server",
        "stop web-lyon-1-0-0-db",
        "remove web-lyon-1-0-0-db",
        "remove web-lyon-1-0-0-server",
        "remove-volume cache",
    ]
    assert after.networks == {net("front"), net("cams")}
    assert after.volumes == {net("data"): "Retain", net("clips"): "Delete"}


def test_a_network_still_used_by_a_kept_old_release_stays() -> None:
    engine = converged(doc(web(networks=("front", "old"))))
    steps, after = run_and_check(doc(web("1.1.0", networks=("front",))), engine)
    assert not any(isinstance(s, RemoveNetwork) for s in steps)
    assert net("old") in after.networks


def test_removing_the_application_frees_what_only_it_used() -> None:
    engine = converged(doc(web(networks=("front", "old"))))
    _, upgraded = run_and_check(doc(web("1.1.0", networks=("front",))), engine)
    steps, after = run_and_check(doc(), upgraded)
    assert {s.name for s in steps if isinstance(s, RemoveNetwork)} == {net("front"), net("old")}
    assert after.containers == () and after.volumes == {net("data"): "Retain"}


def test_pulls_carry_the_credentials_sent_for_that_image_and_never_show_them() -> None:
    private = "127.0.0.1:5000/private/app:1"
    auth = RegistryAuth(image=private, serveraddress="127.0.0.1:5000", username="u", password="pw")
    desired = doc(web(image=private), web(app="cam"), auth=(auth,))
    pulls = [s for s in plan_steps(desired, EngineState()) if isinstance(s, PullImage)]
    assert [(p.image, p.auth) for p in pulls] == [(IMAGE, None), (private, auth)]
    assert "pw" not in repr(pulls) and "pw" not in pulls[1].describe()


def test_an_image_present_under_its_familiar_name_is_not_pulled() -> None:
    engine = EngineState(images=frozenset(["busybox:latest"]))
    desired = doc(web(image="docker.io/library/busybox"))
    assert not any(isinstance(s, PullImage) for s in plan_steps(desired, engine))


@pytest.mark.parametrize(
    ("reference", "familiar"),
    [
        ("busybox", "busybox:latest"),
        ("docker.io/library/busybox:1.36", "busybox:1.36"),
        ("index.docker.io/acme/app", "acme/app:latest"),
        ("library/busybox:1", "busybox:1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("registry.example/a/b:2", "registry.example/a/b:2"),
        ("busybox:1@sha256:" + "a" * 64, "busybox@sha256:" + "a" * 64),
        ("127.0.0.1:5000/app@sha256:" + "b" * 64, "127.0.0.1:5000/app@sha256:" + "b" * 64),
    ],
)
def test_normalise_image(reference: str, familiar: str) -> None:
    assert normalise_image(reference) == familiar


def test_container_names_are_valid_and_distinct_when_cut() -> None:
    assert (
        container_name("pi-1", "web-lyon", "1.2.3-rc.1+b7", "server")
        == "hedgerow-pi-1-web-lyon-1-2-3-rc-1-b7-server"
    )
    assert container_name("", "web-lyon", "1.0.0", "db") == "hedgerow-web-lyon-1-0-0-db"
    long_a = container_name("pi-1", "d" * 60, "1.0.0", "server")
    long_b = container_name("pi-1", "d" * 60, "1.0.1", "server")
    assert len(long_a) == len(long_b) == 63 and long_a != long_b
    assert long_a[0].isalnum() and set(long_a) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_dependency_order_puts_dependencies_first_and_survives_a_cycle() -> None:
    chain = [ctr("c", dependsOn=["b"]), ctr("b", dependsOn=["a"]), ctr("a")]
    assert [c.name for c in dependency_order(chain)] == ["a", "b", "c"]
    cycle = [ctr("x", dependsOn=["y"]), ctr("y", dependsOn=["x"]), ctr("z")]
    assert sorted(c.name for c in dependency_order(cycle)) == ["x", "y", "z"]


def test_rollback_after_a_failed_upgrade_starts_the_old_release_again() -> None:
    before = converged(doc(web()), images=(V1, V2))
    steps = plan_steps(doc(web("1.1.0", image=V2)), before)
    first_start = next(i for i, s in enumerate(steps) if isinstance(s, StartContainer))
    now = apply(before, steps[: first_start + 1])  # the new db started, then the server failed
    back = rollback_steps(before, now, "web")
    assert show(back) == [
        "stop web-lyon-1-1-0-db",
        "start web-lyon-1-0-0-db",
        "start web-lyon-1-0-0-server",
    ]
    restored = apply(now, back)
    assert {c.name for c in restored.containers if c.up} == {
        c.name for c in before.containers if c.up
    }


def test_release_reports_read_like_the_controllers_observed_releases() -> None:
    engine = converged(doc(web()), images=(V1, V2))
    _, upgraded = run_and_check(doc(web("1.1.0", image=V2, redeploy="t")), engine)
    drifted = drop(upgraded, "hedgerow-pi-1-web-lyon-1-1-0-db")
    reports = release_reports(doc(web("1.1.0", image=V2, redeploy="t")), drifted)
    assert [(r.release, r.running, r.complete, r.redeploy, r.digest) for r in reports] == [
        ("1.0.0", False, True, None, "d1"),
        ("1.1.0", False, False, "t", "d1"),
    ]
    assert [(c.name, c.state) for c in reports[1].containers] == [
        ("hedgerow-pi-1-web-lyon-1-1-0-server", "running"),
        ("hedgerow-pi-1-web-lyon-1-1-0-db", "missing"),
    ]
    assert all(c.image_present for r in reports for c in r.containers)


def test_present_images_include_desired_references_as_written() -> None:
    engine = EngineState(images=frozenset(["busybox:latest"]))
    desired = doc(web(image="docker.io/library/busybox"))
    assert present_images(desired, engine) == ["busybox:latest", "docker.io/library/busybox"]


def test_dependency_levels_group_what_depends_on_nothing_at_the_same_level() -> None:
    release = [
        ctr("api", dependsOn=["db", "cache"]),
        ctr("db"),
        ctr("cache"),
        ctr("proxy", dependsOn=["api"]),
        ctr("sidecar", networkMode="container:api"),
        ctr("metrics"),
    ]
    assert dependency_levels(release) == {
        "db": 0,
        "cache": 0,
        "metrics": 0,
        "api": 1,
        "proxy": 2,
        "sidecar": 2,
    }
    cycle = [ctr("x", dependsOn=["y"]), ctr("y", dependsOn=["x"])]
    assert sorted(dependency_levels(cycle).values()) == [0, 1]


def wide(state: str = "Running", release: str = "1.0.0", image: str = IMAGE) -> Deployment:
    """api needs db and cache; proxy and sidecar need api; metrics needs nothing."""
    base = web(release, state=state, image=image)
    return msgspec.structs.replace(
        base,
        containers=[
            ctr("api", image, dependsOn=["db", "cache"]),
            ctr("db", image),
            ctr("cache", image),
            ctr("proxy", image, dependsOn=["api"]),
            ctr("sidecar", image, networkMode="container:api"),
            ctr("metrics", image),
        ],
    )


def test_stops_run_a_dependency_level_at_a_time_dependents_first() -> None:
    steps, _ = run_and_check(doc(wide("Stopped")), converged(doc(wide())))
    assert show(steps) == [
        "stop web-lyon-1-0-0-proxy, web-lyon-1-0-0-sidecar",
        "stop web-lyon-1-0-0-api",
        "stop web-lyon-1-0-0-cache, web-lyon-1-0-0-db, web-lyon-1-0-0-metrics",
    ]
    assert all(isinstance(s, StopContainers) for s in steps)
    assert {s.timeout for g in steps if isinstance(g, StopContainers) for s in g.stops} == {None}


def test_an_upgrade_stops_the_old_release_by_levels_and_deletes_stop_before_removing() -> None:
    steps, _ = run_and_check(doc(wide("Running", "1.1.0", V2)), converged(doc(wide()), (V1, V2)))
    stops = [line for line in show(steps) if line.startswith("stop")]
    assert stops == [
        "stop web-lyon-1-0-0-proxy, web-lyon-1-0-0-sidecar",
        "stop web-lyon-1-0-0-api",
        "stop web-lyon-1-0-0-cache, web-lyon-1-0-0-db, web-lyon-1-0-0-metrics",
    ]
    steps, _ = run_and_check(doc(), converged(doc(wide())))
    assert [s.kind for s in steps[:3]] == ["stop"] * 3 and steps[3].kind == "remove"


def test_containers_of_an_older_agent_without_levels_stop_one_at_a_time() -> None:
    engine = converged(doc(wide()))
    unlabelled = tuple(replace(c, level=None) for c in engine.containers)
    engine = EngineState(unlabelled, engine.networks, engine.volumes, engine.images)
    steps, _ = run_and_check(doc(wide("Running", "1.1.0")), engine)
    assert [len(s.stops) for s in steps if isinstance(s, StopContainers)] == [1] * 6
    assert show([s for s in steps if isinstance(s, StopContainers)])[0] == (
        "stop web-lyon-1-0-0-metrics"  # the last in dependency order first
    )


def test_names_on_the_engine_carry_the_device() -> None:
    steps = plan_steps(doc(web()), EngineState())
    assert [s.network.name for s in steps if isinstance(s, CreateNetwork)] == [
        "hedgerow-pi-1-front"
    ]
    assert [s.volume.name for s in steps if isinstance(s, CreateVolume)] == ["hedgerow-pi-1-data"]
    server = next(
        s for s in steps if isinstance(s, CreateContainer) and s.container.name == "server"
    )
    assert server.name == "hedgerow-pi-1-web-lyon-1-0-0-server"
    assert server.container.networks == ["hedgerow-pi-1-front"]
    assert [m.volume for m in server.container.volumes] == ["hedgerow-pi-1-data"]
    assert server.labels()["hedgerow.device"] == "pi-1"
    assert {s.device for s in steps if isinstance(s, CreateNetwork | CreateVolume)} == {"pi-1"}
    other = plan_steps(msgspec.structs.replace(doc(web()), device="pi-2"), EngineState())
    mine = {s.name for s in steps if isinstance(s, CreateContainer)}
    theirs = {s.name for s in other if isinstance(s, CreateContainer)}
    assert not mine & theirs, "the same deployment on two devices: distinct containers"
    assert scoped_name("d" * 63, "backend") != scoped_name("d" * 63, "frontend")
    assert len(scoped_name("d" * 63, "backend")) == 63


def test_an_older_agents_containers_network_and_volume_are_adopted_as_they_are() -> None:
    """Made before device labels (no device: the old names); `Engine.read` adopts them, and
    the upgraded agent leaves them running, under their names: the volume holds the data."""
    old = apply(
        EngineState(images=frozenset([IMAGE, V2])), plan_steps(doc_of("", web()), EngineState())
    )
    assert {c.name for c in old.containers} == {
        "hedgerow-web-lyon-1-0-0-db",
        "hedgerow-web-lyon-1-0-0-server",
    }
    assert old.networks == {"front"} and old.volumes == {"data": "Retain"}
    adopted = replace(old, adopted=frozenset({"front", "data"}))
    assert plan_steps(doc(web()), adopted) == [], "nothing restarted"
    steps, after = run_and_check(doc(web(state="Stopped")), adopted)
    assert show(steps) == [
        "stop hedgerow-web-lyon-1-0-0-server",
        "stop hedgerow-web-lyon-1-0-0-db",
    ]
    steps, after = run_and_check(doc(web("1.1.0", image=V2)), adopted)
    new = by_name(after)["hedgerow-pi-1-web-lyon-1-1-0-server"]
    assert new.networks == {"front"} and new.volumes == {"data"}, "the adopted ones, by name"
    assert not any(isinstance(s, CreateNetwork | CreateVolume) for s in steps)
    unadopted = replace(old, images=frozenset([IMAGE]))  # unlabelled and not adopted: not ours
    names = [
        s.network.name for s in plan_steps(doc(web()), unadopted) if isinstance(s, CreateNetwork)
    ]
    assert names == ["hedgerow-pi-1-front"]


def doc_of(device: str, *deployments: Deployment) -> DesiredDocument:
    return msgspec.structs.replace(doc(*deployments), device=device)


# -- converge: one pass with failures, on a model engine --------------------------------------


def test_converge_switches_back_when_the_new_release_crashes_within_its_grace() -> None:
    engine = ModelEngine(
        converged(doc(web()), images=(V1, V2)),
        {},
        crash={"start web-lyon-1-1-0-server": "exited with code 3"},
    )
    upgrade = doc(web("1.1.0", image=V2), web(app="cam"))
    first = converge(engine, upgrade)
    assert first.ok and set(first.switched) == {"web", "cam"}  # started; not waited for
    assert engine.next_check() == 0.0
    outcome = converge(engine, upgrade, switched=first.switched)
    assert [(f.application, f.deployment, f.message, f.exited) for f in outcome.failures] == [
        ("web", "web-lyon", "exited with code 3", True)
    ]
    up = {c.name for c in engine.state.containers if c.up}
    assert up == {
        "hedgerow-pi-1-web-lyon-1-0-0-db",
        "hedgerow-pi-1-web-lyon-1-0-0-server",
        "hedgerow-pi-1-cam-lyon-1-0-0-db",
        "hedgerow-pi-1-cam-lyon-1-0-0-server",
    }
    assert show(outcome.rolled_back["web"])[0] == "stop web-lyon-1-1-0-db"
    assert "web" not in outcome.switched and all(s.application != "web" for s in outcome.done)


def test_converge_switches_back_when_a_start_fails_outright() -> None:
    engine = ModelEngine(
        converged(doc(web()), images=(V1, V2)),
        {"start web-lyon-1-1-0-server": EngineError("starting: bind source path does not exist")},
    )
    outcome = converge(engine, doc(web("1.1.0", image=V2)))
    assert [f.message for f in outcome.failures] == ["starting: bind source path does not exist"]
    up = {c.name for c in engine.state.containers if c.up}
    assert up == {"hedgerow-pi-1-web-lyon-1-0-0-db", "hedgerow-pi-1-web-lyon-1-0-0-server"}
    assert not outcome.switched


def test_converge_a_failed_pull_blocks_only_the_applications_needing_the_image() -> None:
    engine = ModelEngine(
        converged(doc(web(), web(app="cam"))),
        {f"pull {V2}": PullError("pulling local/app:2: no basic auth credentials")},
    )
    outcome = converge(engine, doc(web("1.1.0", image=V2), web(app="cam", state="Stopped")))
    assert [f.message for f in outcome.failures] == [
        "pulling local/app:2: no basic auth credentials"
    ]
    assert all(s.application == "web" for s in outcome.skipped) and outcome.skipped
    up = {c.name for c in engine.state.containers if c.up}
    assert up == {"hedgerow-pi-1-web-lyon-1-0-0-db", "hedgerow-pi-1-web-lyon-1-0-0-server"}


def test_converge_without_failures_reaches_the_desired_state() -> None:
    engine = ModelEngine(EngineState(), {})
    outcome = converge(engine, doc(web()))
    assert outcome.ok and outcome.done == outcome.planned and not outcome.skipped
    assert plan_steps(doc(web()), engine.state) == []


# -- properties from random engine states ------------------------------------------------------

APPS = ["web", "cam", "db"]
RELEASES = ["1.0.0", "1.1.0", "2.0.0-rc.1"]
NAMES = ["a", "b", "c"]
NETWORKS = ["front", "back"]
VOLUMES = ["data", "logs"]
IMAGES = [V1, V2, "busybox"]
STATES = ["created", "running", "exited", "restarting", "paused", "dead"]
# on the engine: this device's names, and an older agent's (adopted, or not when unlabelled)
ON_ENGINE_NETWORKS = [*NETWORKS, *(net(n) for n in NETWORKS)]
ON_ENGINE_VOLUMES = [*VOLUMES, *(net(v) for v in VOLUMES)]


@st.composite
def deployments(draw: st.DrawFn, app: str) -> Deployment:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    networks = draw(st.lists(st.sampled_from(NETWORKS), unique=True, max_size=2))
    volumes = draw(st.lists(st.sampled_from(VOLUMES), unique=True, max_size=2))
    containers = []
    for i, name in enumerate(names):
        depends = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        containers.append(
            ctr(
                name,
                draw(st.sampled_from(IMAGES)),
                dependsOn=depends,
                networks=draw(st.lists(st.sampled_from(networks), unique=True)) if networks else [],
                volumes=[
                    Mount(volume=v, target=f"/{v}")
                    for v in draw(st.lists(st.sampled_from(volumes), unique=True))
                ]
                if volumes
                else [],
            )
        )
    draw(st.randoms()).shuffle(containers)  # the release's order need not be dependency order
    return Deployment(
        deployment=draw(st.sampled_from([f"{app}-lyon", f"{app}-paris"])),
        application=app,
        release=draw(st.sampled_from(RELEASES)),
        state=draw(st.sampled_from(["Running", "Stopped"])),
        redeploy=draw(st.sampled_from([None, "r1"])),
        digest=draw(st.sampled_from(["d1", "d2"])),
        containers=containers,
        networks=[Network(name=n) for n in networks],
        volumes=[
            Volume(name=v, deletion_policy=draw(st.sampled_from(["Retain", "Delete"])))
            for v in volumes
        ],
    )


@st.composite
def desired_documents(draw: st.DrawFn) -> DesiredDocument:
    apps = draw(st.lists(st.sampled_from(APPS), unique=True, max_size=3))
    wanted = [draw(deployments(app)) for app in apps]
    names = [d.deployment for d in wanted]
    if len(set(names)) != len(names):  # deployment names are unique in a repository
        wanted = [msgspec.structs.replace(d, deployment=f"{d.application}-lyon") for d in wanted]
    return doc(*wanted)


@st.composite
def engine_states(draw: st.DrawFn) -> EngineState:
    containers: dict[str, ContainerState] = {}
    for i in range(draw(st.integers(0, 8))):
        app = draw(st.sampled_from([*APPS, "gone"]))
        release = draw(st.sampled_from(RELEASES))
        name = draw(st.sampled_from(NAMES))
        deployment = draw(st.sampled_from([f"{app}-lyon", f"{app}-paris", "web-lyon"]))
        docker_name = draw(  # this device's name, an older agent's, or another
            st.sampled_from(
                [
                    container_name(DEVICE, deployment, release, name),
                    container_name("", deployment, release, name),
                    f"stray-{i}",
                ]
            )
        )
        containers[docker_name] = ContainerState(
            name=docker_name,
            application=app,
            release=release,
            container=name,
            deployment=deployment,
            state=draw(st.sampled_from(STATES)),
            digest=draw(st.sampled_from([None, "d1", "d2"])),
            redeploy=draw(st.sampled_from([None, "r1", "r0"])),
            networks=frozenset(draw(st.lists(st.sampled_from([*ON_ENGINE_NETWORKS, "bridge"])))),
            volumes=frozenset(draw(st.lists(st.sampled_from(ON_ENGINE_VOLUMES)))),
            id=f"id-{i}",
        )
    networks = frozenset(draw(st.lists(st.sampled_from([*ON_ENGINE_NETWORKS, net("old")]))))
    volumes = draw(
        st.dictionaries(
            st.sampled_from([*ON_ENGINE_VOLUMES, net("old")]), st.sampled_from(["Retain", "Delete"])
        )
    )
    legacy = {n for n in [*networks, *volumes] if not n.startswith("hedgerow-")}
    return EngineState(
        tuple(containers.values()),
        networks,
        volumes,
        frozenset(draw(st.lists(st.sampled_from(IMAGES)))),
        frozenset(draw(st.sets(st.sampled_from(sorted(legacy)))) if legacy else ()),
    )


PHASE = {
    "create-network": 0,
    "create-volume": 0,
    "pull": 1,
    "remove-network": 3,
    "remove-volume": 3,
}


@settings(max_examples=examples(300), deadline=None)
@given(desired_documents(), engine_states())
def test_one_pass_converges_from_any_engine_state(
    desired: DesiredDocument, engine: EngineState
) -> None:
    steps, after = run_and_check(desired, engine)
    phases = [PHASE.get(s.kind, 2) for s in steps]
    assert phases == sorted(phases), "resources, then downloads, then switches, then clean-up"

    for want in desired.deployments:
        current = [c for c in after.containers if c.application == want.application]
        expected = {
            c.name: container_name(DEVICE, want.deployment, want.release, c.name)
            for c in want.containers
        }
        fresh = {c.container: c.name for c in current if c.release == want.release}
        assert fresh.keys() == expected.keys()
        for name, found in fresh.items():  # an older agent's container keeps its name
            legacy = container_name("", want.deployment, want.release, name)
            assert found in (expected[name], legacy)
        for c in current:
            if c.release != want.release:
                assert not c.up, "an old release is kept stopped"
            else:
                assert c.up == (want.state == "Running")
                assert (c.redeploy, c.deployment) == (want.redeploy, want.deployment)
                assert c.digest in (None, want.digest), "no digest label: unknown, as in plan.py"
        order = [c.name for c in dependency_order(want.containers)]
        created = [
            s.container.name
            for s in steps
            if isinstance(s, CreateContainer) and s.application == want.application
        ]
        started = [
            by_name(after)[s.name].container
            for s in steps
            if isinstance(s, StartContainer) and s.application == want.application
        ]
        assert created == [n for n in order if n in created]
        assert started == [n for n in order if n in started]

    desired_apps = {d.application for d in desired.deployments}
    assert all(c.application in desired_apps for c in after.containers)
    for volume, policy in engine.volumes.items():
        if policy == "Retain":
            assert volume in after.volumes, "data is kept unless the policy says Delete"
    in_use = {n for c in after.containers for n in c.networks}
    assert in_use & engine.networks <= after.networks
    for step in steps:
        if isinstance(step, RemoveVolume):
            assert engine.volumes[step.name] == "Delete"
            assert all(step.name not in c.volumes for c in after.containers)
    images = {normalise_image(i) for i in after.images}
    assert all(
        normalise_image(c.image) in images
        for s in steps
        if isinstance(s, CreateContainer)
        for c in [s.container]
    )


@settings(max_examples=examples(100), deadline=None)
@given(desired_documents(), engine_states(), st.data())
def test_a_pass_cut_short_anywhere_is_finished_by_the_next_one(
    desired: DesiredDocument, engine: EngineState, data: st.DataObject
) -> None:
    steps = plan_steps(desired, engine)
    cut = data.draw(st.integers(0, len(steps)))
    interrupted = apply(engine, steps[:cut])  # power cut, crash, engine error: plan again
    run_and_check(desired, interrupted)


@settings(max_examples=examples(100), deadline=None)
@given(desired_documents(), engine_states())
def test_removals_only_touch_what_hedgerow_planned_to_remove(
    desired: DesiredDocument, engine: EngineState
) -> None:
    steps = plan_steps(desired, engine)
    removed = [s.name for s in steps if isinstance(s, RemoveContainer)]
    assert len(removed) == len(set(removed))
    assert set(removed) <= {c.name for c in engine.containers}
    after_removal = {s.name: i for i, s in enumerate(steps) if isinstance(s, RemoveContainer)}
    for i, step in enumerate(steps):
        names = step.names if isinstance(step, StopContainers) else ()
        if isinstance(step, StopContainer | StartContainer):
            names = (step.name,)
        for name in names:
            if name in after_removal:
                assert i < after_removal[name] or any(
                    isinstance(s, CreateContainer) and s.name == name for s in steps[:i]
                ), "nothing is stopped or started after its removal, unless made again"


# -- the saved desired document -----------------------------------------------------------------


def test_saved_document_drops_credentials_and_loads_back(tmp_path: Path) -> None:
    auth = RegistryAuth(image=IMAGE, serveraddress="r:5000", username="robot", password="s3cret!")
    document = doc(web(), auth=(auth,))
    path = save_desired(tmp_path / "state", document)
    text = path.read_text()
    assert "s3cret!" not in text and "robot" not in text
    assert json.loads(text)["registryAuth"] == []
    assert load_desired(tmp_path / "state") == msgspec.structs.replace(document, registry_auth=[])
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [FILE_NAME]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_loading_nothing_or_a_damaged_file(tmp_path: Path) -> None:
    assert load_desired(tmp_path) is None
    (tmp_path / FILE_NAME).write_bytes(b'{"device": "pi-1", "revis')
    assert load_desired(tmp_path) is None
    assert (tmp_path / f"{FILE_NAME}.invalid").exists() and not (tmp_path / FILE_NAME).exists()


def test_a_save_replaces_the_previous_document_whole(tmp_path: Path) -> None:
    save_desired(tmp_path, doc(web()))
    save_desired(tmp_path, doc())
    assert load_desired(tmp_path) == doc()


# -- waiting for a dependency's health or completion ------------------------------------------


def staged(condition: str) -> DesiredDocument:
    """`app` waits for `dep` to be healthy or to complete; `tail` only for `app` to start."""
    policy = "no" if condition == "completedSuccessfully" else "unless-stopped"
    return doc(
        msgspec.convert(
            {
                "deployment": "stack",
                "application": "stack",
                "release": "1.0.0",
                "state": "Running",
                "digest": "d1",
                "containers": [
                    ctr("dep", restartPolicy=policy),
                    ctr("app", dependsOn=["dep"], waitFor={"dep": condition}),
                    ctr("tail", dependsOn=["app"]),
                ],
            },
            Deployment,
        )
    )


def with_state(engine: EngineState, container: str, **changes: object) -> EngineState:
    found = tuple(
        replace(c, **changes) if c.container == container else c  # type: ignore[arg-type]
        for c in engine.containers
    )
    return replace(engine, containers=found)


def test_a_container_waiting_for_health_starts_at_the_pass_that_finds_it_healthy() -> None:
    desired = staged("healthy")
    first = plan_steps(desired, EngineState(images=frozenset({IMAGE})))
    assert [s for s in show(first) if s.startswith("start")] == ["start stack-1-0-0-dep"]
    engine = apply(EngineState(images=frozenset({IMAGE})), first)
    assert plan_steps(desired, with_state(engine, "dep", health="starting")) == []
    healthy = with_state(engine, "dep", health="healthy")
    assert show(plan_steps(desired, healthy)) == ["start stack-1-0-0-app", "start stack-1-0-0-tail"]


def test_a_job_is_started_once_and_its_dependents_after_it_completed() -> None:
    desired = staged("completedSuccessfully")
    first = plan_steps(desired, EngineState(images=frozenset({IMAGE})))
    (start,) = [s for s in first if isinstance(s, StartContainer)]
    assert start.job and short(start.name) == "stack-1-0-0-dep"
    engine = apply(EngineState(images=frozenset({IMAGE})), first)
    failed = with_state(engine, "dep", state="exited", exit_code=1)
    assert plan_steps(desired, failed) == [], "a failed job is not run again: its release fails"
    done = with_state(engine, "dep", state="exited", exit_code=0)
    assert show(plan_steps(desired, done)) == ["start stack-1-0-0-app", "start stack-1-0-0-tail"]
    running = apply(done, plan_steps(desired, done))
    assert plan_steps(desired, running) == [], "the job done stays as it ended"


def test_a_job_that_completed_does_not_keep_its_release_from_being_ready() -> None:
    from agent.readiness import blocking

    desired = staged("completedSuccessfully")
    engine = apply(EngineState(images=frozenset({IMAGE})), plan_steps(desired, EngineState()))
    done = with_state(engine, "dep", state="exited", exit_code=0)
    done = apply(done, plan_steps(desired, done))
    want = desired.deployments[0]
    assert blocking(done.containers, 3, {"dep"}) is None
    assert blocking(done.containers, 3) is not None, "without knowing it is a job"
    failed = with_state(done, "dep", exit_code=2)
    assert blocking(failed.containers, 3, {"dep"}) is not None
    assert one_shots(want) == {"dep"}


def test_a_stop_grace_period_is_the_stop_s_timeout() -> None:
    desired = doc(msgspec.structs.replace(web(), containers=[ctr("db", stopGracePeriod="1500ms")]))
    engine = apply(EngineState(images=frozenset({IMAGE})), plan_steps(desired, EngineState()))
    stopped = msgspec.structs.replace(desired.deployments[0], state="Stopped")
    (stop,) = [s for s in plan_steps(doc(stopped), engine) if isinstance(s, StopContainers)]
    assert [s.timeout for s in stop.stops] == [2], "whole seconds, rounded up, as Docker counts"
