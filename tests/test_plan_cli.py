"""`hedgerow plan` as CI runs it on a pull request: real repositories, a merge commit as head,
every output format exactly, and the exit status that passes or fails the check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner, Result

from reconciler.cli.app import app
from tests.support.repos import BASE, MANIFESTS, write_tree

runner = CliRunner()

RELEASE_1_1_0 = BASE["release.yaml"].replace("1.0.0", "1.1.0").replace("1-0-0", "1-1-0")
UPGRADE = BASE["deployment.yaml"].replace('"1.0.0"', '"1.1.0"')
PI_3 = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Device
    metadata: {name: pi-3, labels: {site: lyon}}
    spec: {systemModel: rpi4}
    """


pytestmark = pytest.mark.usefixtures("git_identity")


def commit(repo: git.Repo, files: dict[str, str | bytes]) -> None:
    write_tree(Path(repo.working_dir), files)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", "change")


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """main publishes web 1.1.0; branch `upgrade` moves web-lyon to it; main then gains pi-3 in
    Lyon; `merged` is the merge CI checks out for the pull request."""
    root = tmp_path / "fleet"
    root.mkdir()
    repo = git.Repo.init(root, initial_branch="main")
    commit(repo, {**BASE, "release-1.1.0.yaml": RELEASE_1_1_0})
    repo.git.checkout("-q", "-b", "upgrade")
    commit(repo, {"deployment.yaml": UPGRADE})
    repo.git.checkout("-q", "main")
    commit(repo, {"pi-3.yaml": PI_3})
    repo.git.checkout("-q", "-b", "merged")
    repo.git.merge("-q", "--no-edit", "upgrade")
    return root


def plan(root: Path, *args: str) -> Result:
    return runner.invoke(app, ["plan", "--repo", str(root), *args])


def upgrade() -> dict[str, object]:
    return {
        "action": "upgrade",
        "deployment": "web-lyon",
        "application": "web",
        "from": "1.0.0",
        "to": "1.1.0",
        "reason": "release changed from 1.0.0 to 1.1.0",
    }


def test_json_of_the_merge(fleet: Path) -> None:
    result = plan(fleet, "--base", "main", "--head", "merged", "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "valid": True,
        "errors": [],
        "warnings": [],
        "releases": [],
        "volumes": [],
        "networks": [],
        "credentials": [],
        "devices": {"pi-1": [upgrade()], "pi-3": [upgrade()]},
        "rollouts": [],
    }


def test_text_of_the_merge_with_head_defaulting_to_the_checkout(fleet: Path) -> None:
    result = plan(fleet, "--base", "main")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "pi-1: upgrade web 1.0.0 -> 1.1.0 [web-lyon]: release changed from 1.0.0 to 1.1.0\n"
        "pi-3: upgrade web 1.0.0 -> 1.1.0 [web-lyon]: release changed from 1.0.0 to 1.1.0\n"
        "valid: 2 devices would change (2 actions); 0 errors, 0 warnings\n"
    )


def test_markdown_of_the_merge(fleet: Path) -> None:
    result = plan(fleet, "--base", "main", "--head", "merged", "-o", "markdown")
    assert result.exit_code == 0, result.output
    row = "| `web` | `1.0.0` | `1.1.0` | release changed from 1.0.0 to 1.1.0 (web-lyon) |"
    assert result.stdout == (
        "## ✅ Hedgerow plan: ready to merge\n"
        "\n"
        "2 devices would change (2 actions); 0 errors, 0 warnings.\n"
        "\n"
        "### Devices\n"
        "\n"
        "| device | action | application | from | to | reason |\n"
        "|---|---|---|---|---|---|\n"
        f"| `pi-1` | upgrade {row}\n"
        f"| `pi-3` | upgrade {row}\n"
    )


