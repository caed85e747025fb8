"""A device installs the agent alone: `pip install hedgerow` (no extra) into a fresh virtual
environment gives a working `hedgerow-agent`, and none of the controller's libraries; the
systemd unit that runs it verifies with that agent, and passes it only options it takes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.repos import ROOT

pytestmark = pytest.mark.e2e

CONTROLLER_LIBRARIES = ("pydantic", "fastapi", "sqlalchemy", "typer", "rich", "uvicorn", "yaml")


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("agent-only") / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    installed = run(venv / "bin" / "pip", "install", "--quiet", ROOT)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_the_agent_installs_alone_and_runs(agent_venv: Path) -> None:
    help_text = run(agent_venv / "bin" / "hedgerow-agent", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--controller" in help_text.stdout and "--log-format" in help_text.stdout
    as_module = run(agent_venv / "bin" / "python", "-m", "agent", "--help")
    assert as_module.returncode == 0, as_module.stderr


def test_the_agent_only_install_has_none_of_the_controllers_libraries(agent_venv: Path) -> None:
    python = agent_venv / "bin" / "python"
    for library in CONTROLLER_LIBRARIES:
        found = run(python, "-c", f"import {library}")
        assert found.returncode != 0, f"{library} is installed with the agent alone"
    loaded = run(
        python, "-c", "import agent.main, reconciler.logs, reconciler.wire, reconciler.errors"
    )
    assert loaded.returncode == 0, loaded.stderr


def test_the_controller_command_says_what_to_install(agent_venv: Path) -> None:
    """`hedgerow` is installed too (one distribution), and says which extra it needs."""
    answered = run(agent_venv / "bin" / "hedgerow", "--help")
    assert answered.returncode == 2
    assert "pip install 'hedgerow[controller]'" in answered.stderr
    assert "Traceback" not in answered.stderr


def test_the_systemd_unit_verifies_and_passes_the_agent_only_its_options(
    agent_venv: Path, tmp_path: Path
) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: tests/system-deps.sh installs it"
    unit = (ROOT / "packaging" / "systemd" / "hedgerow-agent.service").read_text()
    (start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert start.startswith("ExecStart=/usr/local/bin/hedgerow-agent ")
    copy = tmp_path / "hedgerow-agent.service"  # verify checks that the program exists
    agent = str(agent_venv / "bin" / "hedgerow-agent")
    copy.write_text(unit.replace("/usr/local/bin/hedgerow-agent", agent))
    verified = run(analyze, "verify", copy)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout + verified.stderr == "", "no warning either (an unknown key, ...)"
    help_text = run(agent, "--help").stdout
    for option in re.findall(r"--[a-z-]+", start):
        assert option in help_text, option
