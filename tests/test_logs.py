"""One logging setup (reconciler.logs) for the controller and the agent: JSON lines that
`json.loads` parses, each with timestamp, level, logger and event, and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git
import httpx
import pytest
import structlog

from reconciler import logs
from reconciler.demo.daemons import free_port
from reconciler.secrets.secret import Secret
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.repos import MANIFESTS, commit

REQUIRED = {"timestamp", "level", "logger", "event"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide state: put structlog and the root logger back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_redact_hides_the_values_of_secret_keys() -> None:
    event = {
        "event": "pulled",
        "password": "x",
        "registry_password": "x",
        "token": "x",
        "Authorization": "x",
        "webhook_secret": "x",
        "image": "r/app:1",
    }
    redacted = logs.redact(None, "info", dict(event))
    assert redacted == {
        "event": "pulled",
        "password": logs.REDACTED,
        "registry_password": logs.REDACTED,
        "token": logs.REDACTED,
        "Authorization": logs.REDACTED,
        "webhook_secret": logs.REDACTED,
        "image": "r/app:1",
    }


def test_the_default_is_json_unless_the_logs_go_to_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.default_format(io.StringIO()) == "json"
    assert logs.default_format(Terminal()) == "console"


def test_json_lines_from_structlog_and_the_standard_library(restore_logging: None) -> None:
    out = io.StringIO()
    assert logs.configure("json", stream=out) == "json"
    logs.get_logger("hedgerow.controller").info(
        "revision applied", revision="abc", password="hunter2-not-shown"
    )
    logging.getLogger("uvicorn.error").warning("a library's line")
    logging.getLogger("urllib3").info("quietened below WARNING")
    try:
        raise ValueError("boom")
    except ValueError:
        logs.get_logger("hedgerow.agent").exception("pass failed")
    found = lines(out)
    assert [(e["logger"], e["level"], e["event"]) for e in found] == [
        ("hedgerow.controller", "info", "revision applied"),
        ("uvicorn.error", "warning", "a library's line"),
        ("hedgerow.agent", "error", "pass failed"),
    ]
    assert all(entry.keys() >= REQUIRED for entry in found)
    assert found[0]["revision"] == "abc" and found[0]["password"] == logs.REDACTED
    assert found[0]["timestamp"].endswith("Z")
    assert "boom" in json.dumps(found[2]["exception"])
    assert "hunter2" not in out.getvalue()


def test_a_secret_value_is_masked_in_every_format(restore_logging: None) -> None:
    for log_format in logs.FORMATS:
        out = io.StringIO()
        logs.configure(log_format, stream=out)
        logs.get_logger("hedgerow.test").info("decrypted", value=Secret(PLAINTEXT_SECRETS[0]))
        assert PLAINTEXT_SECRETS[0] not in out.getvalue()
        assert "********" in out.getvalue()


def _fails_holding_a_secret() -> None:
    password = PLAINTEXT_SECRETS[1]  # a local of the failing frame, as a decrypted value would be
    raise RuntimeError(f"failed with {len(password)} characters")


@pytest.mark.parametrize("log_format", logs.FORMATS)
def test_a_traceback_never_shows_local_values(restore_logging: None, log_format: str) -> None:
    """structlog's own defaults render the locals of every frame; ours never do."""
    out = io.StringIO()
    logs.configure("json" if log_format == "json" else "console", stream=out)
    try:
        _fails_holding_a_secret()
    except RuntimeError:
        logs.get_logger("hedgerow.test").exception("it failed")
    assert "failed with 26 characters" in out.getvalue()
    assert "_fails_holding_a_secret" in out.getvalue()
    assert PLAINTEXT_SECRETS[1] not in out.getvalue()


