"""Desired document + what the engine runs → the ordered steps between them. Pure, no I/O.

The agent is level-triggered: every pass reads the engine afresh (`EngineState`, containers found
by their `hedgerow.*` labels) and plans from scratch, so a crash, a reboot or a container removed
by hand is just another starting point. The semantics follow `reconciler/plan.py`, which the
controller uses to preview a change; here they are spelled out as engine operations:

1. networks and volumes that are missing are created;
2. every image a new container needs and the engine lacks is pulled — *download, then switch*:
   nothing is stopped or removed before the downloads are done, so a failed pull leaves the
   device running as it was;
3. applications no longer desired: every container of theirs is removed;
4. per deployment, by application: an upgrade creates the new release's containers, stops the
   old release's (they stay, stopped, to switch back to) and starts the new ones in dependency
   order; releases older than the one it switches from are removed, so a device keeps two
   releases of an application at most; a redeploy (new token, new digest) is a switch too:
   the running containers are renamed aside, the new ones created under their names, the old
   ones stopped and the new ones started; those set aside are kept while the agent judges the
   switch (`keep_aside`), to switch back to, and removed once it is Ready; drift repairs only
   what drifted: a container missing
   is created again, and so is one on a network or volume that went missing (recreated first)
   or one sharing the network namespace of a recreated container (`networkMode: container:X`,
   X a sibling: its namespace died with the old X), while its siblings keep running; otherwise
   start or stop to reach the desired state;
5. networks and volumes no container uses any more and no deployment declares are removed — a
   volume only when its deletion policy is `Delete`, so data is kept by default — and so are the
   images of removed containers that no remaining container uses (by the reference written in
   the release: another tag of the same image stays, and Docker keeps an image in use).

`apply` is the model of a successful run: planning again from `apply(engine, plan_steps(...))`
yields no step (tested with hypothesis from random engine states).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Literal

import msgspec

from reconciler.wire import (
    Container,
    ContainerReport,
    Deployment,
    DesiredDocument,
    Network,
    RegistryAuth,
    ReleaseReport,
    Volume,
    duration_ns,
)

MANAGED = "hedgerow.managed"
DEPLOYMENT = "hedgerow.deployment"
APPLICATION = "hedgerow.application"
RELEASE = "hedgerow.release"
CONTAINER = "hedgerow.container"
DIGEST = "hedgerow.digest"
REDEPLOY = "hedgerow.redeploy"
ORDER = "hedgerow.order"  # position in the release's dependency order, to stop and start it again
LEVEL = "hedgerow.level"  # dependency level: 0 depends on nothing, n on something at n - 1
DELETION_POLICY = "hedgerow.deletion-policy"
DEVICE = "hedgerow.device"  # the device whose agent owns it: several agents can share an engine
STOP_GRACE = "hedgerow.stop-grace"  # seconds between the stop signal and SIGKILL, when set
SECRETS = "hedgerow.secrets"  # the folder of its Secret files on the agent's tmpfs

# Docker's states in which a container holds its resources (ports, aliases) and must be stopped.
UP_STATES = frozenset({"running", "restarting", "paused"})
NAME_LIMIT = 63  # container names become DNS names on user networks: one DNS label


# -- what the engine runs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerState:
    """One container carrying `hedgerow.managed=true`; its identity is in the other labels."""

    name: str  # Docker's name, without the leading '/'
    application: str
    release: str
    container: str  # the container's name in the release
    deployment: str
    state: str  # Docker's: created, running, exited, restarting, paused, dead, ...
    digest: str | None = None
    redeploy: str | None = None
    image: str = ""
    networks: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()  # named volumes mounted (volumes and named binds)
    id: str = ""  # Docker's id: tells a recreated container from the one it replaced
    order: int = 0  # position in its release's dependency order (label hedgerow.order)
    level: int | None = None  # its dependency level (hedgerow.level); None: an older agent's
    health: str | None = None  # Docker's: starting, healthy, unhealthy; None: not checked
    exit_code: int | None = None  # once it has exited
    stop_grace: int | None = None  # its stopGracePeriod in seconds (None: the agent's default)
    secrets: str | None = None  # the folder of its Secret files (see agent.secretfiles)

    @property
    def up(self) -> bool:
        return self.state in UP_STATES

    @property
    def completed(self) -> bool:
        """Exited with 0: a one-shot job done."""
        return self.state == "exited" and self.exit_code == 0


@dataclass(frozen=True, slots=True)
class EngineState:
    """What the engine runs that this device's agent manages, plus the image references it has.

    `adopted`: networks and volumes made by an agent older than the `hedgerow.device` label,
    found without it and taken as this device's (see `Engine.read`); they keep their names.
    """

    containers: tuple[ContainerState, ...] = ()
    networks: frozenset[str] = frozenset()  # managed networks, by Docker name
    volumes: dict[str, str] = field(default_factory=dict)  # managed volume → deletion policy
    images: frozenset[str] = frozenset()  # references present (any form; compared normalised)
    adopted: frozenset[str] = frozenset()
    # the Secret-file folders on the tmpfs; None: not known (no secrets folder)
    secret_folders: frozenset[str] | None = None

    def lost_secrets(self, container: ContainerState) -> bool:
        """Its Secret files are gone (a reboot emptied the tmpfs): it cannot start again."""
        folders = self.secret_folders
        return (
            container.secrets is not None
            and folders is not None
            and container.secrets not in folders
        )

    def has_image(self, reference: str) -> bool:
        return normalise_image(reference) in {normalise_image(i) for i in self.images}


# -- steps --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateNetwork:
    """`network` under its Docker name; `device` labels it as this device's."""

    network: Network
    device: str = ""
    kind: Literal["create-network"] = "create-network"
    application: None = None

    def describe(self) -> str:
        return f"create network {self.network.name}"


