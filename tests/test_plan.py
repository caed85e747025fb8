"""The plan, table-driven and by property: idempotent, convergent, silent when nothing differs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.desired import DesiredDeployment
from reconciler.core.plan import ObservedRelease, apply, plan_device


def want(
    release: str = "1.0.0",
    state: str = "Running",
    redeploy: str | None = None,
    app: str = "web",
    digest: str = "d1",
) -> DesiredDeployment:
    return DesiredDeployment(f"{app}-dep", app, release, state, redeploy, digest)  # type: ignore[arg-type]


def seen(
    release: str = "1.0.0",
    running: bool = True,
    complete: bool = True,
    redeploy: str | None = None,
    app: str = "web",
    digest: str | None = "d1",
) -> ObservedRelease:
    return ObservedRelease(app, release, f"{app}-dep", running, complete, redeploy, digest)


CASES: list[
    tuple[
        str,
        list[DesiredDeployment],
        list[ObservedRelease],
        list[tuple[str, str | None, str | None]],
    ]
] = [
    ("new deployment runs", [want()], [], [("deploy", None, "1.0.0"), ("start", None, "1.0.0")]),
    (
        "new stopped deployment is only created",
        [want(state="Stopped")],
        [],
        [("deploy", None, "1.0.0")],
    ),
    ("matching device: nothing", [want()], [seen()], []),
    ("matching stopped: nothing", [want(state="Stopped")], [seen(running=False)], []),
    ("stop", [want(state="Stopped")], [seen()], [("stop", "1.0.0", "1.0.0")]),
    ("start", [want()], [seen(running=False)], [("start", "1.0.0", "1.0.0")]),
    ("upgrade", [want("1.1.0")], [seen()], [("upgrade", "1.0.0", "1.1.0")]),
    ("upgrade keeps old: nothing more", [want("1.1.0")], [seen(running=False), seen("1.1.0")], []),
    (
        "switch back to an older release still on the device",
        [want("1.0.0")],
        [seen(running=False), seen("1.1.0")],
        [("upgrade", "1.1.0", "1.0.0")],
    ),
    (
        "upgrade from the running one",
        [want("2.0.0")],
        [seen(), seen("1.1.0", running=False)],
        [("upgrade", "1.0.0", "2.0.0")],
    ),
    ("redeploy requested", [want(redeploy="a")], [seen()], [("redeploy", "1.0.0", "1.0.0")]),
    ("redeploy token unchanged: nothing", [want(redeploy="a")], [seen(redeploy="a")], []),
    (
        "drift: container removed by hand",
        [want()],
        [seen(complete=False)],
        [("redeploy", "1.0.0", "1.0.0")],
    ),
    (
        "drift of a stopped deployment",
        [want(state="Stopped")],
        [seen(running=False, complete=False)],
        [("redeploy", "1.0.0", "1.0.0")],
    ),
    (
        "release content changed in place",
        [want(digest="d2")],
        [seen()],
        [("redeploy", "1.0.0", "1.0.0")],
    ),
    ("unknown digest is not drift", [want(digest="d2")], [seen(digest=None)], []),
    ("delete", [], [seen()], [("delete", "1.0.0", None)]),
    (
        "delete names the running release",
        [],
        [seen("1.1.0"), seen(running=False)],
        [("delete", "1.1.0", None)],
    ),
]


@pytest.mark.parametrize(
    ("desired", "observed", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_table(
    desired: list[DesiredDeployment],
    observed: list[ObservedRelease],
    expected: list[tuple[str, str | None, str | None]],
) -> None:
    wanted = {d.application: d for d in desired}
    have: dict[str, list[ObservedRelease]] = {}
    for o in observed:
        have.setdefault(o.application, []).append(o)
    actions = plan_device(wanted, have)
    assert [(a.action, a.from_release, a.to_release) for a in actions] == expected
    assert all(a.reason for a in actions)
    assert plan_device(wanted, apply(wanted, have, actions)) == []


def test_deletes_come_first_and_applications_are_ordered() -> None:
    desired = {"b": want(app="b"), "a": want(app="a")}
    observed = {"z": [seen(app="z")], "a": [seen(app="a", running=False)]}
    actions = plan_device(desired, observed)
    assert [(a.action, a.application) for a in actions] == [
        ("delete", "z"),
        ("start", "a"),
        ("deploy", "b"),
        ("start", "b"),
    ]


def test_action_json_shape() -> None:
    (action,) = plan_device({"web": want("1.1.0")}, {"web": [seen()]})
    assert action.to_json() == {
        "action": "upgrade",
        "deployment": "web-dep",
        "application": "web",
        "from": "1.0.0",
        "to": "1.1.0",
        "reason": "release changed from 1.0.0 to 1.1.0",
    }


APPS = st.sampled_from(["a", "b", "c"])
VERSIONS = st.sampled_from(["1.0.0", "1.1.0", "2.0.0"])
TOKENS = st.sampled_from([None, "x", "y"])
DIGESTS = st.sampled_from(["d1", "d2"])

desired_devices = st.dictionaries(
    APPS,
    st.builds(
        lambda v, s, r, d: (v, s, r, d),
        VERSIONS,
        st.sampled_from(["Running", "Stopped"]),
        TOKENS,
        DIGESTS,
    ),
).map(lambda m: {app: want(v, s, r, app, d) for app, (v, s, r, d) in m.items()})


def _observed_for(app: str) -> st.SearchStrategy[list[ObservedRelease]]:
    release = st.builds(
        lambda v, run, c, r, d: seen(v, run, c, r, app, d),
        VERSIONS,
        st.booleans(),
        st.booleans(),
        TOKENS,
        st.sampled_from([None, "d1", "d2"]),
    )
    # a device holds each version at most once
    return st.lists(release, max_size=3, unique_by=lambda r: r.release)


observed_devices = st.dictionaries(APPS, st.just(0)).flatmap(
    lambda apps: st.fixed_dictionaries({app: _observed_for(app) for app in apps})
)


@given(desired_devices, observed_devices)
def test_applying_the_plan_converges_in_one_step(
    desired: dict[str, DesiredDeployment], observed: dict[str, list[ObservedRelease]]
) -> None:
    after = apply(desired, observed, plan_device(desired, observed))
    assert plan_device(desired, after) == []
    for app, want_ in desired.items():
        current = [r for r in after[app] if r.release == want_.release]
        assert len(current) == 1 and current[0].complete
        assert current[0].running == (want_.state == "Running")
        assert not any(r.running for r in after[app] if r.release != want_.release)
    assert {app for app, releases in after.items() if releases} == set(desired)


@given(desired_devices, observed_devices)
def test_plan_is_deterministic_and_touches_only_what_differs(
    desired: dict[str, DesiredDeployment], observed: dict[str, list[ObservedRelease]]
) -> None:
    actions = plan_device(desired, observed)
    assert actions == plan_device(desired, observed)
    for action in actions:
        if action.action != "delete":
            assert action.application in desired
        else:
            assert action.application not in desired and observed[action.application]