def test_before_configure_a_traceback_shows_no_local_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The default reconciler.logs installs on import, for a test or an embedding program."""
    code = (
        "import reconciler.logs as logs\n"
        "def f():\n"
        f"    password = {PLAINTEXT_SECRETS[1]!r}\n"
        "    raise RuntimeError('boom')\n"
        "try:\n    f()\nexcept RuntimeError:\n"
        "    logs.get_logger('t').exception('it failed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "boom" in done.stdout + done.stderr
    assert PLAINTEXT_SECRETS[1] not in done.stdout + done.stderr


def test_configuring_again_replaces_only_our_handler(restore_logging: None) -> None:
    theirs = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(theirs)
    first, second = io.StringIO(), io.StringIO()
    logs.configure("json", stream=first)
    logs.configure("console", stream=second)
    logging.getLogger("hedgerow.test").warning("once")
    assert first.getvalue() == "" and "once" in second.getvalue()
    assert theirs in logging.getLogger().handlers
    logging.getLogger().removeHandler(theirs)


# -- the processes -------------------------------------------------------------------------------


def _wait(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).json()["revision"] is not None
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@pytest.mark.e2e
def test_controller_and_agent_log_json_lines_without_secrets(
    tmp_path: Path, git_identity: None
) -> None:
    """The example repository (its credential decrypted with the demo key) followed by the
    controller, a commit rejected, and an agent whose engine does not answer (it waits for it,
    warning). Both processes log JSON lines only, and neither the registry password, the device
    token nor the operator token is in any of them. (tests/test_e2e_more.py checks the same of
    an agent that pulls with a forwarded password, on a real engine.)"""
    repo_dir = tmp_path / "repo"
    shutil.copytree(MANIFESTS, repo_dir)
    repo = git.Repo.init(repo_dir, initial_branch="main")
    commit(repo, "the example")
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    operator = tmp_path / "operator-token"
    operator.write_text("hdr_operator-token-for-the-log-test\n")
    hedgerow = [sys.executable, "-m", "reconciler"]
    token = subprocess.run(
        [*hedgerow, "device", "token", "lyon-orin-01", "--data-dir", str(data)],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout.strip()  # fmt: skip
    token_file = tmp_path / "device-token"
    token_file.write_text(token)
    controller_log, agent_log = tmp_path / "controller.log", tmp_path / "agent.log"
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    processes = []
    with controller_log.open("wb") as c_out, agent_log.open("wb") as a_out:
        processes.append(subprocess.Popen(
            [*hedgerow, "controller", "--repo", str(repo_dir), "--data-dir", str(data),
             "--listen", f"127.0.0.1:{port}", "--age-key-file",
             str(MANIFESTS / "DEMO-ONLY-age-key.txt"), "--operator-token-file", str(operator),
             "--log-format", "json", "--watch"],
            stdin=subprocess.DEVNULL, stdout=c_out, stderr=c_out,
        ))  # fmt: skip
        try:
            _wait(lambda: _answers(url), 30, "the controller")
            commit(repo, "broken", {"broken.yaml": "kind: [\n"})  # a rejection: a warning line
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "agent", "--controller", url, "--device",
                 "lyon-orin-01", "--token-file", str(token_file), "--data-dir",
                 str(tmp_path / "agent"), "--poll-interval", "1s", "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=a_out, stderr=a_out, env=env,
            ))  # fmt: skip
            _wait(lambda: agent_log.stat().st_size > 0, 30, "the agent's first line")
            _wait(lambda: b"revision rejected" in controller_log.read_bytes(), 30, "a rejection")
            time.sleep(2)  # a few more lines
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGINT if process is processes[0] else signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    banner = "hedgerow controller: following"  # the command's own stdout, not a log line
    for path in (controller_log, agent_log):
        text = path.read_text()
        for secret in (*PLAINTEXT_SECRETS, token, "hdr_operator-token-for-the-log-test"):
            assert secret not in text, f"{path.name} holds a secret"
        entries = [json.loads(line) for line in text.splitlines() if not line.startswith(banner)]
        assert entries, f"{path.name} is empty"
        for entry in entries:
            assert entry.keys() >= REQUIRED, entry
    agent_events = {json.loads(line)["event"] for line in agent_log.read_text().splitlines()}
    assert "waiting for the engine" in agent_events