@dataclass(frozen=True, slots=True)
class CreateVolume:
    """`volume` under its Docker name; `device` labels it as this device's."""

    volume: Volume
    device: str = ""
    kind: Literal["create-volume"] = "create-volume"
    application: None = None

    def describe(self) -> str:
        return f"create volume {self.volume.name}"


@dataclass(frozen=True, slots=True)
class PullImage:
    """`auth` is the RegistryAuth sent for this image, if any; its repr hides the password."""

    image: str
    auth: RegistryAuth | None = None
    kind: Literal["pull"] = "pull"
    application: None = None

    def describe(self) -> str:
        return f"pull {self.image}" + (" with credentials" if self.auth else "")


@dataclass(frozen=True, slots=True)
class CreateContainer:
    name: str
    deployment: str
    application: str
    release: str
    digest: str
    redeploy: str | None
    container: Container
    order: int = 0  # position in the release's dependency order
    level: int = 0  # dependency level: containers of one level are stopped at once
    device: str = ""  # the owner, labelled (none: as an agent older than device labels)
    kind: Literal["create"] = "create"

    def labels(self) -> dict[str, str]:
        """The labels `Engine.read` finds it by again (hedgerow.redeploy only when set)."""
        labels = {
            MANAGED: "true",
            DEPLOYMENT: self.deployment,
            APPLICATION: self.application,
            RELEASE: self.release,
            CONTAINER: self.container.name,
            DIGEST: self.digest,
            ORDER: str(self.order),
            LEVEL: str(self.level),
        }
        if self.redeploy is not None:
            labels[REDEPLOY] = self.redeploy
        if self.device:
            labels[DEVICE] = self.device
        grace = stop_grace(self.container)
        if grace is not None:
            labels[STOP_GRACE] = str(grace)
        return labels

    def describe(self) -> str:
        return f"create container {self.name} ({self.application} {self.release})"


@dataclass(frozen=True, slots=True)
class StartContainer:
    """`job`: a one-shot job, which exits when done: exiting with 0 is no crash."""

    name: str
    application: str
    release: str
    kind: Literal["start"] = "start"
    job: bool = False

    def describe(self) -> str:
        return f"start {self.name} ({self.application} {self.release})"


@dataclass(frozen=True, slots=True)
class StopContainer:
    """`timeout`: seconds between SIGTERM and SIGKILL; None is the engine's default (10 s), so a
    per-container grace period (a later `stopGracePeriod`) has a place to go."""

    name: str
    application: str
    release: str
    timeout: int | None = None
    kind: Literal["stop"] = "stop"

    def describe(self) -> str:
        return f"stop {self.name} ({self.application} {self.release})"


@dataclass(frozen=True, slots=True)
class StopContainers:
    """Containers of one release, none depending on another, stopped at once: each may take
    its whole grace period, so stopping them one after the other would add the periods up.
    The planner emits every stop as one of these, a dependency level at a time."""

    stops: tuple[StopContainer, ...]
    application: str
    release: str
    kind: Literal["stop"] = "stop"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stops)

    def describe(self) -> str:
        return f"stop {', '.join(self.names)} ({self.application} {self.release})"


