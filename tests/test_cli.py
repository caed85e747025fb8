"""The `hedgerow` command as users and CI run it: exit codes, output formats, summary, CRDs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from reconciler.cli.app import app
from tests.support.repos import BASE, MANIFESTS, ROOT, write_tree

CRDS = ROOT / "crds"
runner = CliRunner()

# A Volume with a bad name, and a document refused by the loader: one error with a subject and a
# field, one without either, in a sub-folder.
ERRORS = {
    "sub/case.yaml": (
        "apiVersion: hedgerow.dev/v1alpha1\n"
        "kind: Volume\n"
        "metadata: {name: Cache}\n"
        "---\n"
        "a: 1\n"
        "a: 2\n"
    )
}
WARNING = {
    "paris.yaml": (
        "apiVersion: hedgerow.dev/v1alpha1\n"
        "kind: Deployment\n"
        "metadata: {name: web-paris}\n"
        "spec:\n"
        "  application: web\n"
        '  release: "1.0.0"\n'
        "  selector: {matchLabels: {site: paris}}\n"
    )
}
BAD_NAME = (
    "name 'Cache' is not a DNS-1123 label: use lower-case letters, digits and '-', "
    "starting and ending with a letter or digit"
)
NO_DEVICE = "selector matches no device; it deploys nothing until a device has these labels"
ENTRY_KEYS = {"file", "line", "column", "kind", "name", "field", "message"}


def _repo(tmp_path: Path, *extra: Mapping[str, str]) -> Path:
    files: dict[str, str | bytes] = dict(BASE)
    for more in extra:
        files.update(more)
    return write_tree(tmp_path / "repo", files)


DEMO_KEY = str(MANIFESTS / "DEMO-ONLY-age-key.txt")


def _run(*args: str, columns: int = 200) -> Result:
    """With the demo key, so credentials are decrypted and verified, not only shaped."""
    return runner.invoke(
        app, list(args), env={"COLUMNS": str(columns), "SOPS_AGE_KEY_FILE": DEMO_KEY}
    )


def _json(result: Result) -> dict[str, Any]:
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


# -- validate: exit codes -----------------------------------------------------------------------


def test_example_repository_is_valid() -> None:
    result = _run("validate", str(MANIFESTS))
    assert result.exit_code == 0, result.output
    assert result.stdout == "valid: 22 documents, 0 errors, 0 warnings\n"


def test_warnings_only_exit_zero_and_are_printed(tmp_path: Path) -> None:
    result = _run("validate", str(_repo(tmp_path, WARNING)))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"paris.yaml:7:27: warning: Deployment/web-paris: spec.selector.matchLabels: {NO_DEVICE}",
        "valid: 8 documents, 0 errors, 1 warning",
    ]


def test_errors_exit_one_and_every_finding_is_a_compiler_style_line(tmp_path: Path) -> None:
    result = _run("validate", str(_repo(tmp_path, ERRORS, WARNING)))
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        f"paris.yaml:7:27: warning: Deployment/web-paris: spec.selector.matchLabels: {NO_DEVICE}",
        f"sub/case.yaml:3:18: error: Volume/Cache: metadata.name: {BAD_NAME}",
        "sub/case.yaml:6:1: error: duplicate key 'a' (first defined on line 5)",
        "invalid: 9 documents, 2 errors, 1 warning",
    ]


def test_long_finding_lines_are_not_wrapped_on_narrow_terminals(tmp_path: Path) -> None:
    result = _run("validate", str(_repo(tmp_path, ERRORS)), columns=60)
    assert f"sub/case.yaml:3:18: error: Volume/Cache: metadata.name: {BAD_NAME}" in (
        result.stdout.splitlines()
    )


def test_file_level_finding_has_no_line_or_column(tmp_path: Path) -> None:
    big = {"big.yaml": "#" * (1 << 20) + "\n"}
    result = _run("validate", str(_repo(tmp_path, big)))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "big.yaml: error: file is 1048577 bytes; manifests are limited to 1 MiB"
    )


def test_default_path_is_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(_repo(tmp_path, ERRORS))
    result = _run("validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("sub/case.yaml:3:18: error: ")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["validate", "does-not-exist"], "does not exist"),
        (["validate", str(MANIFESTS / "README.md")], "is a file"),
        (["validate", str(MANIFESTS), "--output", "xml"], "'xml' is not one of 'text', 'json'"),
        (["validate", str(MANIFESTS), "--bogus"], "No such option"),
    ],
    ids=["missing-path", "file-path", "xml", "unknown-option"],
)
def test_usage_errors_exit_two(args: list[str], complaint: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert complaint in " ".join(result.stderr.replace("│", " ").split())


# -- validate: JSON -----------------------------------------------------------------------------


def test_json_output_shape(tmp_path: Path) -> None:
    root = _repo(tmp_path, ERRORS, WARNING)
    result = _run("validate", str(root), "--output", "json")
    assert result.exit_code == 1
    data = _json(result)
    assert list(data) == ["valid", "documents", "errors", "warnings"]
    assert data["valid"] is False
    assert data["documents"] == 9
    for entry in data["errors"] + data["warnings"]:
        assert set(entry) == ENTRY_KEYS
    assert data["errors"] == [
        {
            "file": "sub/case.yaml",
            "line": 3,
            "column": 18,
            "kind": "Volume",
            "name": "Cache",
            "field": "metadata.name",
            "message": BAD_NAME,
        },
        {
            "file": "sub/case.yaml",
            "line": 6,
            "column": 1,
            "kind": None,
            "name": None,
            "field": None,
            "message": "duplicate key 'a' (first defined on line 5)",
        },
    ]
    assert data["warnings"] == [
        {
            "file": "paris.yaml",
            "line": 7,
            "column": 27,
            "kind": "Deployment",
            "name": "web-paris",
            "field": "spec.selector.matchLabels",
            "message": NO_DEVICE,
        }
    ]


def test_json_file_is_relative_to_the_given_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _repo(tmp_path, ERRORS)
    monkeypatch.chdir(tmp_path)
    for path in ("repo", "./repo", str(tmp_path / "repo"), "repo/sub"):
        files = {e["file"] for e in _json(_run("validate", path, "-o", "json"))["errors"]}
        assert files == ({"case.yaml"} if path.endswith("sub") else {"sub/case.yaml"}), path


def test_json_for_a_valid_repository_with_warnings(tmp_path: Path) -> None:
    result = _run("validate", str(_repo(tmp_path, WARNING)), "-o", "json")
    assert result.exit_code == 0
    data = _json(result)
    assert (data["valid"], data["documents"], data["errors"]) == (True, 8, [])
    assert [w["message"] for w in data["warnings"]] == [NO_DEVICE]


def test_json_for_the_example_repository() -> None:
    result = _run("validate", str(MANIFESTS), "--output", "json")
    assert result.exit_code == 0
    assert _json(result) == {"valid": True, "documents": 22, "errors": [], "warnings": []}


# -- validate --summary -------------------------------------------------------------------------


def _rows(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_summary_lists_every_device_and_what_it_runs() -> None:
    result = _run("validate", str(MANIFESTS), "--summary")
    assert result.exit_code == 0
    rows = _rows(result.stdout)
    kinds = {row[0]: row[1] for row in rows if len(row) == 2}
    assert kinds == {
        "Application": "2",
        "Release": "4",
        "ImageCredential": "1",
        "Volume": "2",
        "Network": "2",
        "Device": "6",
        "Deployment": "5",
    }
    runs = [tuple(row) for row in rows if len(row) == 6]
    assert runs == [
        ("lyon-orin-01", "jetson-orin", "gateway-lyon-orin-01", "gateway", "2.3.0", "Running"),
        ("lyon-orin-01", "jetson-orin", "telemetry-lyon", "telemetry", "1.0.0", "Running"),
        ("lyon-rpi4-01", "rpi4", "telemetry-lyon", "telemetry", "1.0.0", "Running"),
        ("lyon-rpi4-02", "rpi4", "telemetry-lyon", "telemetry", "1.0.0", "Running"),
        ("lyon-rpi4-03", "rpi4", "telemetry-lyon", "telemetry", "1.0.0", "Running"),
        ("nantes-orin-01", "jetson-orin", "gateway-nantes", "gateway", "2.3.0", "Running"),
        (
            "nantes-orin-01",
            "jetson-orin",
            "telemetry-nantes-canary",
            "telemetry",
            "1.1.0",
            "Running",
        ),
        ("nantes-rpi4-01", "rpi4", "gateway-nantes", "gateway", "2.3.0", "Running"),
        ("nantes-rpi4-01", "rpi4", "telemetry-nantes-rpi4-01", "telemetry", "1.0.0", "Stopped"),
    ]
    devices = {path.stem for path in (MANIFESTS / "devices").glob("*.yaml")}
    assert {row[0] for row in runs} == devices


def test_summary_shows_idle_devices(tmp_path: Path) -> None:
    result = _run("validate", str(_repo(tmp_path)), "--summary")
    assert result.exit_code == 0
    runs = [tuple(row) for row in _rows(result.stdout) if len(row) == 6]
    assert runs == [
        ("pi-1", "rpi4", "web-lyon", "web", "1.0.0", "Running"),
        ("pi-2", "rpi4", "-", "-", "-", "-"),
    ]


def test_summary_is_not_shown_when_there_are_errors(tmp_path: Path) -> None:
    result = _run("validate", str(_repo(tmp_path, ERRORS)), "--summary")
    assert result.exit_code == 1
    assert "What each device would run" not in result.stdout
    assert _rows(result.stdout) == []


# -- crds ---------------------------------------------------------------------------------------


def test_crds_check_passes_on_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run("crds", "--check", "--dir", str(CRDS))
    assert (result.exit_code, result.stdout) == (0, f"{CRDS}: up to date\n")
    monkeypatch.chdir(ROOT)  # the default folder, as `make unit` runs it
    assert _run("crds", "--check").exit_code == 0


def test_crds_check_names_the_stale_and_missing_files(tmp_path: Path) -> None:
    copy = tmp_path / "crds"
    shutil.copytree(CRDS, copy)
    releases = copy / "releases.yaml"
    releases.write_text(releases.read_text().replace("maxLength: 63", "maxLength: 64", 1))
    (copy / "devices.yaml").unlink()
    result = _run("crds", "--check", "--dir", str(copy))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{copy / 'devices.yaml'}: stale; run `hedgerow crds` and commit the result",
        f"{copy / 'releases.yaml'}: stale; run `hedgerow crds` and commit the result",
    ]
    assert releases.read_text() != (CRDS / "releases.yaml").read_text()  # --check writes nothing


def test_crds_writes_every_file_into_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "crds"
    result = _run("crds", "--dir", str(target))
    assert result.exit_code == 0
    expected = sorted(path.name for path in CRDS.iterdir())
    assert sorted(path.name for path in target.iterdir()) == expected
    assert result.stdout.splitlines() == [f"wrote {target / name}" for name in expected]
    for name in expected:
        assert (target / name).read_text() == (CRDS / name).read_text(), name
    assert _run("crds", "--check", "--dir", str(target)).exit_code == 0
    for name in expected:
        if name.endswith(".yaml"):
            crd = yaml.safe_load((target / name).read_text())
            assert crd["kind"] == "CustomResourceDefinition"
            assert crd["spec"]["group"] == "hedgerow.dev"


def test_crds_rewrites_only_what_changed(tmp_path: Path) -> None:
    target = tmp_path / "crds"
    shutil.copytree(CRDS, target)
    (target / "volumes.yaml").write_text("# edited by hand\n")
    result = _run("crds", "--dir", str(target))
    assert (result.exit_code, result.stdout) == (0, f"wrote {target / 'volumes.yaml'}\n")
    assert (target / "volumes.yaml").read_text() == (CRDS / "volumes.yaml").read_text()


# -- the installed command ----------------------------------------------------------------------


@pytest.mark.e2e  # the installed console script, in a process
def test_installed_console_script_validates_the_example() -> None:
    script = Path(sys.executable).with_name("hedgerow")
    assert script.is_file(), "install the project (pip install -e .) to get the hedgerow command"
    result = subprocess.run(
        [str(script), "validate", str(MANIFESTS)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SOPS_AGE_KEY_FILE": DEMO_KEY},
    )
    assert (result.returncode, result.stdout) == (0, "valid: 22 documents, 0 errors, 0 warnings\n")
    assert result.stderr == ""