def test_the_working_tree_plays_no_part(fleet: Path) -> None:
    write_tree(fleet, {"deployment.yaml": "kind: [\n", "junk.yaml": "{"})
    (fleet / "release.yaml").unlink()
    result = plan(fleet, "--base", "main", "--head", "merged", "-o", "json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["devices"]) == ["pi-1", "pi-3"]


def test_a_release_changed_in_place_is_rejected_with_exit_1(fleet: Path) -> None:
    repo = git.Repo(fleet)
    repo.git.checkout("-q", "-b", "broken", "main")
    commit(repo, {"release.yaml": BASE["release.yaml"].replace("server:1.0.0", "server:1.0.1")})
    result = plan(fleet, "--base", "main", "--head", "broken", "-o", "json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["valid"] is False
    assert out["errors"] == [
        {
            "file": "release.yaml",
            "line": 6,
            "column": 12,
            "kind": "Release",
            "name": "web-1-0-0",
            "field": "spec.version",
            "message": "release web 1.0.0 was changed in place; releases are immutable once "
            "applied: publish a new version instead",
        }
    ]
    assert out["releases"] == [
        {
            "application": "web",
            "version": "1.0.0",
            "release": "web-1-0-0",
            "change": "changed",
            "fields": [
                {
                    "field": "containers[server].image",
                    "old": "registry.example:5000/web/server:1.0.0",
                    "new": "registry.example:5000/web/server:1.0.1",
                }
            ],
        }
    ]
    text = plan(fleet, "--base", "main", "--head", "broken")
    assert text.exit_code == 1
    assert text.stdout.splitlines()[-1] == (
        "rejected: 2 devices would change (2 actions); 1 error, 0 warnings"
    )


def test_an_invalid_head_is_rejected_with_exit_1(fleet: Path) -> None:
    repo = git.Repo(fleet)
    repo.git.checkout("-q", "-b", "typo", "main")
    commit(repo, {"deployment.yaml": BASE["deployment.yaml"].replace('"1.0.0"', '"1.2.0"')})
    result = plan(fleet, "--base", "main", "--head", "typo", "-o", "markdown")
    assert result.exit_code == 1
    assert result.stdout.startswith("## ❌ Hedgerow plan: this merge would be rejected\n")
    assert "- `deployment.yaml:6` Deployment/web-lyon `spec.release`: " in result.stdout


def test_unknown_revision_is_a_usage_error(fleet: Path) -> None:
    result = plan(fleet, "--base", "origin/main", "--head", "merged")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "unknown revision 'origin/main'" in result.stderr


def test_not_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    result = plan(tmp_path, "--base", "main")
    assert result.exit_code == 2
    assert f"{tmp_path}: not a git repository" in result.stderr


def test_base_is_required(fleet: Path) -> None:
    assert plan(fleet).exit_code == 2


def test_plan_reads_manifests_from_a_folder_of_the_repository(tmp_path: Path) -> None:
    """Manifests often live beside code: --path names their folder; paths are relative to it."""

    repo = git.Repo.init(tmp_path / "mono")
    shutil.copytree(MANIFESTS, tmp_path / "mono" / "deploy")
    repo.git.add(A=True)
    repo.git.commit(m="manifests", author="T <t@example.com>")
    release = tmp_path / "mono" / "deploy" / "deployments" / "telemetry.yaml"
    text = release.read_text()
    release.write_text(text.replace('release: "1.0.0"', 'release: "1.1.0"', 1))
    repo.git.commit(a=True, m="upgrade", author="T <t@example.com>")
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "--repo",
            str(repo.working_dir),
            "--path",
            "deploy",
            "--base",
            "HEAD~1",
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    actions = [a for device in report["devices"].values() for a in device]
    assert actions and {a["action"] for a in actions} == {"upgrade"}
    bad = CliRunner().invoke(
        app, ["plan", "--repo", str(repo.working_dir), "--path", "nope", "--base", "HEAD~1"]
    )
    assert bad.exit_code == 2 and "not a folder" in bad.output