@dataclass(frozen=True, slots=True)
class RenameContainer:
    """A redeploy's old container moved out of its name's way, kept to switch back to."""

    name: str
    to: str
    application: str
    release: str
    kind: Literal["rename"] = "rename"

    def describe(self) -> str:
        return f"set {self.name} aside as {self.to} ({self.application} {self.release})"


@dataclass(frozen=True, slots=True)
class RemoveContainer:
    name: str
    application: str
    release: str
    kind: Literal["remove"] = "remove"

    def describe(self) -> str:
        return f"remove container {self.name} ({self.application} {self.release})"


@dataclass(frozen=True, slots=True)
class RemoveNetwork:
    name: str
    kind: Literal["remove-network"] = "remove-network"
    application: None = None

    def describe(self) -> str:
        return f"remove network {self.name}"


@dataclass(frozen=True, slots=True)
class RemoveVolume:
    name: str
    kind: Literal["remove-volume"] = "remove-volume"
    application: None = None

    def describe(self) -> str:
        return f"remove volume {self.name} (deletionPolicy Delete)"


@dataclass(frozen=True, slots=True)
class RemoveImage:
    image: str
    kind: Literal["remove-image"] = "remove-image"
    application: None = None

    def describe(self) -> str:
        return f"remove image {self.image} (no container uses it any more)"


Step = (
    CreateNetwork
    | CreateVolume
    | PullImage
    | CreateContainer
    | StartContainer
    | StopContainer
    | StopContainers
    | RenameContainer
    | RemoveContainer
    | RemoveNetwork
    | RemoveVolume
    | RemoveImage
)


# -- naming -------------------------------------------------------------------------------------


def container_name(device: str, deployment: str, release: str, container: str) -> str:
    """`hedgerow-{device}-{deployment}-{release with dashes}-{container}`, one DNS label long
    at most. The device is in it because a deployment's name is fleet-wide: two devices on
    one engine can run the same one. Without a device: the name an older agent gave.

    A longer name is cut and ends with a hash of the whole, so two long names stay distinct.
    """
    dashed = re.sub(r"[^A-Za-z0-9]+", "-", release).strip("-")
    return _bounded("-".join(p for p in ("hedgerow", device, deployment, dashed, container) if p))


def stop_grace(container: Container) -> int | None:
    """A container's `stopGracePeriod` in whole seconds, as Docker counts it (rounded up)."""
    period = container.stop_grace_period
    return None if period is None else -(-duration_ns(period) // 10**9)


def one_shots(want: Deployment) -> set[str]:
    """The containers of a release that others wait to complete: jobs run once, not kept up."""
    return {
        name
        for c in want.containers
        for name, condition in c.wait_for.items()
        if condition == "completedSuccessfully"
    }


def aside_name(name: str) -> str:
    """Where a redeploy sets a container aside: `{name}_aside`. A release's container names
    are DNS labels, without `_`, so no container of a release is ever named so."""
    return _bounded(f"{name}_aside")


def outdated(container: ContainerState, want: Deployment) -> bool:
    """Made from other content than `want` says (deployment, redeploy token or digest): a
    redeploy replaces it. No digest label: unknown, taken as current (as in plan.py)."""
    return (
        container.deployment != want.deployment
        or container.redeploy != want.redeploy
        or (container.digest is not None and container.digest != want.digest)
    )


def release_containers(
    containers: Iterable[ContainerState], want: Deployment
) -> list[ContainerState]:
    """`want`'s release on the engine: its containers made from `want`'s content, or, before a
    redeploy has made any, those of the content it replaces."""
    mine = [c for c in containers if (c.application, c.release) == (want.application, want.release)]
    fresh = [c for c in mine if not outdated(c, want)]
    return fresh or mine


def scoped_name(device: str, name: str) -> str:
    """A network's or volume's Docker name: `hedgerow-{device}-{name}`, so two devices sharing
    an engine each have their own `backend`; bounded and cut as container names are."""
    return _bounded(f"hedgerow-{device}-{name}") if device else name


def _bounded(name: str) -> str:
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: NAME_LIMIT - 9].rstrip('-_.')}-{digest}"


