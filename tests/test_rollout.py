"""The pure rollout step: waves from the repository, and what moves when, as tables and as
properties over generated fleets and histories."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.rollout import (
    OUTCOMES,
    REST,
    Outcome,
    RolloutState,
    Step,
    Wave,
    begin,
    limits,
    stable_order,
    step,
    waves,
)
from reconciler.manifests.model.deployment import Rollout
from tests.support.properties import examples


def rollout(**fields: Any) -> Rollout:
    return Rollout.model_validate(fields)


def fleet(n: int, **labels: dict[str, str]) -> dict[str, dict[str, str]]:
    """Devices d00..d(n-1) with no labels, but those given by name."""
    return {f"d{i:02}": labels.get(f"d{i:02}", {}) for i in range(n)}


def run(
    spec: Rollout,
    plan: tuple[Wave, ...],
    outcomes: Mapping[str, str],
    state: RolloutState,
    now: float = 0.0,
) -> Step:
    """`step`, with outcomes written as plain strings in the tables."""
    assert set(outcomes.values()) <= set(OUTCOMES)
    return step(spec, plan, cast(Mapping[str, Outcome], outcomes), state, now)


def moved_to(state: RolloutState, outcome: Outcome) -> dict[str, Outcome]:
    return dict.fromkeys(state.moved, outcome)


# -- waves -------------------------------------------------------------------------------------


def test_without_a_rollout_every_device_is_one_wave() -> None:
    (only,) = waves(None, fleet(5))
    assert only.name == REST and sorted(only.devices) == sorted(fleet(5))


def test_waves_take_a_selector_then_a_percent_of_all_then_the_rest() -> None:
    targets = fleet(20, d03={"ring": "canary"}, d11={"ring": "canary"})
    spec = rollout(
        waves=[
            {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}},
            {"name": "early", "percent": 25},
            {"name": "rest"},
        ]
    )
    canary, early, rest = waves(spec, targets)
    assert (canary.name, sorted(canary.devices)) == ("canary", ["d03", "d11"])
    # 25% of all 20 targeted devices, from the 18 the canary left, in hash order
    left = [d for d in stable_order(targets) if d not in ("d03", "d11")]
    assert early.devices == tuple(left[:5])
    assert rest.devices == tuple(left[5:])


def test_devices_no_wave_takes_form_a_last_wave() -> None:
    spec = rollout(waves=[{"name": "early", "percent": 10}])
    early, rest = waves(spec, fleet(20))
    assert (len(early.devices), rest.name, len(rest.devices)) == (2, REST, 18)


def test_a_selector_that_matches_nothing_is_an_empty_wave() -> None:
    spec = rollout(waves=[{"name": "x", "selector": {"matchLabels": {"ring": "none"}}}])
    x, rest = waves(spec, fleet(3))
    assert x.devices == () and len(rest.devices) == 3


def test_waves_do_not_depend_on_the_order_devices_are_listed_in() -> None:
    spec = rollout(waves=[{"name": "a", "percent": 30}, {"name": "b", "percent": 30}])
    targets = fleet(40)
    backwards = dict(reversed(list(targets.items())))
    assert waves(spec, targets) == waves(spec, backwards)


def test_the_stable_order_is_a_hash_of_the_name_not_the_name() -> None:
    names = [f"dev-{i}" for i in range(100)]
    ordered = stable_order(names)
    assert sorted(ordered) == sorted(names) and ordered != sorted(names)
    assert stable_order(reversed(names)) == ordered


@pytest.mark.parametrize(
    ("max_in_flight", "max_failures", "total", "expected"),
    [("10%", 0, 200, (20, 0)), ("10%", "5%", 5, (1, 1)), (0, 3, 10, (1, 3)), (7, "0%", 10, (7, 0))],
)
def test_limits_round_up_and_always_move_one(
    max_in_flight: int | str, max_failures: int | str, total: int, expected: tuple[int, int]
) -> None:
    spec = rollout(maxInFlight=max_in_flight, maxFailures=max_failures)
    assert limits(spec, total) == expected


# -- steps -------------------------------------------------------------------------------------

THREE_WAVES = rollout(
    waves=[{"name": "one", "percent": 20}, {"name": "two", "percent": 30}, {"name": "three"}],
    maxInFlight=2,
)


def three_waves(n: int = 10) -> tuple[Wave, ...]:
    return waves(THREE_WAVES, fleet(n))


def test_a_rollout_begins_with_its_first_wave_and_nothing_moved() -> None:
    first = begin(three_waves())
    assert first.state == RolloutState() and first.move == ()
    assert [(e.kind, e.wave) for e in first.events] == [("wave-started", "one")]


def test_at_most_max_in_flight_move_and_the_next_wave_waits_for_the_first() -> None:
    plan = three_waves()
    one, two, _ = plan
    first = run(THREE_WAVES, plan, {}, RolloutState())
    assert first.move == one.devices and first.events == ()
    # wave one in flight: nothing more moves, not even into the room wave two would have
    again = run(THREE_WAVES, plan, moved_to(first.state, "Progressing"), first.state)
    assert again.move == () and again.state == first.state
    done = run(THREE_WAVES, plan, moved_to(first.state, "Succeeded"), first.state, now=5)
    assert [(e.kind, e.wave) for e in done.events] == [
        ("wave-done", "one"),
        ("wave-started", "two"),
    ]
    assert done.move == two.devices[:2] and done.state.wave == 1


def test_a_wave_bakes_before_the_next() -> None:
    spec = THREE_WAVES.model_copy(update={"bake_seconds": 60})
    plan = three_waves()
    first = run(spec, plan, {}, RolloutState())
    ready = moved_to(first.state, "Succeeded")
    baking = run(spec, plan, ready, first.state, now=100)
    assert baking.move == () and [e.kind for e in baking.events] == ["wave-done"]
    assert baking.state.wave_done_at == 100
    assert run(spec, plan, ready, baking.state, now=159).move == ()
    baked = run(spec, plan, ready, baking.state, now=160)
    assert baked.move == plan[1].devices[:2]
    assert [e.kind for e in baked.events] == ["wave-started"]


def test_offline_devices_neither_hold_a_slot_nor_block_their_wave() -> None:
    plan = three_waves()
    one, two, _ = plan
    away = {one.devices[0]: "Offline"}
    first = run(THREE_WAVES, plan, away, RolloutState())
    assert first.move == one.devices[1:]  # two slots, but only one device to take one
    landed = {**moved_to(first.state, "Succeeded"), **away}
    on = run(THREE_WAVES, plan, landed, first.state, now=1)
    assert on.state.wave == 1 and on.move == two.devices[:2]
    # it comes back while wave two runs: it is moved with the next free slot
    back = {**landed, **dict.fromkeys(on.move, "Progressing"), one.devices[0]: "Pending"}
    assert run(THREE_WAVES, plan, back, on.state, now=2).move == ()
    freed = {**back, two.devices[0]: "Succeeded"}
    assert run(THREE_WAVES, plan, freed, on.state, now=3).move == (one.devices[0],)


def test_a_moved_device_that_goes_offline_frees_its_slot() -> None:
    plan = three_waves(20)
    first = run(THREE_WAVES, plan, {}, RolloutState())
    gone = {first.move[0]: "Offline", first.move[1]: "Progressing"}
    assert len(run(THREE_WAVES, plan, gone, first.state).move) == 1


def test_failures_past_the_budget_halt_the_rollout_and_in_flight_devices_finish() -> None:
    spec = THREE_WAVES.model_copy(update={"max_in_flight": 3, "max_failures": 1})
    plan = waves(spec, fleet(20))
    first = run(spec, plan, {}, RolloutState())
    a, b, c = first.move
    one_failed = {a: "Failed", b: "Progressing", c: "Succeeded"}
    going = run(spec, plan, one_failed, first.state)
    assert going.state.phase == "Progressing" and len(going.move) == 1  # within the budget
    two_failed = {**moved_to(going.state, "Progressing"), a: "Failed", b: "Failed"}
    halted = run(spec, plan, two_failed, going.state)
    assert halted.state.phase == "Halted" and halted.move == () and halted.revert == ()
    (event,) = halted.events
    assert event.kind == "halted" and event.message.startswith("2 device(s) failed, 1 allowed")
    assert a in event.message and b in event.message
    # no new device while halted, whatever finishes; and halted is said once
    later = run(spec, plan, {**two_failed, c: "Succeeded"}, halted.state)
    assert later.move == () and later.events == () and later.state.phase == "Halted"


def test_raising_the_budget_resumes_a_halted_rollout() -> None:
    spec = THREE_WAVES.model_copy(update={"max_failures": 0})
    plan = three_waves(20)
    first = run(spec, plan, {}, RolloutState())
    failed = {first.move[0]: "Failed", first.move[1]: "Succeeded"}
    halted = run(spec, plan, failed, first.state)
    assert halted.state.phase == "Halted"
    raised = spec.model_copy(update={"max_failures": 1})
    resumed = run(raised, plan, failed, halted.state, now=1)
    assert resumed.state.phase == "Progressing" and resumed.move
    assert resumed.events[0].kind == "resumed"


def test_rollback_gives_every_moved_device_the_old_release() -> None:
    spec = THREE_WAVES.model_copy(update={"on_failure": "Rollback", "max_in_flight": 4})
    plan = waves(spec, fleet(20))
    first = run(spec, plan, {}, RolloutState())
    outcomes: dict[str, Outcome] = {first.move[0]: "Failed", first.move[1]: "Succeeded"}
    back = run(spec, plan, outcomes, first.state)
    assert back.state.phase == "RolledBack" and back.state.moved == frozenset()
    assert sorted(back.revert) == sorted(first.move) and back.move == ()
    assert [e.kind for e in back.events] == ["halted", "rolled-back"]
    assert run(spec, plan, outcomes, back.state) == Step(back.state)  # for good


def test_pause_stops_new_moves_and_unpause_resumes() -> None:
    plan = three_waves()
    first = run(THREE_WAVES, plan, {}, RolloutState())
    paused_spec = THREE_WAVES.model_copy(update={"paused": True})
    done = moved_to(first.state, "Succeeded")
    paused = run(paused_spec, plan, done, first.state)
    assert paused.state.phase == "Paused" and paused.move == ()
    assert [e.kind for e in paused.events] == ["paused"]
    assert run(paused_spec, plan, done, paused.state).events == ()
    resumed = run(THREE_WAVES, plan, done, paused.state)
    assert [e.kind for e in resumed.events][:1] == ["resumed"] and resumed.move


def test_the_last_wave_done_completes_it_and_returning_devices_still_move() -> None:
    spec = rollout(maxInFlight="100%")
    plan = waves(spec, fleet(4))
    (everyone,) = plan
    away = everyone.devices[0]
    first = run(spec, plan, {away: "Offline"}, RolloutState())
    assert first.move == everyone.devices[1:]
    landed = {**moved_to(first.state, "Succeeded"), away: "Offline"}
    complete = run(spec, plan, landed, first.state)
    assert complete.state.phase == "Complete"
    assert [e.kind for e in complete.events] == ["wave-done", "complete"]
    back = run(spec, plan, {**landed, away: "Pending"}, complete.state)
    assert back.move == (away,) and back.state.phase == "Complete"


def test_a_device_that_appears_gets_what_its_wave_reached() -> None:
    spec = rollout(waves=[{"name": "one", "percent": 50}, {"name": "two"}], maxInFlight=10)
    plan = waves(spec, fleet(10))
    first = run(spec, plan, {}, RolloutState())
    state = run(spec, plan, moved_to(first.state, "Succeeded"), first.state).state
    assert state.wave == 1
    grown = waves(spec, fleet(12))  # two devices more: each lands in one or the other wave
    newcomers = {"d10", "d11"}
    step_ = run(spec, grown, moved_to(state, "Succeeded"), state)
    assert newcomers & set(step_.move) == newcomers  # wave two is reached: both move


def test_a_device_no_longer_targeted_leaves_the_rollout() -> None:
    plan = three_waves()
    first = run(THREE_WAVES, plan, {}, RolloutState())
    gone = first.move[0]
    smaller = waves(THREE_WAVES, {d: {} for d in fleet(10) if d != gone})
    later = run(THREE_WAVES, smaller, {}, first.state)
    assert gone not in later.state.moved


# -- properties --------------------------------------------------------------------------------

SPECS = st.builds(
    lambda waves_, in_flight, failures, on_failure: rollout(
        waves=waves_, maxInFlight=in_flight, maxFailures=failures, onFailure=on_failure
    ),
    st.lists(
        st.one_of(
            st.builds(lambda p: {"percent": p}, st.integers(1, 100)),
            st.builds(lambda r: {"selector": {"matchLabels": {"ring": r}}}, st.sampled_from("abc")),
        ),
        max_size=3,
    ).map(lambda ws: [{"name": f"w{i}", **w} for i, w in enumerate(ws)]),
    st.one_of(st.integers(0, 10), st.integers(0, 100).map(lambda p: f"{p}%")),
    st.one_of(st.integers(0, 5), st.integers(0, 100).map(lambda p: f"{p}%")),
    st.sampled_from(["Halt", "Rollback"]),
)
TARGETS = st.dictionaries(
    st.integers(0, 99).map(lambda i: f"dev-{i}"),
    st.fixed_dictionaries({}, optional={"ring": st.sampled_from("abc")}),
    max_size=40,
)


@given(SPECS, TARGETS)
@settings(max_examples=examples(300), deadline=None)
def test_waves_are_a_partition_of_the_targets(spec: Rollout, targets: dict[str, Any]) -> None:
    plan = waves(spec, targets)
    devices = [d for wave in plan for d in wave.devices]
    assert sorted(devices) == sorted(targets)  # each targeted device once, in one wave


@given(SPECS, TARGETS, st.data())
@settings(max_examples=examples(300), deadline=None)
def test_a_rollout_never_exceeds_its_limits(
    spec: Rollout, targets: dict[str, Any], data: st.DataObject
) -> None:
    """Over a generated history of outcomes: moves never fill more than maxInFlight slots,
    nothing moves once halted, every move is of a targeted, unmoved device of a wave reached,
    and a rollout that never fails and never loses a device ends Complete with all moved."""
    plan = waves(spec, targets)
    in_flight_limit, allowed = limits(spec, len(targets))
    state = begin(plan).state
    outcomes: dict[str, Outcome] = {}
    halted = False
    for now in range(30):
        result = step(spec, plan, outcomes, state, float(now))
        in_flight = sum(1 for d in state.moved if outcomes.get(d, "Progressing") == "Progressing")
        assert not result.move or in_flight + len(result.move) <= in_flight_limit
        reached = {d for wave in plan[: result.state.wave + 1] for d in wave.devices}
        assert set(result.move) <= reached - state.moved
        if halted:
            assert result.move == ()
        failures = state.failed | {d for d in state.moved if outcomes.get(d) == "Failed"}
        assert result.state.failed == failures & set(targets)  # a failure is for good
        if result.state.phase in ("Halted", "RolledBack"):
            assert len(failures) > allowed
            halted = True
        if result.state.phase == "RolledBack":
            assert set(result.revert) == state.moved and result.state.moved == frozenset()
            break
        state = result.state
        for device in targets:  # what each device does next
            if device in state.moved:
                choice = data.draw(st.sampled_from(OUTCOMES[1:]), label=device)
            else:
                choice = data.draw(st.sampled_from(["Pending", "Offline"]), label=device)
            outcomes[device] = choice


@given(SPECS, TARGETS)
@settings(max_examples=examples(200), deadline=None)
def test_a_healthy_fleet_is_moved_whole(spec: Rollout, targets: dict[str, Any]) -> None:
    plan = waves(spec, targets)
    state = begin(plan).state
    for now in range(len(targets) + len(plan) + 2):
        result = step(spec, plan, moved_to(state, "Succeeded"), state, float(now))
        state = result.state
    assert state.phase == "Complete" and state.moved == frozenset(targets)


# -- a rollout in progress: holding devices back, and judging their outcomes -------------------


def _want(release: str, redeploy: str | None = None) -> Any:
    from reconciler.core.desired import DesiredDeployment

    return DesiredDeployment("web", "web", release, "Running", redeploy, f"digest-{release}")


def _active(**fields: Any) -> Any:
    from reconciler.core.rollout import Active, Origin

    defaults: dict[str, Any] = {
        "deployment": "web",
        "application": "web",
        "revision": "abc",
        "started_at": 0.0,
        "source": Origin("1.0.0"),
        "target": Origin("1.1.0"),
    }
    return Active(**{**defaults, **fields})


def test_held_keeps_unmoved_devices_at_their_origin_and_moved_ones_at_the_new_release() -> None:
    from reconciler.core.rollout import Origin, held

    base = {d: {"web": _want("1.1.0")} for d in ("a", "b", "c", "d")}
    base["e"] = {}  # not targeted: untouched
    record = _active(
        state=RolloutState(moved=frozenset({"a"})), origins={"c": Origin("0.9.0", "x")}
    )
    digests = {"1.0.0": "digest-1.0.0", "0.9.0": "digest-0.9.0"}
    fleet_ = held(base, [record], lambda app, release: digests.get(release))
    assert fleet_["a"] is base["a"]  # moved: the deployment's release, the same object
    assert fleet_["b"]["web"].release == "1.0.0" and fleet_["b"]["web"].digest == "digest-1.0.0"
    assert (fleet_["c"]["web"].release, fleet_["c"]["web"].redeploy) == ("0.9.0", "x")
    assert fleet_["e"] == {}
    # an origin release the repository no longer has cannot be held: the new one at once
    gone = held(base, [record], lambda app, release: None)
    assert all(gone[d]["web"].release == "1.1.0" for d in "abcd")


def _reported(**fields: Any) -> Any:
    from reconciler.wire import ReleaseReport

    defaults: dict[str, Any] = {
        "application": "web",
        "release": "1.1.0",
        "deployment": "web",
        "running": True,
        "complete": True,
    }
    return ReleaseReport(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("releases", "expected"),
    [
        ([_reported(ready=True)], ("Succeeded", "Ready")),
        ([_reported(ready=False)], None),
        ([_reported(ready=None)], ("Succeeded", "Ready")),  # an agent that does not judge
        ([_reported(ready=None, running=False)], None),
        ([_reported(release="1.0.0", ready=True)], None),  # still on the old one
        ([_reported(complete=False, ready=True)], None),
        ([_reported(release="1.0.0", error="exited 1")], ("Failed", "exited 1")),
        ([_reported(redeploy="again", ready=True)], None),  # another redeploy token
        ([], None),
    ],
)
def test_what_a_report_says_of_a_move(releases: list[Any], expected: Any) -> None:
    from reconciler.core.rollout import reported_outcome

    assert reported_outcome("1.1.0", None, releases) == expected


def test_a_degraded_report_gives_its_reason() -> None:
    from reconciler.core.rollout import reported_outcome
    from reconciler.wire import Degraded

    degraded = Degraded(reason="unhealthy for 30s", container="server", log=["boom"])
    found = _reported(release="1.0.0", error="switched back", degraded=degraded)
    assert reported_outcome("1.1.0", None, [found]) == ("Failed", "unhealthy for 30s")


@pytest.mark.parametrize(
    ("seen", "moved_at", "reported", "now", "expected"),
    [
        (None, None, None, 100.0, "Offline"),  # never reported
        (0.0, None, None, 91.0, "Offline"),  # three poll intervals ago
        (50.0, None, None, 100.0, "Pending"),
        (50.0, 60.0, None, 100.0, "Progressing"),
        (90.0, 60.0, ("Succeeded", "Ready", 80.0), 100.0, "Succeeded"),
        (90.0, 60.0, ("Succeeded", "Ready", 50.0), 100.0, "Progressing"),  # before its move
        (90.0, 60.0, ("Failed", "exited", 70.0), 100.0, "Failed"),
        (400.0, 60.0, None, 60.0 + 300 + 61, "Failed"),  # past deadline and margin
        (400.0, 60.0, None, 60.0 + 300 + 59, "Progressing"),
    ],
)
def test_a_devices_outcome(
    seen: float | None,
    moved_at: float | None,
    reported: Any,
    now: float,
    expected: str,
) -> None:
    from reconciler.core.rollout import judged

    moved = {"a": moved_at} if moved_at is not None else {}
    record = _active(state=RolloutState(moved=frozenset(moved)), moved_at=moved)
    assert judged(record, "a", seen, reported, 300.0, now)[0] == expected
