"""`hedgerow-agent` (and `python -m agent`, `hedgerow agent`): run the agent against the local
Docker engine. A device installs the agent alone (`pip install hedgerow`): this entry point
needs msgspec, requests, docker and structlog, nothing of the controller's."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from agent.client import ControllerClient
from agent.controllers import parse_urls
from agent.engine import Engine
from agent.enroll import TOKEN_FILE, Identity, NoToken, enroll, save, saved
from agent.errors import EngineError, Stopped
from agent.facts import FactsProbe
from agent.identity import IdentityError, check_name, system_model, this_device_name
from agent.poll import Agent, Debounce
from agent.secretfiles import SecretFiles
from reconciler import logs
from reconciler.wire import EnrollRequest

log = logs.get_logger("hedgerow.agent")
STOP_WAIT = 8.0  # seconds a pass under way may take to finish at a stop (systemd waits 15)


def duration(text: str) -> float:
    """`30`, `30s`, `2m` or `1h` in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s or 2m")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def wait_for_engine(
    stopping: Callable[[], bool],
    interval: float,
    device: str,
    sleep: Callable[[float], object] = time.sleep,
    secret_files: SecretFiles | None = None,
) -> Engine | None:
    """The engine DOCKER_HOST names, once it answers (it may start after the agent at boot),
    seen as `device`'s; None when asked to stop first. Waits 1 s, doubling up to the poll
    interval."""
    failures = 0
    while not stopping():
        try:
            return Engine.from_env(device, secret_files)
        except EngineError as exc:
            failures += 1
            log.warning("waiting for the engine", error=str(exc), attempts=failures)
            sleep(min(interval, 2.0 ** min(failures - 1, 10)))
    return None


@dataclass(frozen=True)
class Start:
    """How the agent identifies itself: a device token file, the identity an enrollment
    saved in the data folder, or an enrollment token to get one with."""

    device: str | None = None  # --device; default: the saved name, else the hostname
    token_file: Path | None = None
    enroll_token_file: Path | None = None
    system_model: str | None = None  # --system-model; default: the device tree's, or DMI's

    def name(self, data_dir: Path) -> str:
        if self.device is not None:
            return self.device
        found = saved(data_dir)
        return found.device if found is not None else this_device_name()


def run(
    controller: str | Sequence[str],
    start: Start,
    data_dir: Path,
    poll_interval: float,
    ca_file: Path | None = None,
    proxy: str | None = None,
    secrets_dir: Path | None = None,
) -> None:
    """Run the agent until SIGTERM or SIGINT. `controller`: one URL, or several replicas of
    one controller (tried in turn when one cannot answer). Raises NoToken or IdentityError
    before anything starts when the device cannot tell who it is."""
    device = start.name(data_dir)
    identity = _identity(start, data_dir, device)
    verify = str(ca_file) if ca_file else True
    stopping = threading.Event()
    agent: Agent | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        """Finish the pass under way (its steps, the report), then exit; a long poll, which
        has nothing to finish, is cut short at once (it may hold for the poll interval)."""
        stopping.set()
        if agent is not None and agent.polling:
            raise Stopped

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    engine = wait_for_engine(
        stopping.is_set, poll_interval, device, stopping.wait, secret_folder(secrets_dir)
    )
    if engine is None:
        return
    probe = FactsProbe(engine.describe, data_dir)
    if identity is None:  # first start: enroll with the enrollment token
        assert start.enroll_token_file is not None
        shared = start.enroll_token_file.read_text(encoding="utf-8").strip()
        model = start.system_model or system_model()
        asking = ControllerClient(controller, device, shared, verify=verify, proxy=proxy)
        request = EnrollRequest(device=device, system_model=model, facts=probe())
        try:
            identity = enroll(asking, request, stopping.is_set, poll_interval, stopping.wait)
        finally:
            asking.close()
        if identity is None:
            return
        save(data_dir, identity)
    client = ControllerClient(controller, identity.device, identity.token, verify=verify,
                              proxy=proxy)  # fmt: skip
    agent = Agent(client, engine, data_dir, interval=poll_interval, facts=probe)
    log.info("agent started", device=device)
    debounce = Debounce(2.0)  # a burst of engine events: at most one pass every 2 s
    watcher = Engine.from_env(device)  # its own connection for the event stream
    threading.Thread(target=watcher.watch, args=(debounce.notify,), daemon=True).start()

    def react_to_engine() -> None:
        while not stopping.is_set():
            time.sleep(0.2)
            if debounce.due():
                try:
                    agent.react()
                except Exception:  # the poll loop goes on; it will converge again
                    log.exception("pass after an engine event failed")

    threading.Thread(target=react_to_engine, daemon=True).start()
    try:
        agent.run(stop=stopping.is_set)
    finally:
        # a pass started by an engine event finishes its steps before the process ends
        if agent.lock.acquire(timeout=STOP_WAIT):
            agent.lock.release()
        client.close()
    log.info("agent stopped", device=device)