def normalise_image(reference: str) -> str:
    """Docker's familiar form (`busybox:latest`), so `docker.io/library/busybox` matches it."""
    name, at, digest = reference.partition("@")
    if ":" in name.rsplit("/", 1)[-1]:
        if at:  # a digest wins over a tag: Docker records name@digest
            name = name.rsplit(":", 1)[0]
    elif not at:
        name += ":latest"
    first, slash, rest = name.partition("/")
    if slash and first in ("docker.io", "index.docker.io"):
        name = rest
    elif slash and ("." in first or ":" in first or first == "localhost"):
        return f"{name}@{digest}" if at else name  # another registry: kept as written
    if name.startswith("library/") and name.count("/") == 1:
        name = name.removeprefix("library/")
    return f"{name}@{digest}" if at else name


# -- planning -----------------------------------------------------------------------------------


def plan_steps(
    desired: DesiredDocument, engine: EngineState, keep_aside: Set[str] = frozenset()
) -> list[Step]:
    """The steps that take the engine to `desired`, in the order to run them (see the module).

    `keep_aside`: the applications whose switch the agent is still judging; the containers a
    redeploy set aside for them are kept, to switch back to."""
    device = desired.device
    deployments = sorted(
        _on_engine(desired.deployments, device, engine), key=lambda d: d.application
    )
    wanted_networks: dict[str, Network] = {}
    wanted_volumes: dict[str, Volume] = {}
    for deployment in deployments:
        for network in deployment.networks:
            wanted_networks.setdefault(network.name, network)
        for volume in deployment.volumes:
            wanted_volumes.setdefault(volume.name, volume)
    resources: list[Step] = [
        CreateNetwork(net, device)
        for n, net in sorted(wanted_networks.items())
        if n not in engine.networks
    ]
    resources += [
        CreateVolume(wanted_volumes[v], device)
        for v in sorted(wanted_volumes)
        if v not in engine.volumes
    ]

    plan = _Switch(engine, device)
    desired_apps = {d.application for d in deployments}
    plan.remove_all(
        sorted(
            (c for c in engine.containers if c.application not in desired_apps),
            key=lambda c: (c.application, c.name),
        )
    )
    for deployment in deployments:
        plan.deployment(
            deployment, wanted_networks, wanted_volumes, deployment.application in keep_aside
        )

    auth = {a.image: a for a in desired.registry_auth}
    pulls: list[Step] = []
    pulled: set[str] = set()
    for step in plan.steps:
        if isinstance(step, CreateContainer):
            image = step.container.image
            key = normalise_image(image)
            if key not in pulled and not engine.has_image(image):
                pulled.add(key)
                pulls.append(PullImage(image, auth.get(image)))

    remaining = [c for c in engine.containers if c.name not in plan.removed]
    used_networks = {n for c in remaining for n in c.networks} | plan.new_networks
    used_volumes = {v for c in remaining for v in c.volumes} | plan.new_volumes
    cleanup: list[Step] = [
        RemoveNetwork(n)
        for n in sorted(engine.networks)
        if n not in wanted_networks and n not in used_networks
    ]
    cleanup += [
        RemoveVolume(v)
        for v, policy in sorted(engine.volumes.items())
        if policy == "Delete" and v not in wanted_volumes and v not in used_volumes
    ]
    used_images = {normalise_image(c.image) for c in remaining} | {
        normalise_image(s.container.image) for s in plan.steps if isinstance(s, CreateContainer)
    }
    unused = {
        c.image
        for c in engine.containers
        if c.name in plan.removed and c.image and normalise_image(c.image) not in used_images
    }
    cleanup += [RemoveImage(i) for i in sorted(unused) if engine.has_image(i)]
    return [*resources, *pulls, *plan.steps, *cleanup]


