"""Shared fixtures and the suite-wide checks: repositories written to a temporary folder and
validated for real, the daemons of `tests/support`, the `e2e` marker, and the leak check."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import git
import pytest
from hypothesis import settings

from reconciler.manifests.validate import Report, validate_tree
from tests.support import properties
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.repos import BASE, commit, write_tree

# A throwaway PostgreSQL server and a database URL per backend; a Docker engine, images, registry;
# the same on Podman.
pytest_plugins = ["tests.support.postgres", "tests.support.docker", "tests.support.podman"]

# A test that uses one of these real parts is end to end: `pytest -m "not e2e"` leaves it out.
E2E_FIXTURES = frozenset(
    {"docker_engine", "local_images", "images", "registry", "postgresql_server"}
    | {"podman_engine", "podman_local_images", "podman_images", "podman_registry"}
    | {"podman_registry_server"}
)


settings.register_profile("quick", max_examples=properties.QUICK)


def pytest_configure(config: pytest.Config) -> None:
    """`pytest -m "not e2e"` is the quick loop: property tests draw a third of their examples
    (before the test modules are imported, so that their `examples(N)` see it)."""
    if "not e2e" in (config.getoption("markexpr") or ""):
        settings.load_profile("quick")


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis: {settings().max_examples} examples per 100 (quick loop: -m 'not e2e')"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits work on a fresh machine: an identity, and no user or system git config."""
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Hedgerow Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@hedgerow.invalid")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


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
