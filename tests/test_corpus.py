"""A corpus of bad manifests: each file is wrong in one way and says, in its first comment
lines, exactly what must be reported about it.

    # expect: LINE FIELD MESSAGE-FRAGMENT           an error (FIELD is `-` when there is none)
    # expect-warning: LINE FIELD MESSAGE-FRAGMENT   a warning
    # never: TEXT                                   no finding may contain TEXT (e.g. a secret)

A fragment may be split with ` ... ` into parts that must appear in that order. Each case is
written as `case.yaml` next to the minimal valid repository BASE; the findings in `case.yaml`
must be exactly the expected ones, and BASE itself must give none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.manifests.problems import Problem, Severity
from reconciler.manifests.validate import validate_tree
from tests.support.repos import BASE, write_tree

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = sorted(CORPUS.glob("*.yaml"))
CASE_FILE = "case.yaml"

_EXPECT = re.compile(
    r"#\s*expect(?P<warning>-warning)?:\s*(?P<line>\d+)\s+(?P<field>\S+)\s+(?P<text>.+)"
)
_NEVER = re.compile(r"#\s*never:\s*(?P<text>.+)")


@dataclass(frozen=True)
class Expected:
    severity: Severity
    line: int
    field: str | None
    fragments: tuple[str, ...]

    def matches(self, problem: Problem) -> bool:
        if (problem.severity, problem.line, problem.field) != (
            self.severity,
            self.line,
            self.field,
        ):
            return False
        position = 0
        for fragment in self.fragments:
            found = problem.message.find(fragment, position)
            if found < 0:
                return False
            position = found + len(fragment)
        return True

    def __str__(self) -> str:
        return f"{self.severity} {self.line} {self.field or '-'} {' ... '.join(self.fragments)}"


@dataclass(frozen=True)
class Case:
    expected: tuple[Expected, ...]
    never: tuple[str, ...]


def parse_case(text: str) -> Case:
    """The expectations in the leading comment lines of a corpus file."""
    expected: list[Expected] = []
    never: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            break
        if match := _EXPECT.fullmatch(line):
            field = match["field"]
            expected.append(
                Expected(
                    Severity.WARNING if match["warning"] else Severity.ERROR,
                    int(match["line"]),
                    None if field == "-" else field,
                    tuple(match["text"].strip().split(" ... ")),
                )
            )
        elif match := _NEVER.fullmatch(line):
            never.append(match["text"].strip())
        elif re.match(r"#\s*(expect|never)", line):
            raise ValueError(f"malformed expectation: {line!r}")
    return Case(tuple(expected), tuple(never))


def _show(problem: Problem) -> str:
    return f"{problem.severity} {problem.line} {problem.field or '-'} {problem.message}"


def test_corpus_is_large_enough_and_every_case_expects_something() -> None:
    assert len(CASES) >= 25
    for path in CASES:
        assert parse_case(path.read_text(encoding="utf-8")).expected, path.name


def test_parse_case_reads_errors_warnings_secrets_and_stops_at_the_document() -> None:
    case = parse_case(
        "# about this case\n"
        "# expect: 4 spec.version version 'v1' is not ... leading 'v'\n"
        "# expect-warning: 5 - selector matches no device\n"
        "# never: s3cret\n"
        "apiVersion: x\n"
        "# expect: 9 - not a header line\n"
    )
    assert case.expected == (
        Expected(Severity.ERROR, 4, "spec.version", ("version 'v1' is not", "leading 'v'")),
        Expected(Severity.WARNING, 5, None, ("selector matches no device",)),
    )
    assert case.never == ("s3cret",)
    with pytest.raises(ValueError, match="malformed"):
        parse_case("# expect: spec.version no line number\n")


def test_expected_fragments_must_appear_in_order() -> None:
    expected = Expected(Severity.ERROR, 3, "kind", ("unknown kind", "did you mean"))
    problem = Problem("case.yaml", 3, 7, None, None, "kind", "unknown kind 'X' (did you mean 'Y'?)")
    assert expected.matches(problem)
    assert not Expected(Severity.ERROR, 3, "kind", ("did you mean", "unknown kind")).matches(
        problem
    )
    assert not Expected(Severity.WARNING, 3, "kind", ("unknown kind",)).matches(problem)
    assert not Expected(Severity.ERROR, 4, "kind", ("unknown kind",)).matches(problem)
    assert not Expected(Severity.ERROR, 3, None, ("unknown kind",)).matches(problem)


def test_base_repository_alone_is_valid(tmp_path: Path) -> None:
    report = validate_tree(write_tree(tmp_path, dict(BASE)))
    assert report.problems == []
    assert report.documents == 7


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_corpus_case(path: Path, tmp_path: Path) -> None:
    content = path.read_bytes()
    case = parse_case(content.decode("utf-8"))
    root = write_tree(tmp_path, {**BASE, CASE_FILE: content})
    report = validate_tree(root)

    assert [_show(p) for p in report.problems if p.file != CASE_FILE] == [], "BASE must stay clean"
    unmatched = [p for p in report.problems if p.file == CASE_FILE]
    missing: list[Expected] = []
    for expected in case.expected:
        hit = next((p for p in unmatched if expected.matches(p)), None)
        if hit is None:
            missing.append(expected)
        else:
            unmatched.remove(hit)
    assert not missing and not unmatched, (
        "expected but not reported:\n  "
        + "\n  ".join(map(str, missing))
        + "\nreported but not expected:\n  "
        + "\n  ".join(map(_show, unmatched))
    )
    for secret in case.never:
        assert secret in content.decode("utf-8"), f"{secret!r} is not in the case"
        assert [p.message for p in report.problems if secret in p.message] == []