class _Switch:
    """The container steps of one plan, remembering which names are removed or created."""

    def __init__(self, engine: EngineState, device: str) -> None:
        self.engine = engine
        self.device = device
        self.steps: list[Step] = []
        self.removed: set[str] = set()
        self.renamed: set[str] = set()
        self.new_networks: set[str] = set()
        self.new_volumes: set[str] = set()

    def remove_all(self, containers: list[ContainerState]) -> None:
        """Stop what is up, a dependency level at a time, then remove: removing stops too, but
        one container after the other."""
        self.steps += stop_groups(c for c in containers if c.name not in self.removed)
        for c in containers:
            self.remove(c)

    def remove(self, container: ContainerState) -> None:
        if container.name not in self.removed:
            self.removed.add(container.name)
            self.steps.append(
                RemoveContainer(container.name, container.application, container.release)
            )

    def deployment(
        self,
        want: Deployment,
        networks: dict[str, Network],
        volumes: dict[str, Volume],
        keep_aside: bool = False,
    ) -> None:
        """Deploy, upgrade, redeploy, repair drift, or start and stop `want`.

        A release whose content changed (deployment, redeploy token or digest) is recreated
        whole, its running containers set aside (see the module). Otherwise only what drifted
        is: a container missing, one on a network or volume missing, and one sharing the
        network namespace of a recreated one; its siblings keep their containers."""
        engine = self.engine
        ours = [
            c
            for c in engine.containers
            if c.application == want.application and c.name not in self.removed
        ]
        ours.sort(key=lambda c: c.name)
        mine = [c for c in ours if c.release == want.release]
        others = sorted((c for c in ours if c.release != want.release), key=_stop_order)
        order = dependency_order(want.containers)
        names = {
            c.name: container_name(self.device, want.deployment, want.release, c.name)
            for c in order
        }
        # an older agent's names, kept while its containers run (see `Engine.read`)
        legacy = {c.name: container_name("", want.deployment, want.release, c.name) for c in order}
        good: dict[str, ContainerState] = {}
        strays: list[ContainerState] = []  # not one of the release's containers as named
        # its own names: this agent's, an older agent's, and either set aside (a revert)
        named = {
            c.name: {n for k in (names, legacy) for n in (k[c.name], aside_name(k[c.name]))}
            for c in order
        }
        for c in mine:
            if outdated(c, want):
                continue
            if c.container not in named or c.container in good or c.name not in named[c.container]:
                strays.append(c)
            else:
                good[c.container] = c
        # a redeploy's old content: what runs is set aside, to switch back to, one per container
        aside: dict[str, ContainerState] = {}
        for c in sorted((c for c in mine if outdated(c, want)), key=lambda c: (not c.up, c.name)):
            keep = want.state == "Running" and (c.up or keep_aside)
            if keep and c.container not in aside:
                aside[c.container] = c
            else:
                strays.append(c)
        lost_networks = {
            n for s in order for n in s.networks if n in networks and n not in engine.networks
        }
        lost_volumes = {
            m.volume
            for s in order
            for m in s.volumes
            if m.volume in volumes and m.volume not in engine.volumes
        }
        recreate = {
            s.name
            for s in order
            if s.name not in good
            or engine.lost_secrets(good[s.name])
            or lost_networks.intersection(s.networks)
            or lost_volumes.intersection(m.volume for m in s.volumes)
        }
        for s in order:  # dependency order: an owner is decided before who shares its namespace
            if _namespace_owner(s, names) in recreate:
                recreate.add(s.name)
        self.remove_all([*strays, *(good.pop(n) for n in sorted(recreate) if n in good)])
        wanted = {names[n] for n in recreate}
        moved = []
        for c in sorted(aside.values(), key=lambda c: (c.order, c.name)):
            if c.name in wanted:
                self.renamed.add(c.name)
                self.steps.append(
                    RenameContainer(c.name, aside_name(c.name), c.application, c.release)
                )
                c = replace(c, name=aside_name(c.name))
            moved.append(c)
        levels = dependency_levels(order)
        for position, spec in enumerate(order):
            if spec.name not in recreate:
                continue
            name = names[spec.name]
            for occupant in engine.containers:  # a stale container holding the name
                if occupant.name == name and occupant.name not in self.renamed:
                    self.remove(occupant)
            self.steps.append(
                CreateContainer(
                    name,
                    want.deployment,
                    want.application,
                    want.release,
                    want.digest,
                    want.redeploy,
                    _resolved(spec, names),
                    position,
                    levels[spec.name],
                    self.device,
                )
            )
            self.new_networks.update(spec.networks)
            self.new_volumes.update(_named_volumes(spec))
        self._stop([*moved, *others])
        if want.state == "Running":
            self._start(want, order, names, recreate, good)
        else:  # by the release's levels: those of an older agent's containers are not labelled
            self.steps += stop_groups(replace(c, level=levels[n]) for n, c in good.items())
        self._prune(others)

    def _start(
        self,
        want: Deployment,
        order: list[Container],
        names: dict[str, str],
        recreate: set[str],
        good: dict[str, ContainerState],
    ) -> None:
        """Start what is not up, in dependency order. A one-shot job (one another waits to
        complete) is started once, when made, and left as it ends. A container waiting for
        another to be healthy or complete is started at a later pass, once it is: the agent
        passes again at the engine's events (health status, exit)."""
        shots = one_shots(want)
        found = {n: c for n, c in good.items() if n not in recreate}
        deferred: set[str] = set()
        for spec in order:
            current = found.get(spec.name)
            ready = all(
                found.get(dep) is not None
                and (
                    found[dep].health == "healthy"
                    if condition == "healthy"
                    else found[dep].completed
                )
                for dep, condition in spec.wait_for.items()
            )
            if not ready or deferred.intersection(spec.depends_on):
                deferred.add(spec.name)
                continue
            if spec.name in shots:
                start = current is None or current.state == "created"
            else:
                start = current is None or not current.up
            if start:
                name = names[spec.name] if current is None else current.name
                job = spec.name in shots
                self.steps.append(StartContainer(name, want.application, want.release, job=job))

    def _prune(self, others: list[ContainerState]) -> None:
        """At a switch, keep the release switched from (to switch back to) and remove the
        older ones; without a switch there is nothing to tell the previous release by."""
        previous = {c.release for c in others if c.up}
        if previous:
            for c in others:
                if c.release not in previous:
                    self.remove(c)

    def _stop(self, containers: list[ContainerState]) -> None:
        """Stop what is up and not already removed (by then, a stale name holder may be)."""
        self.steps += stop_groups(c for c in containers if c.name not in self.removed)


