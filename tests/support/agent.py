"""Desired documents and a model engine for the agent's tests.

The plan tests (`test_agent_steps`) and the loop tests (`test_agent_poll`) build the same
documents and drive the same model engine; they live here so neither test module imports the
other.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agent.errors import ContainerFailed, EngineError
from agent.steps import (
    CreateNetwork,
    CreateVolume,
    EngineState,
    PullImage,
    RemoveImage,
    RenameContainer,
    StartContainer,
    Step,
    StopContainer,
    StopContainers,
    apply,
)
from reconciler.wire import (
    Container,
    Deployment,
    DesiredDocument,
    Mount,
    Network,
    RegistryAuth,
)

IMAGE = "local/app:1"
DEVICE = "pi-1"
V1, V2 = "local/app:1", "local/app:2"


def ctr(name: str, image: str = IMAGE, **fields: object) -> Container:
    return msgspec.convert({"name": name, "image": image, **fields}, Container)


def web(
    release: str = "1.0.0",
    state: str = "Running",
    redeploy: str | None = None,
    digest: str = "d1",
    image: str = IMAGE,
    app: str = "web",
    networks: tuple[str, ...] = ("front",),
    volumes: tuple[tuple[str, str], ...] = (("data", "Retain"),),
) -> Deployment:
    """A two-container release: `server` depends on `db`, both on the networks and volumes."""
    mounts = [Mount(volume=v, target=f"/{v}") for v, _ in volumes]
    return msgspec.convert(
        {
            "deployment": f"{app}-lyon",
            "application": app,
            "release": release,
            "state": state,
            "redeploy": redeploy,
            "digest": digest,
            "containers": [
                ctr("server", image, dependsOn=["db"], networks=list(networks), volumes=mounts),
                ctr("db", image, networks=list(networks)),
            ],
            "networks": [Network(name=n) for n in networks],
            "volumes": [{"name": v, "deletionPolicy": p} for v, p in volumes],
        },
        Deployment,
    )


def doc(*deployments: Deployment, auth: tuple[RegistryAuth, ...] = ()) -> DesiredDocument:
    return DesiredDocument(
        device=DEVICE, revision="r1", deployments=list(deployments), registry_auth=list(auth)
    )


def short(name: str) -> str:
    """A Docker name without the prefix every name of device pi-1 has."""
    return name.removeprefix(f"hedgerow-{DEVICE}-")


def show(steps: list[Step]) -> list[str]:
    """One short line per step, so tables of steps read like the engine's log."""
    lines = []
    for step in steps:
        if isinstance(step, CreateNetwork | CreateVolume):
            name = step.network.name if isinstance(step, CreateNetwork) else step.volume.name
            lines.append(f"{step.kind} {short(name)}")
        elif isinstance(step, PullImage | RemoveImage):
            lines.append(f"{step.kind} {step.image}")
        elif isinstance(step, StopContainers):  # one dependency level, stopped at once
            lines.append(f"stop {', '.join(short(n) for n in step.names)}")
        elif isinstance(step, RenameContainer):
            lines.append(f"rename {short(step.name)} {short(step.to)}")
        else:
            lines.append(f"{step.kind} {short(step.name)}")
    return lines


class ModelEngine:
    """`apply` as an engine; steps matching `fail` raise instead, as the real engine would, and
    starts matching `crash` succeed but the container exits during its start grace: the next
    `failed_starts` finds it stopped."""

    def __init__(
        self,
        state: EngineState,
        fail: dict[str, EngineError],
        crash: dict[str, str] | None = None,
    ) -> None:
        self.state = state
        self.fail = fail
        self.crash = crash or {}
        self.log: list[str] = []
        self.watched: list[StartContainer] = []

    def read(self) -> EngineState:
        return self.state

    def run(self, step: Step) -> None:
        line = show([step])[0]
        self.log.append(line)
        if line in self.fail:
            raise self.fail[line]
        self.state = apply(self.state, [step])
        if isinstance(step, StartContainer):
            self.watched.append(step)

    def failed_starts(self) -> list[ContainerFailed]:
        watched, self.watched = self.watched, []
        failed = []
        for step in watched:
            message = self.crash.get(show([step])[0])
            if message is not None:
                self.state = apply(self.state, [StopContainer(step.name, "", "")])
                failed.append(ContainerFailed(step, 3, message))
        return failed

    def next_check(self) -> float | None:
        return 0.0 if self.watched else None


HEALTH_PROBE = ["CMD", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:8080/VERSION"]


def healthchecked(image: str) -> Deployment:
    """Deployment `checked` of two containers of `image` with 1 s healthchecks: `checked`
    passes (the image serves /VERSION), `failing` never does."""
    checked: dict[str, Any] = {"name": "checked", "image": image}
    checked["healthcheck"] = {"test": HEALTH_PROBE, "interval": "1s", "timeout": "2s",
                              "retries": 1}  # fmt: skip
    failing: dict[str, Any] = {"name": "failing", "image": image}
    failing["healthcheck"] = {"test": ["CMD-SHELL", "exit 1"], "interval": "1s", "retries": 1}
    return msgspec.convert(
        {
            "deployment": "checked",
            "application": "checked",
            "release": "1.0.0",
            "state": "Running",
            "digest": "d",
            "containers": [checked, failing],
        },
        Deployment,
    )
