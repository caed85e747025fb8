"""Hostile and random files: validation always returns a Report, never a traceback."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import Report, validate_tree
from tests.support.properties import examples
from tests.support.repos import BASE, write_tree

Validate = Callable[..., Report]
FUZZ_FILE = "fuzz.yaml"
BASE_FILES = set(BASE)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minimal valid repository, shared by the examples; each one rewrites fuzz.yaml."""
    return write_tree(tmp_path_factory.mktemp("fuzz"), dict(BASE))


def validate_with(repo: Path, content: bytes) -> Report:
    (repo / FUZZ_FILE).write_bytes(content)
    return validate_tree(repo)


def assert_well_formed(report: Report) -> None:
    assert isinstance(report, Report)
    for problem in report.problems:
        assert problem.file in BASE_FILES | {FUZZ_FILE}, problem
        assert isinstance(problem.line, int) and problem.line >= 0, problem
        assert isinstance(problem.column, int) and problem.column >= 0, problem
        assert problem.message, problem
    # One bad file never hides the others: the seven base documents are always loaded.
    assert report.documents >= 7
    assert report.problems == sorted(report.problems, key=Problem.sort_key)


FRAGMENTS = [
    ":",
    ": ",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "*b",
    "&b [*a, *a]",
    "<<: *a",
    "!!python/object ",
    "!!python/object/apply:os.system ",
    "!!binary ",
    "!!set ",
    "!custom ",
    "\t",
    "  ",
    "\n",
    "\n  ",
    "---\n",
    "...\n",
    "'",
    '"',
    '"\\x00"',
    "#",
    "|\n",
    ">-\n",
    "?",
    "%YAML 1.1\n",
    "[[[[",
    "]]]]",
    "kind",
    "kind: Release",
    "apiVersion: hedgerow.dev/v1alpha1",
    "metadata: {name: x}",
    "spec:",
    "containers:",
    "image: ubuntu:latest",
    "memory: 1.5Gi",
    "name",
    "web",
    "1.0.0",
    "0x1F",
    ".inf",
    "~",
    "null",
    "yes",
    "2001-12-14",
    "\u00e9",
    "\ufeff",
    "\U0001f600",
]
yamlish = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)


@settings(
    max_examples=examples(100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(repo: Path, content: bytes) -> None:
    assert_well_formed(validate_with(repo, content))


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(yamlish)
def test_yamlish_text_never_raises(repo: Path, text: str) -> None:
    assert_well_formed(validate_with(repo, text.encode("utf-8")))


# -- explicit hostile files --------------------------------------------------------------------


def fuzz_problems(report: Report) -> list[tuple[int, int, str]]:
    return [(p.line, p.column, p.message) for p in report.problems if p.file == FUZZ_FILE]


def test_python_object_tag_is_refused_and_never_run(
    validate_repo: Validate, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    text = f"kind: !!python/object/apply:os.system ['touch {marker}']\n"
    report = validate_repo({FUZZ_FILE: text})
    assert not marker.exists()
    assert fuzz_problems(report) == [
        (1, 7, "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "!!python/object/apply:os.system ['touch {marker}']\n",
            "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (
            "- !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
            "unsupported YAML tag 'tag:yaml.org,2002:python/object/new:subprocess.Popen'",
        ),
        ("a: !!python/name:os.system\n", "unsupported YAML tag 'tag:yaml.org,2002:python/name"),
        (
            "{{? !!python/object/apply:os.system ['touch {marker}'] : x}}\n",
            "mapping keys must be plain strings",
        ),
    ],
)
def test_python_tags_anywhere_are_refused(
    validate_repo: Validate, tmp_path: Path, text: str, message: str
) -> None:
    marker = tmp_path / "pwned"
    report = validate_repo({FUZZ_FILE: text.format(marker=marker)})
    assert not marker.exists()
    [(line, _, got)] = fuzz_problems(report)
    assert line == 1
    assert got.startswith(message)


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(validate_repo: Validate) -> None:
    start = time.perf_counter()
    report = validate_repo({FUZZ_FILE: billion_laughs()})
    elapsed = time.perf_counter() - start
    [(line, _, message)] = fuzz_problems(report)
    assert "aliases expand to over 100000 values" in message
    assert 1 < line <= 10
    assert elapsed < 5, f"alias bomb took {elapsed:.1f}s"
    assert report.catalog.releases.keys() == {"web-1-0-0"}


def test_recursive_alias_is_refused(validate_repo: Validate) -> None:
    report = validate_repo({FUZZ_FILE: "a: &a [*a]\n"})
    [(line, _, message)] = fuzz_problems(report)
    assert line == 1
    assert "alias" in message


def test_two_mebibyte_file_is_refused_with_its_size(validate_repo: Validate) -> None:
    size = 2 * 1024 * 1024
    report = validate_repo({FUZZ_FILE: b"# padding\n" * (size // 10) + b"#" * (size % 10)})
    assert fuzz_problems(report) == [
        (0, 0, f"file is {size} bytes; manifests are limited to 1 MiB"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "[" * 70 + "]" * 70 + "\n",
        "a: " + "{b: " * 70 + "c" + "}" * 70 + "\n",
        "".join("  " * i + f"k{i}:\n" for i in range(70)) + "  " * 70 + "leaf\n",
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings"],
)
def test_seventy_levels_of_nesting_are_refused(validate_repo: Validate, text: str) -> None:
    report = validate_repo({FUZZ_FILE: text})
    [(line, _, message)] = fuzz_problems(report)
    assert message == "nesting is deeper than 64 levels"
    assert line >= 1


def test_sixty_levels_of_nesting_are_only_a_manifest_problem(validate_repo: Validate) -> None:
    report = validate_repo({FUZZ_FILE: "[" * 60 + "]" * 60 + "\n"})
    [(line, column, message)] = fuzz_problems(report)
    assert (line, column) == (1, 1)
    assert message.startswith("a manifest must be a mapping")


def test_huge_memory_quantity_is_a_problem_not_a_crash(validate_repo: Validate) -> None:
    # Decimal used to overflow (an ArithmeticError, not a ValueError) and escape validation.
    text = (
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Release\nmetadata: {name: web-1-0-0}\n"
        "spec:\n  application: web\n  version: '1.0.0'\n  containers:\n"
        f"    - name: a\n      image: busybox\n      memory: '{'9' * 1_000_000}Ki'\n"
    )
    report = validate_repo({"release.yaml": text})
    [problem] = report.problems
    assert (problem.file, problem.line, problem.field) == (
        "release.yaml",
        10,
        "spec.containers[0].memory",
    )
    assert problem.message == "quantity has 1000000 digits; write at most 40"