def stop_groups(containers: Iterable[ContainerState]) -> list[StopContainers]:
    """The containers that are up, per release, in groups to stop at once: the highest
    dependency level first, so a container stops after those that depend on it.

    A release with a container lacking its level (made by an agent older than the label) is
    stopped one container at a time, in the reverse of its dependency order, as it was then.
    """
    releases: dict[tuple[str, str], list[ContainerState]] = {}
    for c in containers:
        if c.up:
            releases.setdefault((c.application, c.release), []).append(c)
    return [
        StopContainers(
            tuple(StopContainer(c.name, app, version, c.stop_grace) for c in level), app, version
        )
        for (app, version), found in sorted(releases.items())
        for level in _by_level(found)
    ]


def _by_level(containers: list[ContainerState]) -> list[list[ContainerState]]:
    """One release's containers, highest level first (ties by name); without every level
    label, one container a group, the last in dependency order first."""
    if all(c.level is not None for c in containers):
        ranked = sorted(containers, key=lambda c: (-(c.level or 0), c.name))
        return [list(level) for _, level in groupby(ranked, key=lambda c: c.level)]
    return [[c] for c in sorted(containers, key=lambda c: (-c.order, c.name))]


def dependency_levels(containers: Sequence[Container]) -> dict[str, int]:
    """Each container's level: 0 for one needing nothing, else one more than the highest level
    it needs. One level never depends on itself, so a level stops (or starts) at once."""
    levels: dict[str, int] = {}
    for c in dependency_order(containers):
        levels[c.name] = 1 + max((levels[d] for d in _needs(c) if d in levels), default=-1)
    return levels


def _stop_order(container: ContainerState) -> tuple[str, int, str]:
    """Per release, dependents before their dependencies: the reverse of the start order."""
    return (container.release, -container.order, container.name)


def dependency_order(containers: Sequence[Container]) -> list[Container]:
    """Dependencies first, otherwise the release's order; a cycle (refused by the controller)
    keeps the release's order for what remains rather than failing on the device."""
    remaining = list(containers)
    known = {c.name for c in remaining}
    done: set[str] = set()
    ordered: list[Container] = []
    while remaining:
        ready = next(
            (c for c in remaining if all(d in done or d not in known for d in _needs(c))),
            remaining[0],
        )
        remaining.remove(ready)
        done.add(ready.name)
        ordered.append(ready)
    return ordered


