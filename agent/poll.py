"""The agent's loop: ask the controller, converge the engine, report what it sees.

Level-triggered: every pass reads the engine and computes its steps again, so drift is repaired
even when nothing new arrives. The last desired document is kept on disk (without credentials)
and the engine keeps running it while the controller is away. A release that failed to start is
held (not retried, so the old release keeps serving) until its deployment changes in git.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from agent import readiness
from agent.client import ControllerClient, ControllerUnreachable, ReportConflict, backoff
from agent.converge import EngineLike, Outcome, converge
from agent.errors import EngineError
from agent.readiness import Switch
from agent.state import load_desired, save_desired, write_atomically
from agent.steps import (
    ContainerState,
    EngineState,
    RemoveContainer,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    StartContainer,
    Step,
    StopContainer,
    StopContainers,
    one_shots,
    present_images,
    release_containers,
    release_reports,
    rollback_steps,
)
from reconciler.logs import get_logger
from reconciler.wire import (
    DEFAULT_READINESS,
    MAX_EVENTS,
    MAX_IMAGES,
    REPORT_EVENT_BYTES,
    Degraded,
    Deployment,
    DesiredDocument,
    Event,
    EventKind,
    Facts,
    Readiness,
    ReleaseReport,
    StatusReport,
    clip,
)

SEQ_FILE = "events.json"
SWITCH_FILE = "switches.json"
log = get_logger("hedgerow.agent")


def event_kind(step: Step) -> EventKind:
    """The event recorded when a step is done."""
    if isinstance(step, StartContainer):
        return "started"
    if isinstance(step, StopContainer | StopContainers):
        return "stopped"
    if isinstance(step, RemoveContainer | RemoveNetwork | RemoveVolume | RemoveImage):
        return "deleting"
    return "updating"


def starting_kind(step: Step) -> EventKind | None:
    """The event recorded just before a start or a stop; other steps have only one event."""
    if isinstance(step, StartContainer):
        return "starting"
    if isinstance(step, StopContainer | StopContainers):
        return "stopping"
    return None


class Debounce:
    """At most one reaction every `period` seconds to a burst of notifications, and none lost:
    a notification during the quiet period is answered when it ends."""

    def __init__(self, period: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self._dirty = False
        self._last = float("-inf")

    def notify(self) -> None:
        self._dirty = True

    def due(self) -> bool:
        now = self.clock()
        if self._dirty and now - self._last >= self.period:
            self._dirty = False
            self._last = now
            return True
        return False


def _key(deployment: Deployment) -> tuple[str, str, str, str | None]:
    return deployment.deployment, deployment.release, deployment.digest, deployment.redeploy


class _SwitchFile(msgspec.Struct, kw_only=True):
    """What the agent must not forget across a restart: the switches not yet judged Ready (so
    a release that fails after a restart is still switched back), the releases held after a
    switch back (so a restart does not try them again), and why."""

    switches: dict[str, Switch] = {}
    held: list[tuple[tuple[str, str, str, str | None], str]] = []
    degraded: dict[str, Degraded] = {}


class _StoredEvent(msgspec.Struct, kw_only=True, rename="camel"):
    """An event as a journal holds it: read without the wire's bounds, which an older agent's
    journal may exceed (a long message), so that no event is lost to them."""

    seq: int
    at: str
    kind: EventKind
    message: str
    deployment: str | None = None

    def event(self) -> Event:
        return Event(
            seq=self.seq,
            at=self.at,
            kind=self.kind,
            message=clip(self.message),
            deployment=self.deployment,
        )


class _JournalFile(msgspec.Struct, kw_only=True):
    """The journal as stored: its epoch, the last number given, and the events not yet
    acknowledged. No epoch: a journal written by an agent older than epochs."""

    epoch: str | None = None
    seq: int = 0
    pending: list[_StoredEvent] = msgspec.field(default_factory=list)


def new_epoch() -> str:
    """A journal's id: random, so a journal made anew (a wiped or lost data folder) never
    passes for the one before it."""
    return secrets.token_hex(16)


@dataclass
class Journal:
    """Numbered events not yet acknowledged by the controller, kept on disk so that a retried
    report repeats the same numbers and a restart neither loses nor re-counts them.

    Numbers count within the journal's epoch, made with the journal: the controller scopes
    them by it, so a journal that starts again (from 1) is a new journal, not a conflict. A
    journal an older agent wrote keeps reporting without an epoch, as that agent did."""

    path: Path
    epoch: str | None = None
    seq: int = 0
    pending: list[Event] = field(default_factory=list)

    @classmethod
    def open(cls, folder: Path) -> Journal:
        path = folder / SEQ_FILE
        try:
            stored = msgspec.json.decode(path.read_bytes(), type=_JournalFile)
        except FileNotFoundError:
            stored = None
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("event journal unreadable: starting a new one", error=str(exc))
            stored = None
        if stored is None:  # its epoch is kept at once: every report of this journal names it
            folder.mkdir(parents=True, exist_ok=True)
            journal = cls(path, new_epoch())
            journal._save()
            return journal
        return cls(path, stored.epoch, stored.seq, [e.event() for e in stored.pending])

    def add(self, kind: EventKind, message: str, deployment: str | None, at: datetime) -> None:
        self.seq += 1
        self.pending.append(
            Event(
                seq=self.seq,
                at=at.isoformat(),
                kind=kind,
                message=clip(message),  # engine errors can be long: the wire bounds messages
                deployment=deployment,
            )
        )
        self._save()

    def batch(self) -> list[Event]:
        """The oldest pending events that fit one report: at most MAX_EVENTS, and at most
        REPORT_EVENT_BYTES of JSON (always one, which a bounded message keeps small)."""
        chosen: list[Event] = []
        size = 0
        for event in self.pending[:MAX_EVENTS]:
            size += len(msgspec.json.encode(event)) + 1
            if chosen and size > REPORT_EVENT_BYTES:
                break
            chosen.append(event)
        return chosen

    def acknowledge(self, last: int | None) -> bool:
        """Forget the events the controller stored (up to `last`); True when some were."""
        if last is None:
            return False
        kept = [e for e in self.pending if e.seq > last]
        if len(kept) == len(self.pending):
            return False
        self.pending = kept
        self._save()
        return True

    def restart(self) -> None:
        """Start a new epoch and number the pending events again from 1: the controller holds
        other events under the old numbers (this journal was restored from a copy, or is an old
        agent's), and refuses these rather than lose either."""
        self.epoch = new_epoch()
        self.pending = [
            msgspec.structs.replace(e, seq=n) for n, e in enumerate(self.pending, start=1)
        ]
        self.seq = len(self.pending)
        self._save()

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        stored = {"epoch": self.epoch, "seq": self.seq, "pending": self.pending}
        temporary.write_bytes(msgspec.json.encode(stored))
        temporary.replace(self.path)


def report_images(desired: DesiredDocument, present: list[str]) -> list[str]:
    """At most MAX_IMAGES of the engine's images: first those the desired containers use (the
    controller sends pull credentials for any it does not see), then the rest in order."""
    wanted = {c.image for d in desired.deployments for c in d.containers}
    first = [image for image in present if image in wanted]
    rest = [image for image in present if image not in wanted]
    return (first + rest)[:MAX_IMAGES]


class Agent:
    def __init__(
        self,
        client: ControllerClient,
        engine: EngineLike,
        data_dir: Path,
        *,
        interval: float = 30.0,
        rng: random.Random | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        facts: Callable[[], Facts] | None = None,
    ) -> None:
        self.client = client
        self.facts = facts  # what the device is, sent in every report (`agent.facts`)
        self.engine = engine
        self.data_dir = data_dir
        self.interval = interval
        self.rng = rng or random.Random()
        self.now = now
        self.sleep = sleep
        data_dir.mkdir(parents=True, exist_ok=True)
        self.desired = load_desired(data_dir)
        self.etag: str | None = None
        self.journal = Journal.open(data_dir)
        self.held: dict[tuple[str, str, str, str | None], str] = {}  # failed release → error
        self.switched: dict[str, EngineState] = {}  # see `Outcome.switched`
        # by application: switches not yet judged Ready (see agent.readiness)
        self.switches: dict[str, Switch] = {}
        self.degraded: dict[str, Degraded] = {}  # by deployment: why it was switched back
        self.ok_since: dict[tuple[str, str], float] = {}  # (application, release) → since
        self.ready: dict[tuple[str, str], bool] = {}  # the last verdict, for the report
        self.ready_before: dict[tuple[str, str], bool] = {}
        # (application, release) → restart counts at the first and at the last look, while
        # it is not yet Ready (the engine's list does not carry them: one inspect each)
        self.restarts: dict[tuple[str, str], tuple[dict[str, int], dict[str, int]]] = {}
        self.look: float | None = None  # seconds until a verdict may change
        self._saved = b""
        self._load_switches()
        self.errors: dict[str, str] = {}  # deployment → what kept it from converging last pass
        self.failures = 0
        self._last_failures: set[tuple[str | None, str]] = set()
        self.lock = threading.Lock()  # one pass at a time: the loop, or a Docker event
        self.polling = False  # in the long poll: nothing to finish, a stop may cut it short

    def fetch(self, wait: float) -> bool:
        """Ask for the desired document; True when a new one arrived."""
        fetched = self.client.desired(self.etag, wait)
        if fetched.document is None:
            return False
        self.etag = fetched.etag
        self.desired = fetched.document
        hold = getattr(self.engine, "hold_secrets", None)
        if hold is not None:  # in memory only: save_desired writes none of them
            hold(fetched.document.secrets)
        save_desired(self.data_dir, fetched.document)
        return True

    def converge(self) -> Outcome | None:
        """One pass over the engine; held releases are left as they are."""
        if self.desired is None:
            return None
        live = {_key(d) for d in self.desired.deployments}
        self.held = {k: v for k, v in self.held.items() if k in live}
        kept = {k[0] for k in self.held}
        self.degraded = {d: v for d, v in self.degraded.items() if d in kept}
        hold = {d.application for d in self.desired.deployments if _key(d) in self.held}
        by_app = {d.application: d for d in self.desired.deployments}

        def before(step: Step) -> None:
            kind = starting_kind(step)
            if kind is not None:
                deployment = by_app.get(step.application or "")
                name = deployment.deployment if deployment else None
                self.journal.add(kind, step.describe(), name, self.now())

        outcome = converge(
            self.engine,
            self.desired,
            hold=hold,
            on_step=before,
            switched=self.switched,
            keep_aside=set(self.switches),
            on_switch=lambda app, state: self._switching(app, state, self.now().timestamp()),
        )
        self.switched = {
            app: state
            for app, state in {**self.switched, **outcome.switched}.items()
            if app in by_app and app not in outcome.rolled_back
        }
        at = self.now()
        self.errors = {
            by_app[app].deployment: message
            for app, message in outcome.blocked_by.items()
            if app in by_app
        }
        for step in outcome.done:
            log.info("step done", step=step.describe())
            deployment = by_app.get(step.application or "")
            self.journal.add(
                event_kind(step), step.describe(), deployment.deployment if deployment else None, at
            )
        seen = set()
        for failure in outcome.failures:
            key = (failure.deployment, failure.message)
            seen.add(key)
            if key not in self._last_failures:  # a stuck pull is one event, not one per pass
                log.warning("step failed", error=failure.message, deployment=failure.deployment)
                self.journal.add("error", failure.message, failure.deployment, at)
            wanted = by_app.get(failure.application or "")
            if wanted is not None and failure.exited and failure.application in outcome.rolled_back:
                self.held[_key(wanted)] = failure.message
        self._last_failures = seen
        self._judge(outcome, by_app, hold)
        return outcome

    # -- readiness -------------------------------------------------------------------------------

    def _judge(self, outcome: Outcome, by_app: dict[str, Deployment], hold: set[str]) -> None:
        """Record this pass's switches, then judge each running desired release: Ready ends
        its switch; Failed (not Ready by the deadline) switches it back, holds and explains
        it."""
        at = self.now().timestamp()
        for app in outcome.switched:  # recorded as they began (converge's on_switch)
            if app in by_app:  # new containers: a redeploy's release is judged from scratch
                key = (app, by_app[app].release)
                for judged in (self.ok_since, self.restarts, self.ready_before):
                    judged.pop(key, None)
        for app in list(self.switches):
            gone = app not in by_app or by_app[app].state != "Running"
            if gone or app in outcome.rolled_back or app in hold:
                del self.switches[app]
        try:
            engine = self.engine.read()
        except EngineError:
            self._save_switches()
            return
        ids = {c.id: c for c in engine.containers}
        for app, record in list(self.switches.items()):
            kept = [ids[i] for i in record.up if i in ids]
            # nothing was stopped (a start, a repair): no switch; or what ran before is gone
            # (removed by hand): nothing to go back to
            if not kept or all(c.up for c in kept):
                del self.switches[app]
        looks: list[float] = []
        self.ready = {}
        live: set[tuple[str, str]] = set()
        for app, want in by_app.items():
            if want.state != "Running" or _key(want) in self.held:
                continue
            key = (app, want.release)
            live.add(key)
            mine = release_containers(engine.containers, want)
            stuck = readiness.blocking(mine, len(want.containers), one_shots(want))
            ok = stuck is None and bool(mine)
            looping: str | None = None
            counting = getattr(self.engine, "restarts", None)
            if counting is not None and not self.ready_before.get(key, False) and mine:
                counts = counting(c.name for c in mine)
                base, last = self.restarts.get(key, (counts, counts))
                again, worst, total = readiness.restarted(base, last, counts)
                self.restarts[key] = (base, counts)
                ok = ok and not again
                if total >= readiness.RESTARTS and app in self.switches:
                    looping = worst
            since = readiness.ok_since(self.ok_since.get(key), ok, at)
            if since is None:
                self.ok_since.pop(key, None)
            else:
                self.ok_since[key] = since
            rules = want.readiness or DEFAULT_READINESS
            switch = self.switches.get(app)
            switched = switch.at if switch is not None else None
            verdict = readiness.verdict(since, switched, rules, at)
            if looping is not None and verdict != "Ready":
                verdict = "Failed"
                stuck = next((c for c in mine if c.name == looping), stuck)
            self.ready[key] = verdict == "Ready"
            if verdict == "Ready":
                self.switches.pop(app, None)
            elif verdict == "Failed" and switch is not None:
                self._switch_back(want, switch, engine, stuck, rules, looping is not None)
            else:
                look = readiness.next_look(since, switched, rules, at)
                if look is not None:
                    looks.append(look)
        self.ok_since = {k: v for k, v in self.ok_since.items() if k in live}
        self.restarts = {k: v for k, v in self.restarts.items() if k in live}
        self.ready_before = dict(self.ready)
        self.look = min(looks) if looks else None
        self._save_switches()

    def _switching(self, app: str, before: EngineState, at: float) -> None:
        """Record a switch of `app` from what ran `before`, and write it down at once: an agent
        killed in the middle of the switch must judge it when it starts again. A first deploy
        has nowhere to go back to; a record of these very containers keeps its time."""
        up = tuple(c.id for c in before.containers if c.application == app and c.up)
        if up and (app not in self.switches or self.switches[app].up != up):
            self.switches[app] = Switch(up=up, at=at)
            self._save_switches()

    def _switch_back(
        self,
        want: Deployment,
        switch: Switch,
        engine: EngineState,
        stuck: ContainerState | None,
        rules: Readiness,
        looping: bool = False,
    ) -> None:
        app = want.application
        seconds = rules.progress_deadline_seconds
        if looping and stuck is not None:
            reason = f"{stuck.container} keeps restarting: {readiness.RESTARTS} restarts or more"
        elif stuck is None:
            reason = f"not Ready within {seconds} s of the switch"
        else:
            state = stuck.health if stuck.health in ("starting", "unhealthy") else stuck.state
            reason = f"not Ready within {seconds} s of the switch: {stuck.container} is {state}"
        health, lines = None, []
        diagnose = getattr(self.engine, "diagnose", None)
        if stuck is not None and diagnose is not None:
            health, lines = diagnose(stuck.name)
        before = EngineState(
            containers=tuple(
                dataclasses.replace(c, state="running")  # what a switch back starts
                for c in engine.containers
                if c.application == app and c.id in switch.up
            )
        )
        log.warning("switching back", deployment=want.deployment, reason=reason)
        at = self.now()
        self.journal.add("error", reason, want.deployment, at)
        for step in rollback_steps(before, engine, app):
            try:
                self.engine.run(step)
            except EngineError as error:
                self.journal.add("error", f"switching back: {error}", want.deployment, at)
        self.switches.pop(app, None)
        self.ok_since.pop((app, want.release), None)
        self.ready.pop((app, want.release), None)
        self.held[_key(want)] = reason
        self.degraded[want.deployment] = Degraded(
            reason=clip(reason),
            container=stuck.container if stuck is not None else None,
            health=clip(health) if health else None,
            log=[clip(line) for line in lines],
        )

    def _load_switches(self) -> None:
        try:
            found = msgspec.json.decode(
                (self.data_dir / SWITCH_FILE).read_bytes(), type=_SwitchFile
            )
        except (FileNotFoundError, msgspec.DecodeError):
            return
        self.switches = dict(found.switches)
        self.held = dict(found.held)
        self.degraded = dict(found.degraded)

    def _save_switches(self) -> None:
        """Write the record when it changed: a switch, a verdict, a switch back."""
        state = _SwitchFile(
            switches=self.switches, held=list(self.held.items()), degraded=self.degraded
        )
        encoded = msgspec.json.encode(state)
        if encoded != self._saved:
            write_atomically(self.data_dir, SWITCH_FILE, encoded)
            self._saved = encoded

    def report(self) -> None:
        """Send what the engine runs, and the events the controller has not acknowledged."""
        desired = self.desired or DesiredDocument(
            device=self.client.device, revision="", deployments=[]
        )
        engine = self.engine.read()
        releases = release_reports(desired, engine)
        errors = {
            **self.errors,
            **{
                d.deployment: self.held[_key(d)]
                for d in desired.deployments
                if _key(d) in self.held
            },
        }
        errors = {deployment: clip(message) for deployment, message in errors.items()}
        releases = [
            msgspec.structs.replace(r, error=errors.get(r.deployment))
            if r.deployment in errors
            else r
            for r in releases
        ]
        wanted = {(d.application, d.release): d for d in desired.deployments}
        releases = [self._judged(r, wanted.get((r.application, r.release))) for r in releases]
        # A deployment with nothing on the engine yet (its first pull failed) still reports its
        # error, on the desired release, found incomplete.
        found = {r.deployment for r in releases}
        releases += [
            ReleaseReport(
                application=d.application,
                release=d.release,
                deployment=d.deployment,
                running=False,
                complete=False,
                redeploy=d.redeploy,
                digest=d.digest,
                error=errors[d.deployment],
            )
            for d in desired.deployments
            if d.deployment in errors and d.deployment not in found
        ]
        base = StatusReport(
            device=self.client.device,
            revision=desired.revision or None,
            releases=releases,
            images=report_images(desired, present_images(desired, engine)),
            facts=self.facts() if self.facts is not None else None,
        )
        self._send(base)

    def _judged(self, found: ReleaseReport, want: Deployment | None) -> ReleaseReport:
        """A desired release's report with its readiness, or why it was switched back."""
        if want is None or want.deployment != found.deployment:
            return found
        if _key(want) in self.held and want.deployment in self.degraded:
            return msgspec.structs.replace(found, degraded=self.degraded[want.deployment])
        if want.state == "Running":
            key = (found.application, found.release)
            counts = self.restarts.get(key, ({}, {}))[1]
            containers = [
                msgspec.structs.replace(c, restarts=counts[c.name]) if c.name in counts else c
                for c in found.containers
            ]
            ready = self.ready.get(key, False)
            return msgspec.structs.replace(found, ready=ready, containers=containers)
        return found

    def _send(self, base: StatusReport) -> None:
        """Send `base` with the journal's oldest events, and again with the next ones while the
        controller takes them, so a backlog drains in one pass, a bounded report at a time."""
        while True:
            report = msgspec.structs.replace(
                base, events=self.journal.batch(), epoch=self.journal.epoch
            )
            try:
                last = self.client.report(report)
            except ReportConflict as exc:
                log.warning("events refused: numbering them in a new journal", error=str(exc))
                self.journal.restart()
                report = msgspec.structs.replace(
                    base, events=self.journal.batch(), epoch=self.journal.epoch
                )
                last = self.client.report(report)
            if not (self.journal.acknowledge(last) and self.journal.pending):
                return

    def step(self, wait: float) -> None:
        """Fetch (long poll), converge, report; on a controller error, converge anyway.

        The long poll ends early when the start grace of containers just started ends, so that
        a crash is caught even without the Docker event that usually reports it first.
        """
        check = self.engine.next_check()
        if check is not None:
            wait = min(wait, check)
        if self.look is not None:  # a verdict on readiness is due: judge it in time
            wait = min(wait, self.look + 0.2)
        try:
            self.polling = True
            try:
                self.fetch(wait)
            finally:
                self.polling = False
            reachable = True
        except ControllerUnreachable as exc:
            log.warning("keeping the last desired state", error=str(exc))
            reachable = False
        if reachable:
            reachable = self.react()
        else:
            with self.lock:
                self.converge()
        if reachable:
            self.failures = 0
        else:
            self.failures += 1
            self.sleep(backoff(self.failures, self.interval, self.rng))

    def react(self) -> bool:
        """Converge and report now (after each poll, and on Docker events); False when the
        report could not be sent."""
        with self.lock:
            self.converge()
            try:
                self.report()
            except ControllerUnreachable as exc:
                log.warning("report not sent", error=str(exc))
                return False
        return True

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        while not stop():
            try:
                self.step(wait=self.interval * self.rng.uniform(0.9, 1.0))
            except Exception:  # a bug in one pass must not stop the device's agent
                if stop():  # a stop cut the pass short (`agent.errors.Stopped`): no failure
                    return
                log.exception("pass failed; retrying")
                self.failures += 1
                self.sleep(backoff(self.failures, self.interval, self.rng))
