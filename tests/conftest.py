"""Shared fixtures: small repositories written to a temporary folder and validated for real."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from textwrap import dedent

import git
import pytest

from reconciler.validate import Report, validate_tree

# Fixtures shared across modules: a throwaway PostgreSQL server and a database URL per backend.
pytest_plugins = ["postgres", "docker_env"]

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"

# A minimal valid repository: one of each kind but credentials; tests add or replace files.
BASE: dict[str, str] = {
    "app.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Application
        metadata: {name: web}
        spec: {description: A web server}
        """,
    "release.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Release
        metadata: {name: web-1-0-0}
        spec:
          application: web
          version: "1.0.0"
          supportedSystemModels: [rpi4]
          containers:
            - name: server
              image: registry.example:5000/web/server:1.0.0
              networks: [front]
              volumes:
                - {volume: data, target: /data}
        """,
    "resources.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Network
        metadata: {name: front}
        ---
        apiVersion: hedgerow.dev/v1alpha1
        kind: Volume
        metadata: {name: data}
        """,
    "devices.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Device
        metadata: {name: pi-1, labels: {site: lyon}}
        spec: {systemModel: rpi4}
        ---
        apiVersion: hedgerow.dev/v1alpha1
        kind: Device
        metadata: {name: pi-2, labels: {site: nantes}}
        spec: {systemModel: rpi4}
        """,
    "deployment.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Deployment
        metadata: {name: web-lyon}
        spec:
          application: web
          release: "1.0.0"
          selector: {matchLabels: {site: lyon}}
        """,
}

# The upgrade of BASE's release, for tests that move a deployment from 1.0.0 to 1.1.0.
RELEASE_110 = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Release
    metadata: {name: web-1-1-0}
    spec:
      application: web
      version: "1.1.0"
      containers:
        - {name: server, image: registry.example:5000/web/server:1.1.0}
    """


def resources(volume: str = "", network: str = "", extra: str = "") -> str:
    """BASE's resources.yaml with specs for the volume `data` and the network `front`."""
    return (
        dedent(BASE["resources.yaml"])
        .replace("metadata: {name: front}\n", f"metadata: {{name: front}}\n{network}")
        .replace("metadata: {name: data}\n", f"metadata: {{name: data}}\n{volume}")
        + extra
    )


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(dedent(content), encoding="utf-8")
    return root


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits work on a fresh machine: an identity, and no user or system git config."""
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Hedgerow Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@hedgerow.invalid")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def commit(repo: git.Repo, message: str, files: Mapping[str, str | bytes] | None = None) -> str:
    """Write `files` into the working tree, stage everything and commit; the new sha."""
    write_tree(Path(repo.working_dir), files or {})
    repo.git.add(A=True)
    repo.git.commit(m=message, allow_empty=True)
    return repo.head.commit.hexsha


@pytest.fixture
def upstream(tmp_path: Path, git_identity: None) -> git.Repo:
    """A repository holding BASE on branch main, as operators push to."""
    repo = git.Repo.init(write_tree(tmp_path / "upstream", BASE), initial_branch="main")
    commit(repo, "initial")
    return repo


@pytest.fixture
def validate_repo(tmp_path: Path) -> Callable[..., Report]:
    """validate_repo({"file.yaml": text}, base=True): write the files (over BASE) and validate."""

    def run(files: dict[str, str | bytes] | None = None, *, base: bool = True) -> Report:
        merged: dict[str, str | bytes] = {**(BASE if base else {}), **(files or {})}
        return validate_tree(write_tree(tmp_path / "repo", merged))

    return run


# -- secrets never leak ------------------------------------------------------------------------
# Plaintext secrets the suite uses. Every test's captured stdout, stderr, log records and failure
# text is scanned for them; a single occurrence fails the run.
PLAINTEXT_SECRETS = (
    "pl41n-Secret-do-not-leak",
    "an0ther-Secret-do-not-leak",
    "demo-password-change-me",
)
_LEAKS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    texts = [content for _, content in report.sections]
    texts.append(str(report.longrepr or ""))
    for text in texts:
        for secret in PLAINTEXT_SECRETS:
            if secret in text:
                _LEAKS.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LEAKS:
        print(
            "\nplaintext secrets appeared in the output of:\n  " + "\n  ".join(sorted(set(_LEAKS)))
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