def _identity(start: Start, data_dir: Path, device: str) -> Identity | None:
    """The device token to use (None: enroll first). An explicit --token-file wins; then the
    token an enrollment saved; the enrollment token only when there is neither."""
    if start.token_file is not None:
        return Identity(device, start.token_file.read_text(encoding="utf-8").strip())
    found = saved(data_dir)
    if found is not None:
        if found.device != device:
            raise IdentityError(
                f"this device enrolled as {found.device}, not {device}: drop --device, or "
                f"remove {data_dir / TOKEN_FILE} to enroll again"
            )
        return found
    if start.enroll_token_file is None:
        raise NoToken(
            f"no device token: pass --token-file, or --enroll-token-file to enroll (none saved "
            f"in {data_dir})"
        )
    if not start.enroll_token_file.is_file():
        raise NoToken(f"no enrollment token file at {start.enroll_token_file}")
    return None


def secret_folder(path: Path | None) -> SecretFiles | None:
    """Where Secret files go, when it is a tmpfs; else None, and containers needing Secret
    files are refused with the reason (the others run)."""
    if path is None:
        return None
    try:
        return SecretFiles(path)
    except (EngineError, OSError) as exc:
        log.warning("no Secret files on this device", error=str(exc))
        return None


def proxy_url(text: str) -> str:
    """An `http://` or `https://` proxy URL; the error never repeats it (it may hold a password)."""
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise ValueError("the proxy must be an http:// or https:// URL")
    return text


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hedgerow-agent", description=__doc__)
    parser.add_argument(
        "--controller",
        required=True,
        action="append",
        type=_controllers_argument,
        metavar="URL[,URL...]",
        help="Controller URL; several (comma-separated or repeated): replicas, tried in turn "
        "when one cannot answer",
    )
    parser.add_argument(
        "--device",
        help="This device's name; default: the name it enrolled under, else the hostname "
        "made a DNS label",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="The device's token (hedgerow device token NAME); not needed once enrolled",
    )
    parser.add_argument(
        "--enroll-token-file",
        type=Path,
        help="A shared enrollment token (hedgerow enrollment create): used once, at the first "
        "start, to get this device's own token, kept in --data-dir",
    )
    parser.add_argument(
        "--system-model",
        help="Reported at enrollment; default: the device tree's model, or DMI's product name",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/hedgerow"))
    parser.add_argument("--poll-interval", type=duration, default=30.0)
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        default=Path("/run/hedgerow/secrets"),
        help="Where Secret files are written: a folder on a tmpfs, never on disk",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        help="CA certificate(s) to trust for the controller; REQUESTS_CA_BUNDLE is ignored",
    )
    parser.add_argument(
        "--proxy",
        type=_proxy_argument,
        default=None,
        help="http(s):// proxy to the controller; HTTPS_PROXY and friends are ignored",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=None,
        help="json or console; default: json unless the logs go to a terminal",
    )
    return parser


def _controllers_argument(text: str) -> list[str]:
    try:
        return parse_urls([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def controllers(values: Sequence[Sequence[str]]) -> list[str]:
    """The URLs of every `--controller`, in order; ValueError when one is listed twice."""
    return parse_urls([url for urls in values for url in urls])


def _proxy_argument(text: str) -> str:
    try:
        return proxy_url(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's message alone
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    command = parser()
    args = command.parse_args(argv)
    try:
        urls = controllers(args.controller)
    except ValueError as exc:  # the same URL in two --controller options
        command.error(str(exc))
    if args.device is not None:
        try:
            check_name(args.device)
        except IdentityError as exc:
            command.error(str(exc))
    logs.configure(args.log_format)
    start = Start(args.device, args.token_file, args.enroll_token_file, args.system_model)
    try:
        run(urls, start, args.data_dir, args.poll_interval, args.ca_file, args.proxy,
            args.secrets_dir)  # fmt: skip
    except (NoToken, IdentityError) as exc:
        log.error("cannot start", error=str(exc))
        print(f"hedgerow-agent: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
