"""The example GitHub Actions workflow (`docs/ci/hedgerow-plan.yml`), run as a script: its `run:`
steps, in order, in a fresh virtual environment, on a real git repository checked out as
actions/checkout does for a pull request (HEAD the merge, the base branch as origin/<base>).

Only the install source (the workflow's placeholder, for this working tree) and the GitHub
context are substituted; `uses:` steps are left out (checkout is the repository made here,
setup-python the virtual environment). The install runs once for the module: it is slow, and
so are the tests that use it (e2e).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import pytest
import yaml

from tests.support.repos import BASE, RELEASE_110, ROOT, write_tree

pytestmark = pytest.mark.usefixtures("git_identity")

WORKFLOW = ROOT / "docs" / "ci" / "hedgerow-plan.yml"
SOURCE = "HEDGEROW_SOURCE"
STEP_TIMEOUT = 120
INSTALL_TIMEOUT = 900
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_COMPARISON = re.compile(r"([\w.]+) == '([^']*)'")


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def run_steps() -> list[dict[str, Any]]:
    """The job's steps that a runner executes as scripts."""
    (job,) = workflow()["jobs"].values()
    return [step for step in job["steps"] if "run" in step]


def install_steps() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the steps up to the install, the steps after it)."""
    steps = run_steps()
    (at,) = [i for i, step in enumerate(steps) if "pip install" in step["run"]]
    return steps[: at + 1], steps[at + 1 :]


@dataclass
class Job:
    """What a runner keeps between steps: the workspace, the PATH, the steps' outputs."""

    workspace: Path
    venv: Path
    context: Mapping[str, str]
    variables: Mapping[str, str]
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    ran: list[tuple[str, int]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    @property
    def summary(self) -> Path:
        return self.workspace.parent / "step-summary.md"

    def value(self, expression: str) -> str:
        parts = expression.split(".")
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return self.outputs.get(parts[1], {}).get(parts[3], "")
        if expression not in self.context:
            pytest.fail(f"the workflow uses ${{{{ {expression} }}}}: give the test a value")
        return self.context[expression]

    def condition(self, expression: str) -> bool:
        match = _COMPARISON.fullmatch(expression.strip())
        if match is None:
            pytest.fail(f"the test cannot evaluate `if: {expression}`")
        return self.value(match[1]) == match[2]

    def run(self, steps: list[dict[str, Any]], timeout: float = STEP_TIMEOUT) -> bool:
        """Run steps as a runner does: stop at the first that fails; False if one did."""
        for index, step in enumerate(steps):
            name = step.get("name", step["run"].splitlines()[0])
            if "if" in step and not self.condition(step["if"]):
                continue
            assert "${{" not in step["run"], f"{name}: inline no expression in a script"
            output = self.workspace.parent / f"output-{len(self.ran)}-{index}"
            output.touch()
            env = {
                **os.environ,
                **self.variables,
                **{key: _EXPRESSION.sub(lambda m: self.value(m[1]), str(value))
                   for key, value in step.get("env", {}).items()},
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                "VIRTUAL_ENV": str(self.venv),
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_WORKSPACE": str(self.workspace),
                "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(self.summary),
            }  # fmt: skip
            script = self.workspace.parent / "step.sh"
            script.write_text(step["run"], encoding="utf-8")
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=self.workspace,
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
            self.ran.append((name, done.returncode))
            self.logs.append(f"--- {name}: {done.returncode}\n{done.stdout}{done.stderr}")
            if "id" in step:
                lines = output.read_text(encoding="utf-8").splitlines()
                self.outputs[step["id"]] = dict(line.split("=", 1) for line in lines if line)
            if done.returncode != 0:
                return False
        return True


def pull_request(root: Path, head: Mapping[str, str]) -> Path:
    """An upstream with `main` (BASE and release 1.1.0) and a pull request branch changing
    `head`; the workspace as actions/checkout leaves it: a clone at the merge commit."""
    upstream = git.Repo.init(root / "upstream", initial_branch="main")
    write_tree(root / "upstream", {**BASE, "release-1.1.0.yaml": RELEASE_110})
    upstream.git.add(A=True)
    upstream.git.commit(m="base")
    upstream.git.checkout("-b", "change")
    write_tree(root / "upstream", head)
    upstream.git.add(A=True)
    upstream.git.commit(m="head")
    upstream.git.checkout("main")
    workspace = git.Repo.clone_from(root / "upstream", root / "workspace")
    workspace.git.checkout("--detach", "origin/main")
    workspace.git.merge("--no-ff", "--no-edit", "origin/change")
    return root / "workspace"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment (setup-python) with the workflow's install steps run in it,
    their source this working tree."""
    root = tmp_path_factory.mktemp("workflow")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=STEP_TIMEOUT)
    (root / "workspace").mkdir()
    job = Job(root / "workspace", venv, {}, {**workflow()["env"], SOURCE: ROOT.as_uri()})
    steps, _ = install_steps()
    assert job.run(steps, timeout=INSTALL_TIMEOUT), "\n".join(job.logs)
    return venv


def plan_job(tmp_path: Path, venv: Path, head: Mapping[str, str], base_ref: str = "main") -> Job:
    workspace = pull_request(tmp_path, head)
    variables = {**workflow()["env"], SOURCE: ROOT.as_uri()}
    job = Job(workspace, venv, {"github.base_ref": base_ref}, variables)
    _, after_install = install_steps()
    job.run(after_install)
    return job


UPGRADE = {"deployment.yaml": BASE["deployment.yaml"].replace('"1.0.0"', '"1.1.0"')}


@pytest.mark.e2e
def test_an_accepted_merge_passes_with_its_plan(tmp_path: Path, venv: Path) -> None:
    job = plan_job(tmp_path, venv, UPGRADE)
    logs = "\n".join(job.logs)
    assert [code for _, code in job.ran] == [0, 0], logs  # the failing step is skipped
    assert job.outputs["plan"] == {"status": "0"}
    plan = (job.workspace / "plan.md").read_text(encoding="utf-8")
    assert plan.startswith("## ✅ Hedgerow plan: ready to merge\n"), plan
    assert "| `pi-1` | upgrade | `web` | `1.0.0` | `1.1.0` |" in plan
    assert job.summary.read_text(encoding="utf-8") == plan


@pytest.mark.e2e
def test_a_rejected_merge_fails_after_the_plan_is_written(tmp_path: Path, venv: Path) -> None:
    in_place = BASE["release.yaml"].replace("/data}", "/srv}")  # a release changed in place
    job = plan_job(tmp_path, venv, {"release.yaml": in_place})
    logs = "\n".join(job.logs)
    assert [code for _, code in job.ran] == [0, 0, 1], logs
    assert job.ran[-1][0] == "Fail when the merge would be rejected"
    assert job.outputs["plan"] == {"status": "1"}
    plan = (job.workspace / "plan.md").read_text(encoding="utf-8")
    assert plan.startswith("## ❌ Hedgerow plan: this merge would be rejected\n"), plan
    assert "web-1-0-0" in plan
    assert "::error::Hedgerow would reject this revision" in job.logs[-1]


@pytest.mark.e2e
def test_a_usage_error_fails_the_plan_step(tmp_path: Path, venv: Path) -> None:
    job = plan_job(tmp_path, venv, UPGRADE, base_ref="no-such-branch")
    assert job.ran == [("Plan", 2)], "\n".join(job.logs)
    assert "unknown revision 'origin/no-such-branch'" in job.logs[-1]


def test_the_placeholder_source_fails_the_install_saying_what_to_set(tmp_path: Path) -> None:
    """Copied as is, the workflow stops at once and says what to set, before pip runs."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    placeholder = workflow()["env"]
    assert "CHANGE-ME" in placeholder[SOURCE]
    job = Job(workspace, tmp_path / "no-venv", {}, placeholder)
    steps, _ = install_steps()
    assert not job.run(steps)
    assert job.ran == [("Install hedgerow", 1)]
    assert f"::error::set {SOURCE}" in job.logs[-1]
