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
from pathlib import Path
from types import FrameType

from agent.client import ControllerClient
from agent.controllers import parse_urls
from agent.engine import Engine
from agent.errors import EngineError, Stopped
from agent.poll import Agent, Debounce
from agent.secretfiles import SecretFiles
from reconciler import logs

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
    sleep: Callable[[float], None] = time.sleep,
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


def run(
    controller: str | Sequence[str],
    device: str,
    token_file: Path,
    data_dir: Path,
    poll_interval: float,
    ca_file: Path | None = None,
    proxy: str | None = None,
    secrets_dir: Path | None = None,
) -> None:
    """Run the agent until SIGTERM or SIGINT. `controller`: one URL, or several replicas of
    one controller (tried in turn when one cannot answer)."""
    token = token_file.read_text(encoding="utf-8").strip()
    verify = str(ca_file) if ca_file else True
    client = ControllerClient(controller, device, token, verify=verify, proxy=proxy)
    stopping = False
    agent: Agent | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        """Finish the pass under way (its steps, the report), then exit; a long poll, which
        has nothing to finish, is cut short at once (it may hold for the poll interval)."""
        nonlocal stopping
        stopping = True
        if agent is not None and agent.polling:
            raise Stopped

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    engine = wait_for_engine(
        lambda: stopping, poll_interval, device, secret_files=secret_folder(secrets_dir)
    )
    if engine is None:
        client.close()
        return
    agent = Agent(client, engine, data_dir, interval=poll_interval)
    log.info("agent started", device=device)
    debounce = Debounce(2.0)  # a burst of engine events: at most one pass every 2 s
    watcher = Engine.from_env(device)  # its own connection for the event stream
    threading.Thread(target=watcher.watch, args=(debounce.notify,), daemon=True).start()

    def react_to_engine() -> None:
        while not stopping:
            time.sleep(0.2)
            if debounce.due():
                try:
                    agent.react()
                except Exception:  # the poll loop goes on; it will converge again
                    log.exception("pass after an engine event failed")

    threading.Thread(target=react_to_engine, daemon=True).start()
    try:
        agent.run(stop=lambda: stopping)
    finally:
        # a pass started by an engine event finishes its steps before the process ends
        if agent.lock.acquire(timeout=STOP_WAIT):
            agent.lock.release()
        client.close()
    log.info("agent stopped", device=device)


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
    parser.add_argument("--device", required=True, help="This device's name")
    parser.add_argument("--token-file", required=True, type=Path)
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
    logs.configure(args.log_format)
    run(urls, args.device, args.token_file, args.data_dir, args.poll_interval,
        args.ca_file, args.proxy, args.secrets_dir)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
