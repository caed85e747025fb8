"""Device and git text reaches the terminal as text: never markup, never control sequences.

A device reports its own event messages and releases, and a commit names its files and values;
both are stored, then printed by `hedgerow status`, `hedgerow events` and `hedgerow validate`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner, Result

from reconciler.cli.app import app
from reconciler.cli.output import literal
from reconciler.core.status import Condition, ConditionType, DeploymentStatus
from reconciler.store import EventIn, Store, sqlite_url
from tests.support.repos import BASE, commit, write_tree

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UNBALANCED = "unbalanced [/] close"
MARKUP = "[bold red]alarm[/bold red] [link=https://evil.example]click[/link] :warning:"
ESCAPES = "\x1b[2J\x1b]8;;https://evil.example\x1b\\x\x1b]8;;\x1b\\ \x07\x9b31m"
BIDI = "abc\u202edcba\u2066\u2069\u200f"
HOSTILE = [UNBALANCED, MARKUP, ESCAPES, BIDI, "tab\there\nnew\rline"]
# No ESC, no C0 or C1 control (a newline ends a line, a tab is never written), no bidi control.
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def assert_text(result: Result) -> None:
    assert result.exit_code == 0, result.output
    found = FORBIDDEN.search(result.output)
    assert found is None, f"{found.group()!r} reached the terminal"
    for shown in (UNBALANCED, "[bold red]alarm[/bold red]", "[link=https://evil.example]click"):
        assert shown in result.output, f"{shown!r} was not shown as text"
    assert ":warning:" in result.output  # not an emoji


@pytest.mark.parametrize("text", ["plain", "a [b] c", *HOSTILE, "ends in \\", "\\[bold]"])
def test_literal_is_shown_as_written_but_for_controls(text: str) -> None:
    from rich.console import Console

    console = Console(width=400, highlight=False, emoji=False, color_system=None)
    with console.capture() as captured:
        console.print(f"[red]{literal(text)}[/]")
    shown = captured.get().removesuffix("\n")
    assert FORBIDDEN.search(shown) is None
    expected = re.sub("[\t\n\r]", " ", text)
    assert shown == FORBIDDEN.sub("", expected)


def test_literal_keeps_printable_unicode() -> None:
    assert literal("café ✓ 東京 \u200d") == "café ✓ 東京 \u200d"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A store holding hostile device events, a status and a rejected commit."""
    with Store.open(sqlite_url(tmp_path)) as store:
        store.append_device_events(
            "pi-1",
            [(n, EventIn(T0, "pi-1", "error", text, "web-lyon")) for n, text in enumerate(HOSTILE)],
        )
        store.append_events([EventIn(T0, None, f"kind {MARKUP}", UNBALANCED)])
        condition = Condition(
            type=ConditionType.READY, status="False", reason=BIDI, message=MARKUP, revision="a"
        )
        store.put_status(
            DeploymentStatus(
                deployment="web-lyon",
                device="pi-1",
                application="web",
                desired_release="1.0.0",
                observed_release=f"{UNBALANCED} {MARKUP} {ESCAPES}",
                desired_state="Running",
                observed_state="Running",
                revision="a" * 40,
                conditions=(condition,),
            )
        )
        errors = [{"file": f"{ESCAPES}.yaml", "line": 1, "message": f"{UNBALANCED} {MARKUP}"}]
        store.reject("b" * 40, errors, T0)
    return tmp_path


def test_events_print_device_messages_as_text(data: Path) -> None:
    result = run("events", "--data-dir", str(data))
    assert_text(result)
    assert "tab here new line" in result.output


def test_events_filtered_by_device_print_as_text(data: Path) -> None:
    assert_text(run("events", "--device", "pi-1", "--data-dir", str(data)))


def test_status_prints_device_and_git_text_as_text(data: Path) -> None:
    result = run("status", "--data-dir", str(data))
    assert_text(result)
    assert "rejected bbbbbbbbbbbb" in result.output


def test_json_output_keeps_the_text_as_stored(data: Path) -> None:
    result = run("events", "--data-dir", str(data), "-o", "json")
    assert result.exit_code == 0 and "\\u001b[2J" in result.output


HOSTILE_TREE: dict[str, str | bytes] = {
    **BASE,
    # an idle device (no labels, so no deployment): the summary still shows its model
    "idle.yaml": (
        "apiVersion: hedgerow.dev/v1alpha1\n"
        "kind: Device\n"
        "metadata: {name: pi-9}\n"
        'spec: {systemModel: "\\e[31m[bold red]alarm[/bold red] [link=https://evil.example]'
        'click[/link] :warning: \\u202e"}\n'
    ),
}


def test_validate_summary_prints_git_text_as_text(tmp_path: Path) -> None:
    result = run("validate", str(write_tree(tmp_path / "repo", HOSTILE_TREE)), "--summary")
    assert result.exit_code == 0, result.output
    found = FORBIDDEN.search(result.output)
    assert found is None, f"{found.group()!r} reached the terminal"
    assert "[bold red]alarm[/bold red] [link=https://evil.example]click[/link]" in result.output
    assert ":warning:" in result.output


def test_validate_findings_print_file_names_as_text(tmp_path: Path) -> None:
    repo = write_tree(tmp_path / "repo", {**BASE, f"{UNBALANCED}\x1b[2J\u202e.yaml": "a: [\n"})
    result = run("validate", str(repo))
    assert result.exit_code == 1, result.output
    assert FORBIDDEN.search(result.output) is None
    assert f"{UNBALANCED}[2J.yaml:" in result.output


def test_plan_prints_git_text_without_controls(tmp_path: Path, git_identity: None) -> None:
    repo = git.Repo.init(write_tree(tmp_path / "repo", BASE), initial_branch="main")
    base = commit(repo, "base")
    commit(repo, "hostile", {f"{UNBALANCED}\x1b[2J\u202e\x9b.yaml": "a: [\n"})
    for fmt in ("text", "markdown"):
        result = CliRunner().invoke(
            app, ["plan", "--repo", str(repo.working_dir), "--base", base, "-o", fmt]
        )
        assert result.exit_code == 1, result.output
        assert FORBIDDEN.search(result.output) is None
        assert f"{UNBALANCED}[2J.yaml" in result.output
