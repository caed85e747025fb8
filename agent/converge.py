"""One pass of the agent: read the engine, plan, run the steps, switch back what failed.

Failures are contained per application. A failed pull, network or volume blocks only the
applications that need it (nothing of theirs has been switched yet: downloads come first). A
failed step of an application skips the rest of its steps and puts its containers back as they
ran before the pass — after a failed upgrade the old release runs again — while other
applications carry on. Nothing here talks to Docker: `engine` is anything with `read` and `run`.

A pass does not wait to see whether the containers it started keep running. The engine watches
them for its start grace; the next pass asks it which ones crashed (`failed_starts`) and puts their
applications back as they ran before the pass that switched them (`Outcome.switched`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Protocol

from agent.errors import ContainerFailed, EngineError
from agent.steps import (
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    EngineState,
    PullImage,
    RenameContainer,
    StartContainer,
    Step,
    StopContainer,
    StopContainers,
    normalise_image,
    plan_steps,
    rollback_steps,
)
from reconciler.wire import DesiredDocument

# the steps that change what runs: a switch begins with the first of them
SWITCHING = (StartContainer, StopContainer, StopContainers, RenameContainer)


class EngineLike(Protocol):
    def read(self) -> EngineState: ...

    def run(self, step: Step) -> None: ...

    def failed_starts(self) -> list[ContainerFailed]: ...

    def next_check(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """A step that failed, for the status report's events (`message` holds no secret)."""

    step: Step | None  # None: reading the engine failed
    message: str
    application: str | None = None
    deployment: str | None = None
    exited: bool = False  # a new container stopped at once: its release cannot run as it is


@dataclass
class Outcome:
    planned: list[Step] = field(default_factory=list)
    done: list[Step] = field(default_factory=list)
    skipped: list[Step] = field(default_factory=list)  # not tried: their application failed
    failures: list[Failure] = field(default_factory=list)
    rolled_back: dict[str, list[Step]] = field(default_factory=dict)  # by application
    # by application: the first failure that kept it from converging, its own step's or that of
    # a shared step it needed (a pull, a network, a volume)
    blocked_by: dict[str, str] = field(default_factory=dict)
    # by application: the engine as it was before this pass started its containers, to switch
    # back to if one of them crashes within the start grace
    switched: dict[str, EngineState] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def converge(
    engine: EngineLike,
    desired: DesiredDocument,
    hold: Set[str] = frozenset(),
    on_step: Callable[[Step], None] | None = None,
    switched: Mapping[str, EngineState] | None = None,
    keep_aside: Set[str] = frozenset(),
    on_switch: Callable[[str, EngineState], None] | None = None,
) -> Outcome:
    """Run one pass; never raises `EngineError`: every failure is in the outcome.

    Applications in `hold` are left as they run (a release that failed to start is not retried
    until its deployment changes): their steps are skipped. `on_step` hears of each step just
    before it runs (the agent's `starting`/`stopping` events). `switched` is what earlier passes
    returned in `Outcome.switched`: where to go back to when a start has failed since.
    `keep_aside`: the applications whose switch is still judged (see `plan_steps`).
    `on_switch` hears of an application's switch, with the engine as it ran before, just before
    the first step that stops, sets aside or starts one of its containers: so that a switch
    interrupted by a crash is known to the agent that starts next.
    """
    outcome = Outcome()
    deployments = {d.application: d.deployment for d in desired.deployments}
    blocked: set[str] = set(hold)
    try:
        for error in engine.failed_starts():
            _crashed(engine, error, deployments, switched or {}, blocked, outcome)
        before = engine.read()
    except EngineError as error:
        outcome.failures.append(Failure(None, str(error)))
        return outcome
    steps = plan_steps(desired, before, keep_aside)
    outcome.planned = steps
    switching: set[str] = set()
    for step in steps:
        app = step.application
        if app is not None and app in blocked:
            outcome.skipped.append(step)
            continue
        if app in deployments and app not in switching and isinstance(step, SWITCHING):
            switching.add(app)
            if on_switch is not None:
                on_switch(app, before)
        if on_step is not None:
            on_step(step)
        try:
            engine.run(step)
        except EngineError as error:
            failure = Failure(step, str(error), app, deployments.get(app or ""))
            outcome.failures.append(failure)
            if app is None:
                needing = _needing(step, steps)
                blocked |= needing
                for other in needing:
                    outcome.blocked_by.setdefault(other, failure.message)
            else:
                blocked.add(app)
                outcome.blocked_by.setdefault(app, failure.message)
                if app in deployments:  # a removal that failed is retried, never undone
                    _roll_back(engine, before, app, deployments[app], outcome)
            continue
        outcome.done.append(step)
        if isinstance(step, StartContainer) and app is not None:
            outcome.switched.setdefault(app, before)
    for app in outcome.rolled_back:
        outcome.switched.pop(app, None)
    return outcome


def _crashed(
    engine: EngineLike,
    error: ContainerFailed,
    deployments: Mapping[str, str],
    switched: Mapping[str, EngineState],
    blocked: set[str],
    outcome: Outcome,
) -> None:
    """A container crashed within its start grace: its application goes back to how it ran
    before the pass that switched it, and this pass leaves it alone."""
    app = error.step.application
    failure = Failure(error.step, str(error), app, deployments.get(app or ""), exited=True)
    outcome.failures.append(failure)
    if app is None or app in blocked:
        return
    blocked.add(app)
    outcome.blocked_by.setdefault(app, failure.message)
    if app in deployments and app in switched:
        _roll_back(engine, switched[app], app, deployments[app], outcome)


def _needing(failed: Step, steps: list[Step]) -> set[str]:
    """The applications whose new containers need what a failed shared step was to provide."""
    needing: set[str] = set()
    for step in steps:
        if not isinstance(step, CreateContainer):
            continue
        spec = step.container
        if (
            (
                isinstance(failed, PullImage)
                and normalise_image(spec.image) == normalise_image(failed.image)
            )
            or (isinstance(failed, CreateNetwork) and failed.network.name in spec.networks)
            or (
                isinstance(failed, CreateVolume)
                and failed.volume.name in {m.volume for m in spec.volumes}
            )
        ):
            needing.add(step.application)
    return needing


def _roll_back(
    engine: EngineLike, before: EngineState, app: str, deployment: str, outcome: Outcome
) -> None:
    try:
        steps = rollback_steps(before, engine.read(), app)
    except EngineError as error:
        outcome.failures.append(Failure(None, f"rolling back: {error}", app, deployment))
        return
    outcome.rolled_back[app] = steps
    for step in steps:
        try:
            engine.run(step)
        except EngineError as error:
            failure = Failure(step, f"rolling back: {error}", app, deployment)
            outcome.failures.append(failure)