def _on_engine(
    deployments: Sequence[Deployment], device: str, engine: EngineState
) -> list[Deployment]:
    """The deployments with their networks and volumes under their Docker names on this
    device (`scoped_name`), in their declarations and in every container that uses them. One
    adopted from an older agent keeps its own name: a volume holds data."""
    networks = {n.name for d in deployments for n in d.networks}
    volumes = {v.name for d in deployments for v in d.volumes}

    def network(name: str) -> str:
        kept = name in engine.adopted and name in engine.networks
        return name if kept or name not in networks else scoped_name(device, name)

    def volume(name: str) -> str:
        kept = name in engine.adopted and name in engine.volumes
        return name if kept or name not in volumes else scoped_name(device, name)

    def bind(text: str) -> str:
        source, colon, rest = text.partition(":")
        return text if source.startswith("/") else f"{volume(source)}{colon}{rest}"

    def container(c: Container) -> Container:
        return msgspec.structs.replace(
            c,
            networks=[network(n) for n in c.networks],
            endpoints={network(n): e for n, e in c.endpoints.items()},
            volumes=[msgspec.structs.replace(m, volume=volume(m.volume)) for m in c.volumes],
            binds=[bind(b) for b in c.binds],
        )

    return [
        msgspec.structs.replace(
            d,
            containers=[container(c) for c in d.containers],
            networks=[msgspec.structs.replace(n, name=network(n.name)) for n in d.networks],
            volumes=[msgspec.structs.replace(v, name=volume(v.name)) for v in d.volumes],
        )
        for d in deployments
    ]


NAMESPACES = ("network_mode", "pid_mode", "ipc_mode")  # each may be `container:X`


def _joined(container: Container) -> list[str]:
    """The containers whose namespaces (network, pid, ipc) `container` joins."""
    modes = (getattr(container, namespace) or "" for namespace in NAMESPACES)
    return [m.removeprefix("container:") for m in modes if m.startswith("container:")]


def _needs(container: Container) -> list[str]:
    """What must run first: `dependsOn`, and the containers whose namespaces it joins."""
    return [*container.depends_on, *_joined(container)]


def _namespace_owner(container: Container, names: dict[str, str]) -> str | None:
    """The sibling whose network namespace `container` joins (`networkMode: container:X`):
    recreating X kills that namespace, so `container` is recreated with it."""
    mode = container.network_mode
    owner = mode.removeprefix("container:")
    return owner if mode.startswith("container:") and owner in names else None


def _resolved(container: Container, names: dict[str, str]) -> Container:
    """`container:X` naming a sibling points at the sibling's Docker name: the engine knows
    containers by those, and a release names its containers by their short names."""
    changes = {}
    for namespace in NAMESPACES:
        mode = getattr(container, namespace) or ""
        owner = mode.removeprefix("container:")
        if mode.startswith("container:") and owner in names:
            changes[namespace] = f"container:{names[owner]}"
    return msgspec.structs.replace(container, **changes) if changes else container


def _named_volumes(container: Container) -> set[str]:
    """Volumes a container keeps in use: its mounts, and binds whose source is a volume name."""
    named = {m.volume for m in container.volumes}
    named.update(b.split(":", 1)[0] for b in container.binds if not b.startswith("/"))
    return named


# -- the model of a successful run ---------------------------------------------------------------


def apply(engine: EngineState, steps: Iterable[Step]) -> EngineState:
    """The engine after every step succeeded: what `Engine.run` must achieve, step by step."""
    containers = {c.name: c for c in engine.containers}
    networks = set(engine.networks)
    volumes = dict(engine.volumes)
    images = set(engine.images)
    for step in steps:
        if isinstance(step, CreateNetwork):
            networks.add(step.network.name)
        elif isinstance(step, CreateVolume):
            volumes[step.volume.name] = step.volume.deletion_policy
        elif isinstance(step, PullImage):
            images.add(normalise_image(step.image))
        elif isinstance(step, CreateContainer):
            spec = step.container
            made = f"planned:{step.name}:{step.redeploy}:{step.digest}"  # a new id, as Docker's
            while made in {c.id for c in containers.values()}:
                made += "+"
            containers[step.name] = ContainerState(
                name=step.name,
                application=step.application,
                release=step.release,
                container=spec.name,
                deployment=step.deployment,
                state="created",
                digest=step.digest,
                redeploy=step.redeploy,
                image=spec.image,
                networks=frozenset(spec.networks),
                volumes=frozenset(_named_volumes(spec)),
                id=made,
                order=step.order,
                level=step.level,
                stop_grace=stop_grace(spec),
                secrets=f"planned:{step.name}" if spec.secrets else None,
            )
        elif isinstance(step, StartContainer | StopContainer | StopContainers):
            state = "running" if isinstance(step, StartContainer) else "exited"
            names = step.names if isinstance(step, StopContainers) else (step.name,)
            for name in names:
                if name in containers:
                    containers[name] = replace(containers[name], state=state)
        elif isinstance(step, RenameContainer):
            if step.name in containers:
                containers[step.to] = replace(containers.pop(step.name), name=step.to)
        elif isinstance(step, RemoveContainer):
            containers.pop(step.name, None)
        elif isinstance(step, RemoveNetwork):
            networks.discard(step.name)
        elif isinstance(step, RemoveImage):
            images = {i for i in images if normalise_image(i) != normalise_image(step.image)}
        else:
            volumes.pop(step.name, None)
    folders = engine.secret_folders
    if folders is not None:
        folders = folders | {c.secrets for c in containers.values() if c.secrets is not None}
    return EngineState(
        tuple(containers.values()),
        frozenset(networks),
        volumes,
        frozenset(images),
        engine.adopted,
        folders,
    )


