"""The Docker engine, seen through the agent's steps. The only module that imports `docker`.

`Engine.read()` finds what this device's agent owns by its labels, `hedgerow.managed` and
`hedgerow.device` (so nothing else on the device, nor another device's agent sharing the
engine, is ever touched) and `Engine.run(step)` performs one step of `agent.steps`,
idempotently: stopping or removing what is already gone is not an error, because a pass may be
interrupted at any point and the next one plans from what is really there. Every failure is an
`EngineError` whose message is safe to report: registry passwords never appear in it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from agent import podman
from agent.errors import ContainerFailed, DiskSpaceError, EngineError, PullError
from agent.readiness import health_of
from agent.secretfiles import SecretFiles
from agent.steps import (
    APPLICATION,
    CONTAINER,
    DELETION_POLICY,
    DEPLOYMENT,
    DEVICE,
    DIGEST,
    LEVEL,
    MANAGED,
    ORDER,
    REDEPLOY,
    RELEASE,
    SECRETS,
    STOP_GRACE,
    ContainerState,
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    EngineState,
    PullImage,
    RemoveContainer,
    RemoveImage,
    RemoveNetwork,
    RenameContainer,
    StartContainer,
    Step,
    StopContainer,
    StopContainers,
    normalise_image,
)
from reconciler.logs import get_logger
from reconciler.wire import (
    MAX_LOG_LINES,
    Container,
    Healthcheck,
    RegistryAuth,
    SecretValue,
    duration_ns,
)

MANAGED_FILTER = {"label": f"{MANAGED}=true"}
log = get_logger("hedgerow.agent")
MAX_OUTPUT = 1024  # characters kept of a health output or a log line: a report is bounded
MiB = 1024 * 1024
PARALLEL_STOPS = 10  # docker-py keeps 10 connections to the engine: one per stop in flight
__all__ = [
    "ContainerFailed",
    "DiskSpaceError",
    "Engine",
    "EngineError",
    "PullError",
]


class Engine:
    """Steps on one Docker engine, for one device: `device` is the `hedgerow.device` label of
    what it reads and watches (its steps carry the same device, from the desired document).
    An empty `device` stands for an agent older than the label: it reads only what has none.

    `min_free_bytes` guards pulls; `start_grace` is how long a started container must keep
    running to count as started (`failed_starts` reports one that did not, so the caller can
    switch back); `pull_timeout` bounds a pull, checked at every progress message the engine sends,
    while a silent connection is cut by the client's own read timeout. `stop_timeout` is the
    seconds a stopped container gets between SIGTERM and SIGKILL, unless its step says.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        device: str,
        pull_timeout: float = 900.0,
        min_free_bytes: int = 256 * MiB,
        start_grace: float = 1.0,
        stop_timeout: int = 10,
        secret_files: SecretFiles | None = None,
    ) -> None:
        self.client = client
        self.secret_files = secret_files  # None: containers needing Secret files are refused
        # (Secret, key) → value, from the last document the controller sent: memory only
        self._values: dict[tuple[str, str], str] = {}
        self.api = client.api
        self.device = device
        self.pull_timeout = pull_timeout
        self.min_free_bytes = min_free_bytes
        self.start_grace = start_grace
        # started, still in their grace: the step, its restart count before, when
        self._starting: dict[str, tuple[StartContainer, int, float]] = {}
        self.stop_timeout = stop_timeout
        # Podman's healthchecks on Podman, False on dockerd: found at the first read
        self._podman: podman.HealthChecks | bool | None = None

    def hold_secrets(self, values: Iterable[SecretValue]) -> None:
        """The Secret values of the document the controller sent last: kept in memory only."""
        self._values = {(v.secret, v.key): v.value for v in values}

    @classmethod
    def from_env(cls, device: str, secret_files: SecretFiles | None = None) -> Engine:
        """The engine `DOCKER_HOST` names (or the default socket), as every Docker client;
        raises EngineError when it does not answer."""
        try:
            return cls(docker.from_env(), device=device, secret_files=secret_files)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise EngineError(f"no engine answers at {host}: {_explain(error)}") from None

    # -- reading --------------------------------------------------------------------------------

    def read(self) -> EngineState:
        """Every container, network and volume of this device, and all images.

        This device's carry its `hedgerow.device` label. Those an agent older than the label
        made (managed, no device) are adopted as they are when no other device's are on the
        engine: that was the agent of this device, upgraded in place. With other devices on
        the engine, unlabelled ones are nobody's: left alone.
        """
        try:
            listed: list[dict[str, Any]] = self.api.containers(all=True, filters=MANAGED_FILTER)
            networks: list[dict[str, Any]] = self.api.networks(filters=MANAGED_FILTER)
            volumes = self.api.volumes(filters=MANAGED_FILTER).get("Volumes") or []
            images: list[dict[str, Any]] = self.api.images()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise EngineError(f"reading the engine: {_explain(error)}") from error
        as_docker = self._as_docker(listed)
        devices = {
            (thing.get("Labels") or {}).get(DEVICE) for thing in [*listed, *networks, *volumes]
        }
        adopt = self.device != "" and devices <= {None, self.device}

        def ours(thing: Mapping[str, Any]) -> bool:
            device = (thing.get("Labels") or {}).get(DEVICE)
            return device == (self.device or None) or (adopt and device is None)

        def adopted(thing: Mapping[str, Any]) -> bool:
            return adopt and DEVICE not in (thing.get("Labels") or {})

        return EngineState(
            containers=tuple(_container_state(as_docker(c)) for c in listed if ours(c)),
            networks=frozenset(n["Name"] for n in networks if ours(n)),
            volumes={
                v["Name"]: (v.get("Labels") or {}).get(DELETION_POLICY, "Retain")
                for v in volumes
                if ours(v)
            },
            adopted=frozenset(t["Name"] for t in [*networks, *volumes] if adopted(t)),
            secret_folders=self.secret_files.present() if self.secret_files else None,
            images=frozenset(
                ref
                for image in images
                for ref in [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]
                if "<none>" not in ref
            ),
        )

    def _as_docker(self, listed: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Any]:
        """How a listed container reads as Docker lists it: unchanged from dockerd; from
        Podman, its state in Docker's words and its health, checked when due (`agent.podman`)."""
        if self._podman is None and (version := _or_empty(self.client.version)):
            self._podman = podman.is_podman(version) and podman.HealthChecks(
                lambda c: _or_empty(lambda: self.api.inspect_container(c)),
                lambda c: _or_empty(lambda: self._podman_healthcheck(c)),
            )
        checks = self._podman
        if not isinstance(checks, podman.HealthChecks):
            return lambda container: container
        checks.forget_others({str(c.get("Id", "")) for c in listed})
        return checks.listing

    def _podman_healthcheck(self, container: str) -> None:
        """Run a container's healthcheck once: Podman's own API (no Docker endpoint does it)."""
        url = f"{self.api.base_url}/v4.0.0/libpod/containers/{container}/healthcheck"
        self.api.get(url, timeout=60).raise_for_status()

    def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify` on each event of a container, network or volume Hedgerow owns, so the
        agent reacts to a container stopped or removed by hand at once; returns when the engine
        closes the stream."""
        labels = [f"{MANAGED}=true", f"{DEVICE}={self.device}"]  # an adopted one's: at a poll
        try:
            for _ in self.api.events(decode=True, filters={"label": labels}):
                notify()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            log.warning("engine events stopped", error=_explain(error))

    def free_bytes(self) -> tuple[str, int] | None:
        """Free space for the engine's data root, or None when it is not visible from here."""
        root = str(self.client.info().get("DockerRootDir", ""))
        try:
            stat = os.statvfs(root)
        except OSError:
            return None
        return root, stat.f_bavail * stat.f_frsize

    def describe(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The engine's `/info` and `/version` answers: what `agent.facts` reports."""
        try:
            return self.client.info(), self.client.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise EngineError(f"the engine does not describe itself: {_explain(error)}") from None

    # -- steps ----------------------------------------------------------------------------------

    def run(self, step: Step) -> None:
        """Perform one step; raises `EngineError` (or a subclass) when it fails."""
        try:
            self._run(step)
        except EngineError:
            raise
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise EngineError(f"{step.describe()}: {_explain(error)}") from error

    def _run(self, step: Step) -> None:
        if isinstance(step, CreateNetwork):
            self._create_network(step)
        elif isinstance(step, CreateVolume):
            self._create_volume(step)
        elif isinstance(step, PullImage):
            self.pull(step.image, step.auth)
        elif isinstance(step, CreateContainer):
            self._create_container(step)
        elif isinstance(step, StartContainer):
            self._start(step)
        elif isinstance(step, StopContainers):
            self._stop_all(step)
        elif isinstance(step, StopContainer):
            self._stop(step.name, step.timeout)
        elif isinstance(step, RenameContainer):
            self._starting.pop(step.name, None)  # set aside: no longer the one started
            self.api.rename(step.name, step.to)
        elif isinstance(step, RemoveContainer):
            self._remove(step.name)
        elif isinstance(step, RemoveNetwork):
            _ignore_missing(lambda: self.api.remove_network(step.name))
        elif isinstance(step, RemoveImage):
            self._remove_image(step.image)
        else:
            _ignore_missing(lambda: self.api.remove_volume(step.name))

    def _remove(self, name: str) -> None:
        """Stop and remove a container, and its Secret files."""
        self._stop(name)
        folder = self._secrets_folder(name)
        remove = lambda: self.api.remove_container(name, v=True, force=True)  # noqa: E731
        try:
            _ignore_missing(remove)
        except docker.errors.APIError as error:
            # Podman refuses to remove a container whose namespaces others joined (a sidecar's
            # `networkMode: container:NAME`) before them, where dockerd removes it: ours first
            dependents = podman.dependents(str(error.explanation or ""))
            if not dependents:
                raise
            for other in dependents:
                with contextlib.suppress(docker.errors.NotFound):  # gone meanwhile
                    self._remove(self._ours(other, f"joined to container {name}"))
            _ignore_missing(remove)
        if folder and self.secret_files is not None:
            self.secret_files.remove(folder)

    def _ours(self, container: str, why: str) -> str:
        """The name of a container of this device's, or an error naming one that is not."""
        info: dict[str, Any] = self.api.inspect_container(container)
        labels = (info.get("Config") or {}).get("Labels") or {}
        name = str(info.get("Name", container)).lstrip("/")
        if labels.get(MANAGED) != "true" or labels.get(DEVICE, "") != self.device:
            raise EngineError(
                f"container {name} ({why}) was not made by this device's agent: remove it first"
            )
        return name

    def _remove_image(self, image: str) -> None:
        """Untag `image`; Docker deletes the layers no other tag holds. One still used by a
        container (not Hedgerow's, another device's, or not yet removed) stays: not an error.

        Docker refuses to remove an image a container uses only when it is the last tag, so
        containers created from this reference are looked for first: another device's agent
        on the same engine may run it, and would otherwise have to pull it again.
        """
        wanted = normalise_image(image)
        listed: list[dict[str, Any]] = self.api.containers(all=True)
        if any(normalise_image(str(c.get("Image", ""))) == wanted for c in listed):
            log.info("image kept", image=image, reason="a container uses it")
            return
        try:
            _ignore_missing(lambda: self.api.remove_image(image))
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise
            log.info("image kept", image=image, reason=_explain(error))

    def _create_network(self, step: CreateNetwork) -> None:
        network = step.network
        inspect = lambda: self.api.inspect_network(network.name)  # noqa: E731
        if self._exists_unmanaged(inspect, "network", step.device):
            return
        self.api.create_network(
            network.name,
            driver=network.driver,
            options=dict(network.options) or None,
            internal=network.internal,
            enable_ipv6=network.enable_ipv6,
            labels=_owned(step.device),
            check_duplicate=True,
            ipam=docker.types.IPAMConfig(
                pool_configs=[
                    docker.types.IPAMPool(
                        subnet=pool.subnet, gateway=pool.gateway, iprange=pool.ip_range
                    )
                    for pool in network.ipam
                ]
            )
            if network.ipam
            else None,
        )

    def _create_volume(self, step: CreateVolume) -> None:
        volume = step.volume
        inspect = lambda: self.api.inspect_volume(volume.name)  # noqa: E731
        if self._exists_unmanaged(inspect, "volume", step.device):
            return
        labels = {**_owned(step.device), DELETION_POLICY: volume.deletion_policy}
        self.api.create_volume(
            volume.name, driver=volume.driver, driver_opts=dict(volume.options), labels=labels
        )

    @staticmethod
    def _exists_unmanaged(inspect: Callable[[], dict[str, Any]], what: str, device: str) -> bool:
        """True when ours already exists; refuses to adopt one Hedgerow did not create, or
        another device's."""
        try:
            found: dict[str, Any] = inspect()
        except docker.errors.NotFound:
            return False
        labels = found.get("Labels") or {}
        owner = labels.get(DEVICE, "")
        if labels.get(MANAGED) == "true" and owner == device:
            return True
        if labels.get(MANAGED) == "true":
            raise EngineError(
                f"a {what} named {found.get('Name')!r} belongs to device {owner or '(none)'!r} "
                f"on this engine, not to {device!r}"
            )
        raise EngineError(
            f"a {what} named {found.get('Name')!r} already exists and was not created by "
            f"Hedgerow: remove or rename it on the device, or name the {what} differently"
        )

    def pull(self, image: str, auth: RegistryAuth | None = None) -> None:
        """Download one image, failing on the first error message of the engine's stream."""
        self._check_disk(image)
        repository, tag = split_reference(image)
        config = (
            {
                "username": auth.username,
                "password": auth.password,
                "serveraddress": auth.serveraddress,
            }
            if auth is not None
            else None
        )
        secret = auth.password if auth is not None else ""
        deadline = time.monotonic() + self.pull_timeout
        try:
            stream: Iterator[dict[str, Any]] = self.api.pull(
                repository, tag=tag, stream=True, decode=True, auth_config=config
            )
            try:
                for chunk in stream:
                    problem = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
                    if problem:
                        raise PullError(_scrub(f"pulling {image}: {problem}", secret))
                    if time.monotonic() > deadline:
                        raise PullError(
                            f"pulling {image}: not done after {self.pull_timeout:.0f} s; "
                            "will try again on the next pass"
                        )
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # on a deadline, dropping the connection cancels the engine's pull
            self.client.images.get(image)
        except docker.errors.ImageNotFound as error:
            raise PullError(f"pulling {image}: the engine reports success but lacks it") from error
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise PullError(_scrub(f"pulling {image}: {_explain(error)}", secret)) from error

    def _check_disk(self, image: str) -> None:
        space = self.free_bytes()
        if space is None:
            return
        root, free = space
        if free < self.min_free_bytes:
            raise DiskSpaceError(
                f"not pulling {image}: only {free // MiB} MiB free in {root}, below the "
                f"{self.min_free_bytes // MiB} MiB kept free; remove unused images or data"
            )

    def _secrets_folder(self, name: str) -> str | None:
        try:
            info: dict[str, Any] = self.api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        return ((info.get("Config") or {}).get("Labels") or {}).get(SECRETS)

    def _secret_env(self, spec: Container) -> dict[str, str]:
        """The env values a container takes from Secrets (raises while one is not known)."""
        return {name: self._value(ref.secret, ref.key) for name, ref in spec.secret_env.items()}

    def _value(self, secret: str, key: str) -> str:
        value = self._values.get((secret, key))
        if value is None:
            raise EngineError(
                f"the value of Secret {secret!r} (key {key!r}) has not come from the controller "
                "yet: values are kept in memory only, so after a restart the agent waits for "
                "the controller before it makes a container needing one"
            )
        return value

    def _write_secret_files(self, step: CreateContainer) -> tuple[str | None, list[str]]:
        """A container's Secret files, written to the tmpfs: their folder and the binds."""
        spec = step.container
        if not spec.secrets:
            return None, []
        if self.secret_files is None:
            raise EngineError(
                f"{step.container.name} needs Secret files, and this agent has no secrets "
                "folder on a tmpfs (--secrets-dir)"
            )
        files = [
            (f"{i}-{f.key}", self._value(f.secret, f.key), f.mode)
            for i, f in enumerate(spec.secrets)
        ]
        folder = self.secret_files.write(step.name, files)
        binds = [
            f"{self.secret_files.path(folder, name)}:{f.target}:ro"
            for (name, _, _), f in zip(files, spec.secrets, strict=True)
        ]
        return folder, binds

    def _create_container(self, step: CreateContainer) -> None:
        spec = step.container
        environment = {**spec.env, **self._secret_env(spec)}
        folder, secret_binds = self._write_secret_files(step)
        try:
            self._make(step, environment, folder, secret_binds)
        except BaseException:
            if folder is not None and self.secret_files is not None:
                self.secret_files.remove(folder)
            raise

    def _make(
        self,
        step: CreateContainer,
        environment: dict[str, str],
        folder: str | None,
        secret_binds: list[str],
    ) -> None:
        spec = step.container
        exposed, bindings = port_bindings(spec.port_bindings)
        mode, later = network_plan(spec)
        options = host_config_options(spec, mode)
        if secret_binds:
            options["binds"] = [*(options["binds"] or []), *secret_binds]
        host_config = self.api.create_host_config(**options)
        if bindings:
            host_config["PortBindings"] = bindings
        networking = (
            {"EndpointsConfig": {mode: endpoint_config(spec, mode)}}
            if mode in spec.networks
            else None
        )
        self.api.create_container(
            spec.image,
            name=step.name,
            hostname=spec.hostname,
            environment=environment,
            labels={**spec.labels, **step.labels(), **({SECRETS: folder} if folder else {})},
            ports=exposed or None,
            host_config=host_config,
            networking_config=networking,
            healthcheck=healthcheck_config(spec.healthcheck),
            detach=True,
            **container_options(spec),
        )
        try:
            for network in later:
                joined = endpoint_config(spec, network)
                self.api.connect_container_to_network(
                    step.name,
                    network,
                    aliases=joined["Aliases"],
                    ipv4_address=joined.get("IPAMConfig", {}).get("IPv4Address"),
                    ipv6_address=joined.get("IPAMConfig", {}).get("IPv6Address"),
                )
        except BaseException:
            # half made, it would carry the labels of a complete one: never leave it behind
            _ignore_missing(lambda: self.api.remove_container(step.name, force=True))
            raise

    def _start(self, step: StartContainer) -> None:
        """Start, and watch the container for `start_grace` (see `failed_starts`)."""
        known = int(self.api.inspect_container(step.name).get("RestartCount") or 0)
        self.api.start(step.name)
        self._starting[step.name] = (step, known, time.monotonic())

    def failed_starts(self) -> list[ContainerFailed]:
        """The containers started within `start_grace` that have exited or restarted since,
        each stopped (or its restart policy keeps it flapping while the old release waits).

        It does not wait: a pass starts a release and returns, as `docker-compose up -d` does,
        and the next pass — at a Docker event, or when `next_check` says the grace is over —
        finds a crash and switches back. A container that ran through its grace is done with.
        """
        failed: list[ContainerFailed] = []
        now = time.monotonic()
        for name, (step, known, started) in list(self._starting.items()):
            try:
                self._check_started(step, known)
            except ContainerFailed as error:
                failed.append(error)  # `_check_started` stopped it: no longer watched
                continue
            except docker.errors.NotFound:
                del self._starting[name]  # removed since: nothing to watch
                continue
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                raise EngineError(f"checking container {name}: {_explain(error)}") from error
            if now - started >= self.start_grace:
                del self._starting[name]
        return failed

    def diagnose(self, name: str, lines: int = MAX_LOG_LINES) -> tuple[str | None, list[str]]:
        """A container's last healthcheck output and its last `lines` log lines, for a
        Degraded report; what cannot be read is left out (the container may be gone)."""
        try:
            info: dict[str, Any] = self.api.inspect_container(name)
            logs = self.api.logs(name, tail=lines, timestamps=False)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return None, []
        checks = ((info.get("State") or {}).get("Health") or {}).get("Log") or []
        health = str(checks[-1].get("Output", "")).strip()[:MAX_OUTPUT] if checks else None
        text = logs.decode(errors="replace") if isinstance(logs, bytes) else str(logs)
        return health or None, [line[:MAX_OUTPUT] for line in text.splitlines()[-lines:]]

    def restarts(self, names: Iterable[str]) -> dict[str, int]:
        """Docker's RestartCount of each container (the list does not carry it); those that
        cannot be read are left out."""
        counts = {}
        for name in names:
            try:
                info: dict[str, Any] = self.api.inspect_container(name)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                continue
            counts[name] = int(info.get("RestartCount") or 0)
        return counts

    def next_check(self) -> float | None:
        """Seconds until the start grace of a watched container ends (None: none is watched)."""
        ends = [started + self.start_grace for _, _, started in list(self._starting.values())]
        grace = max(0.0, min(ends) - time.monotonic()) if ends else None
        if isinstance(self._podman, podman.HealthChecks):  # and until Podman's next healthcheck
            due = self._podman.next_due()
            return due if grace is None else grace if due is None else min(grace, due)
        return grace

    def _check_started(self, step: StartContainer, known: int) -> None:
        name = step.name
        info: dict[str, Any] = self.api.inspect_container(name)
        state = info.get("State") or {}
        restarts = int(info.get("RestartCount") or 0) - known
        status = podman.docker_state(str(state.get("Status", "")))  # Podman's `stopped`
        exited = status in ("exited", "dead") or state.get("Restarting")
        if not exited and restarts <= 0:
            return
        if exited and isinstance(self._podman, podman.HealthChecks):
            # Podman's `rm -f` shows the container exited (137) before it is gone, where
            # dockerd's is at once: a container removed by hand is no crash (NotFound here)
            time.sleep(podman.REMOVAL_SECONDS)
            self.api.inspect_container(name)
        if step.job and status == "exited" and state.get("ExitCode") == 0:
            return  # a one-shot job, done
        code = state.get("ExitCode") if exited else None  # running again: its exit code is gone
        logs = self.api.logs(name, tail=5).decode("utf-8", "replace").strip()
        self._stop(name)
        what = f"exited with code {code}" if exited else "exited"
        if restarts > 0:
            what += f" and was restarted {restarts} time{'s' if restarts > 1 else ''}"
        what += f" within {self.start_grace:g} s of its start"
        detail = f"; last output: {logs[-500:]}" if logs else ""
        raise ContainerFailed(step, code, f"container {name} {what}{detail}")

    def _stop(self, name: str, timeout: int | None = None) -> None:
        self._starting.pop(name, None)  # stopped on purpose: not a crash
        wait = self.stop_timeout if timeout is None else timeout
        _ignore_missing(lambda: self.api.stop(name, timeout=wait))
        if isinstance(self._podman, podman.HealthChecks):  # a crash loop restarts what it stops
            stop = lambda: _ignore_missing(lambda: self.api.stop(name, timeout=wait))  # noqa: E731
            if not podman.stay_stopped(lambda: self._status(name), stop, wait):
                log.warning("container restarted again and again after its stop", container=name)

    def _status(self, name: str) -> str:
        """A container's state as inspect tells it ("" when it is gone)."""
        info = _or_empty(lambda: self.api.inspect_container(name))
        return str((info.get("State") or {}).get("Status", ""))

    def _stop_all(self, step: StopContainers) -> None:
        """Stop a level's containers at once, so one ignoring SIGTERM costs its own grace
        period, not the sum of all; every stop is tried, and the failures are one error."""
        for stop in step.stops:
            self._starting.pop(stop.name, None)  # here: the dict is not shared with the threads
        workers = min(len(step.stops), PARALLEL_STOPS)
        with ThreadPoolExecutor(workers, thread_name_prefix="hedgerow-stop") as pool:
            futures = [pool.submit(self._stop, s.name, s.timeout) for s in step.stops]
        failed = []
        for stop, future in zip(step.stops, futures, strict=True):
            error = future.exception()
            if isinstance(error, docker.errors.DockerException | requests.RequestException):
                failed.append(f"{stop.name}: {_explain(error)}")
            elif error is not None:
                raise error
        if failed:
            raise EngineError(f"{step.describe()}: {'; '.join(failed)}")


# -- translation of the wire contract (pure, tested without an engine) ---------------------------


def split_reference(image: str) -> tuple[str, str]:
    """Repository and tag (or digest) as the pull endpoint wants them; `latest` by default."""
    name, at, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
    else:
        repository, tag = name, "latest"
    return (repository, digest) if at else (repository, tag)


def port_bindings(
    specs: list[str],
) -> tuple[list[tuple[int, str]], dict[str, list[dict[str, str]]]]:
    """`[ip:][hostPort:]containerPort[/proto]` (ranges, `[IPv6]`) → exposed ports and bindings.

    A range of container ports maps one to one onto a host range of the same size; a single
    container port with a host range lets Docker pick a free port from that range.
    """
    exposed: list[tuple[int, str]] = []
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in specs:
        rest, _, proto = spec.partition("/")
        proto = proto or "tcp"
        if rest.startswith("["):
            end = rest.index("]")
            ip, rest = rest[1:end], rest[end + 2 :]
            host, _, container = rest.partition(":")
        else:
            parts = rest.split(":")
            container = parts[-1]
            host = parts[-2] if len(parts) >= 2 else ""
            ip = parts[0] if len(parts) == 3 else ""
        first, last = _port_range(container)
        for offset, port in enumerate(range(first, last + 1)):
            ranged = host and first != last
            host_port = str(_port_range(host)[0] + offset) if ranged else host
            if (port, proto) not in exposed:
                exposed.append((port, proto))
            binding = {"HostIp": ip, "HostPort": "" if host_port == "0" else host_port}
            bindings.setdefault(f"{port}/{proto}", []).append(binding)
    return exposed, bindings


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def network_plan(spec: Container) -> tuple[str, list[str]]:
    """The network mode to create with, and the networks to connect to afterwards.

    With networks listed and the default mode, the container joins those networks only (as
    `docker run --network`), not the default bridge, so applications are isolated from each
    other by default; on each it is reachable by its short name (`db`) within the release.
    """
    if spec.networks and spec.network_mode in ("bridge", "default"):
        return spec.networks[0], spec.networks[1:]
    return spec.network_mode, list(spec.networks)


def endpoint_config(spec: Container, network: str) -> dict[str, Any]:
    """How the container joins `network`: its name in the release and any more aliases, and a
    fixed address when the release gives one."""
    endpoint = spec.endpoints.get(network)
    config: dict[str, Any] = {"Aliases": [spec.name, *(endpoint.aliases if endpoint else ())]}
    addresses = {
        key: value
        for key, value in (
            ("IPv4Address", endpoint.ipv4_address if endpoint else None),
            ("IPv6Address", endpoint.ipv6_address if endpoint else None),
        )
        if value is not None
    }
    if addresses:
        config["IPAMConfig"] = addresses
    return config


def container_options(spec: Container) -> dict[str, Any]:
    """Keyword arguments of docker-py's `create_container` beyond the image and its name;
    what the release leaves unset is not passed, so the image's own stays."""
    options: dict[str, Any] = {
        "command": spec.command,
        "entrypoint": spec.entrypoint,
        "user": spec.user,
        "working_dir": spec.working_dir,
        "stop_signal": spec.stop_signal,
        "tty": spec.tty or None,
    }
    if spec.stop_grace_period is not None:
        options["stop_timeout"] = grace_seconds(spec.stop_grace_period)
    return {key: value for key, value in options.items() if value is not None}


def grace_seconds(duration: str) -> int:
    """Docker counts a stop's grace period in whole seconds: a part second is rounded up."""
    return -(-duration_ns(duration) // 10**9)


def host_config_options(spec: Container, network_mode: str) -> dict[str, Any]:
    """Keyword arguments of docker-py's `create_host_config` for one wire container."""
    cpu = spec.cpu
    policy: dict[str, str | int] = {"Name": spec.restart_policy}
    if spec.restart_policy == "on-failure":
        policy["MaximumRetryCount"] = spec.max_retries or 0
    return {
        "binds": list(spec.binds) or None,
        "mounts": [
            docker.types.Mount(
                target=m.target, source=m.volume, type="volume", read_only=m.read_only
            )
            for m in spec.volumes
        ]
        or None,
        "restart_policy": policy,
        "network_mode": network_mode,
        "extra_hosts": [_extra_host(h) for h in spec.extra_hosts] or None,
        "privileged": spec.privileged,
        "cap_add": list(spec.cap_add) or None,
        "cap_drop": list(spec.cap_drop) or None,
        "cpu_period": cpu.period if cpu else None,
        "cpu_quota": cpu.quota if cpu else None,
        "cpu_rt_period": cpu.realtime_period if cpu else None,
        "cpu_rt_runtime": cpu.realtime_runtime if cpu else None,
        "mem_limit": spec.memory,
        "mem_reservation": spec.memory_reservation,
        "memswap_limit": spec.memory_swap,
        "mem_swappiness": spec.memory_swappiness,
        "devices": [
            f"{d.path_on_host}:{d.path_in_container}:{d.cgroup_permissions}"
            for d in spec.device_mappings
        ]
        or None,
        "device_requests": [
            docker.types.DeviceRequest(
                driver=r.driver,
                count=r.count or 0,
                device_ids=list(r.device_ids),
                capabilities=[list(c) for c in r.capabilities],
                options=dict(r.options),
            )
            for r in spec.device_requests
        ]
        or None,
        "read_only": spec.read_only_rootfs or None,
        "tmpfs": {t.path: t.options for t in spec.tmpfs} or None,
        "storage_opt": dict(spec.storage_opt) or None,
        "group_add": list(spec.group_add) or None,
        "sysctls": dict(spec.sysctls) or None,
        "security_opt": list(spec.security_opt) or None,
        "shm_size": spec.shm_size,
        "ulimits": [
            docker.types.Ulimit(name=name, soft=limit.soft, hard=limit.hard)
            for name, limit in sorted(spec.ulimits.items())
        ]
        or None,
        "init": spec.init,
        "dns": list(spec.dns) or None,
        "dns_search": list(spec.dns_search) or None,
        "pid_mode": spec.pid_mode,
        "ipc_mode": spec.ipc_mode,
        "log_config": (
            docker.types.LogConfig(type=spec.logging.driver, config=dict(spec.logging.options))
            if spec.logging is not None
            else None
        ),
        "volume_driver": spec.volume_driver,
    }


def healthcheck_config(check: Healthcheck | None) -> dict[str, Any] | None:
    """The release's healthcheck as the Engine API takes it (durations in nanoseconds); None
    keeps the image's own HEALTHCHECK, and `["NONE"]` turns it off."""
    if check is None:
        return None
    config: dict[str, Any] = {"test": list(check.test)}
    for key, value in (
        ("interval", check.interval),
        ("timeout", check.timeout),
        ("start_period", check.start_period),
    ):
        if value is not None:
            config[key] = duration_ns(value)
    if check.retries is not None:
        config["retries"] = check.retries
    return config


def _extra_host(value: str) -> str:
    """`host:[::1]` → `host:::1`: the engine writes the address into /etc/hosts as given."""
    host, _, ip = value.partition(":")
    return f"{host}:{ip[1:-1]}" if ip.startswith("[") and ip.endswith("]") else value


def _container_state(listed: Mapping[str, Any]) -> ContainerState:
    labels: dict[str, str] = listed.get("Labels") or {}
    names: list[str] = listed.get("Names") or []
    name = next((n[1:] for n in names if n.count("/") == 1), names[0].lstrip("/") if names else "")
    settings = listed.get("NetworkSettings") or {}
    mounts: list[dict[str, Any]] = listed.get("Mounts") or []
    return ContainerState(
        name=name,
        application=labels.get(APPLICATION, ""),
        release=labels.get(RELEASE, ""),
        container=labels.get(CONTAINER, ""),
        deployment=labels.get(DEPLOYMENT, ""),
        state=str(listed.get("State", "")),
        digest=labels.get(DIGEST),
        redeploy=labels.get(REDEPLOY),
        image=str(listed.get("Image", "")),
        networks=frozenset(settings.get("Networks") or {}),
        volumes=frozenset(m["Name"] for m in mounts if m.get("Type") == "volume" and m.get("Name")),
        id=str(listed.get("Id", "")),
        order=int(order) if (order := labels.get(ORDER, "0")).isdigit() else 0,
        level=int(level) if (level := labels.get(LEVEL, "")).isdigit() else None,
        health=health_of(str(listed.get("Status", ""))),
        exit_code=exit_code_of(str(listed.get("Status", ""))),
        stop_grace=int(grace) if (grace := labels.get(STOP_GRACE, "")).isdigit() else None,
        secrets=labels.get(SECRETS),
    )


def exit_code_of(status: str) -> int | None:
    """The exit code in a listed container's `Status` ("Exited (0) 5 seconds ago")."""
    match = re.match(r"Exited \((-?\d+)\)", status)
    return int(match.group(1)) if match else None


def _owned(device: str) -> dict[str, str]:
    """The labels that make a network or volume this device's (none: an older agent's)."""
    return {MANAGED: "true", DEVICE: device} if device else {MANAGED: "true"}


def _or_empty(action: Callable[[], Any]) -> Any:
    """`action()`'s answer, or `{}` when the engine fails it (a container gone meanwhile)."""
    try:
        return action()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return {}


def _ignore_missing(action: Callable[[], object]) -> None:
    """Run `action`; something already gone is the goal reached, not an error."""
    try:
        action()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as error:
        if error.status_code == 304:  # not modified: already stopped
            return
        raise


def _explain(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation)
    return str(error) or type(error).__name__


def _scrub(text: str, secret: str) -> str:
    """Belt and braces: a registry or proxy echoing the password must not carry it further."""
    return text.replace(secret, "********") if secret else text