def rollback_steps(before: EngineState, now: EngineState, application: str) -> list[Step]:
    """Put an application's containers back as they ran `before` a switch that failed.

    Containers started since are stopped (they stay, for the report and the next attempt), and
    those that ran before are started again, by their id under the name they have now: after
    a failed upgrade the old release runs again, and after a failed redeploy the containers it
    set aside do. A container recreated by a redeploy has a new id, so it is not mistaken for
    the one it replaced.
    """
    was_up = sorted(
        (c for c in before.containers if c.application == application and c.up),
        key=lambda c: (c.release, c.order, c.name),
    )
    up_ids = {c.id for c in was_up}
    current = {c.id: c for c in now.containers if c.application == application}
    steps: list[Step] = [
        *stop_groups(
            c for c in sorted(current.values(), key=_stop_order) if c.up and c.id not in up_ids
        )
    ]
    steps += [
        StartContainer(current[c.id].name, c.application, c.release)
        for c in was_up
        if c.id in current and not current[c.id].up
    ]
    return steps


# -- what the status report says ------------------------------------------------------------------


def release_reports(desired: DesiredDocument, engine: EngineState) -> list[ReleaseReport]:
    """Every release found on the engine, as the controller's plan reads it (`ObservedRelease`).

    `running` means every container of the release is up; `complete` is judged against the
    desired release (a missing container is listed with state `missing`), and is true for other
    releases, whose content the device no longer knows. Errors are the caller's to fill in.
    """
    wanted = {
        (d.application, d.release): d
        for d in _on_engine(desired.deployments, desired.device, engine)
    }
    groups: dict[tuple[str, str], list[ContainerState]] = {}
    for c in engine.containers:
        groups.setdefault((c.application, c.release), []).append(c)
    reports = []
    for (app, version), found in sorted(groups.items()):
        want = wanted.get((app, version))
        if want is not None:  # a redeploy's new containers, not those it set aside
            found = release_containers(found, want)
        found.sort(key=lambda c: (c.order, c.name))
        containers = [
            ContainerReport(
                name=c.name, state=c.state, image_present=engine.has_image(c.image), health=c.health
            )
            for c in found
        ]
        complete = True
        if want is not None:
            names = {c.container for c in found}
            missing = [c for c in dependency_order(want.containers) if c.name not in names]
            containers += [
                ContainerReport(
                    name=container_name(desired.device, want.deployment, version, c.name),
                    state="missing",
                    image_present=engine.has_image(c.image),
                )
                for c in missing
            ]
            needed = {n for d in want.containers for n in d.networks} & {
                n.name for n in want.networks
            }
            complete = not missing and needed <= engine.networks
        first = found[0]
        reports.append(
            ReleaseReport(
                application=app,
                release=version,
                deployment=first.deployment,
                running=all(c.up for c in found) and complete,
                complete=complete,
                redeploy=first.redeploy,
                digest=first.digest,
                containers=containers,
            )
        )
    return reports


def present_images(desired: DesiredDocument, engine: EngineState) -> list[str]:
    """The engine's image references, plus each desired reference present as written: the
    controller matches references verbatim when deciding which credentials to send."""
    present = set(engine.images)
    present.update(
        c.image for d in desired.deployments for c in d.containers if engine.has_image(c.image)
    )
    return sorted(present)
