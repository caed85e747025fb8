"""The loader: which files are read, how YAML becomes data, and where every value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifests.load import MAX_FILE_BYTES, Document, load_bytes, load_files, read_tree
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import validate_tree
from tests.support.repos import BASE, write_tree


def _load(text: str | bytes) -> tuple[list[Document], list[Problem]]:
    return load_bytes("f.yaml", text.encode() if isinstance(text, str) else text)


def _one(text: str | bytes) -> Document:
    documents, problems = _load(text)
    assert problems == []
    assert len(documents) == 1
    return documents[0]


def _refusal(text: str | bytes) -> Problem:
    documents, problems = _load(text)
    assert documents == []
    assert len(problems) == 1
    return problems[0]


def _where(problem: Problem) -> tuple[int, int]:
    return problem.line, problem.column


def _paths(root: Path) -> list[str]:
    return [rel for rel, _ in read_tree(root)]


# -- documents and lines ------------------------------------------------------------------------


def test_several_documents_per_file_keep_their_own_lines() -> None:
    documents, problems = _load(
        "# header comment\n"
        "kind: Volume\n"
        "metadata: {name: a}\n"
        "---\n"
        "kind: Network\n"
        "metadata:\n"
        "  name: b\n"
        "---\n"
        "\n"
        "kind: Device\n"
    )
    assert problems == []
    assert [(d.kind, d.name) for d in documents] == [
        ("Volume", "a"),
        ("Network", "b"),
        ("Device", None),
    ]
    assert [d.locate(("kind",)) for d in documents] == [(2, 7), (5, 7), (10, 7)]
    assert documents[1].locate(("metadata", "name")) == (7, 9)
    assert {d.file for d in documents} == {"f.yaml"}


@pytest.mark.parametrize(
    "text",
    [
        "---\n---\nkind: Volume\n",
        "kind: Volume\n---\n",
        "kind: Volume\n---\n# only a comment\n---\n",
        "---\n...\n---\nkind: Volume\n...\n",
    ],
    ids=["leading", "trailing-separator", "comment-only", "explicit-end"],
)
def test_empty_documents_are_skipped(text: str) -> None:
    assert _one(text).data == {"kind": "Volume"}


def test_an_explicit_null_document_is_not_skipped() -> None:
    documents, problems = _load("kind: Volume\n---\nnull\n")
    assert problems == []
    assert [d.data for d in documents] == [{"kind": "Volume"}, None]


def test_empty_file_and_trailing_separator_give_no_finding(tmp_path: Path) -> None:
    report = validate_tree(
        write_tree(
            tmp_path,
            {
                **BASE,
                "empty.yaml": "",
                "comments.yaml": "# nothing here yet\n",
                "app.yaml": BASE["app.yaml"] + "---\n",
            },
        )
    )
    assert report.problems == []
    assert report.documents == 7


def test_parse_error_in_third_document_keeps_the_first_two() -> None:
    documents, problems = _load(
        "kind: Volume\nmetadata: {name: a}\n---\nkind: Volume\nmetadata: {name: b}\n---\nkind: [\n"
    )
    assert [d.name for d in documents] == ["a", "b"]
    assert [(p.line, p.message) for p in problems] == [
        (8, "invalid YAML: while parsing a flow node, did not find expected node content")
    ]
    # The kept documents can still be located although the file does not parse to the end.
    assert documents[1].locate(("metadata", "name")) == (5, 18)


def test_finding_before_a_parse_error_in_the_same_file_is_reported(tmp_path: Path) -> None:
    case = (
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Volume\nmetadata: {name: Cache}\n---\nkind: [\n"
    )
    report = validate_tree(write_tree(tmp_path, {**BASE, "case.yaml": case}))
    assert [(p.line, p.field, p.message[:40]) for p in report.problems] == [
        (3, "metadata.name", "name 'Cache' is not a DNS-1123 label: us"),
        (6, None, "invalid YAML: while parsing a flow node,"),
    ]


def test_refused_document_does_not_hide_the_next_one() -> None:
    documents, problems = _load("kind: Volume\n---\nkind: !x Volume\n---\nkind: Network\n")
    assert [d.kind for d in documents] == ["Volume", "Network"]
    assert [(p.line, p.column) for p in problems] == [(3, 7)]


# -- which files are read -------------------------------------------------------------------------


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / ".config" / "repo"  # a hidden folder above the root does not matter
    write_tree(
        root,
        {
            "a.yaml": "kind: Volume\n",
            ".sops.yaml": "creation_rules: []\n",
            ".git/x.yaml": "kind: Volume\n",
            ".github/workflows/ci.yml": "on: push\n",
            "sub/.hidden.yaml": "kind: Volume\n",
            "sub/.secret/c.yaml": "kind: Volume\n",
            "sub/b.yml": "kind: Volume\n",
        },
    )
    assert _paths(root) == ["a.yaml", "sub/b.yml"]


def test_only_yaml_and_yml_files_are_read(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "a.yaml": "kind: Volume\n",
            "b.yml": "kind: Volume\n",
            "c.json": "{}",
            "README.md": "# readme\n",
            "d.yaml.bak": "kind: Volume\n",
            "key.txt": "AGE-SECRET-KEY-1\n",
            "yaml": "kind: Volume\n",
        },
    )
    assert _paths(tmp_path) == ["a.yaml", "b.yml"]


def test_files_are_sorted_with_posix_paths(tmp_path: Path) -> None:
    write_tree(
        tmp_path, {f: "kind: Volume\n" for f in ("z.yaml", "b/a.yaml", "a/z.yaml", "a.yaml")}
    )
    assert _paths(tmp_path) == ["a.yaml", "a/z.yaml", "b/a.yaml", "z.yaml"]


def test_hedgerowignore_uses_gitignore_syntax(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            ".hedgerowignore": (
                "# drafts are not validated\ndrafts/\n*.draft.yaml\n!keep.draft.yaml\n/generated\n"
            ),
            "a.yaml": "kind: Volume\n",
            "drafts/b.yaml": "kind: Volume\n",
            "apps/drafts/c.yaml": "kind: Volume\n",
            "apps/d.draft.yaml": "kind: Volume\n",
            "apps/keep.draft.yaml": "kind: Volume\n",
            "generated/e.yaml": "kind: Volume\n",
            "apps/generated/f.yaml": "kind: Volume\n",
        },
    )
    assert _paths(tmp_path) == ["a.yaml", "apps/generated/f.yaml", "apps/keep.draft.yaml"]


def test_ignored_files_are_not_validated(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path, {**BASE, ".hedgerowignore": "wip/\n", "wip/broken.yaml": "kind: [\n"}
    )
    assert validate_tree(root).problems == []


def test_file_over_one_mebibyte_is_refused_naming_its_size(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"#" * MAX_FILE_BYTES + b"\n")
    (tmp_path / "limit.yaml").write_bytes(b"#" * (MAX_FILE_BYTES - 1) + b"\n")
    files = dict(read_tree(tmp_path))
    big = files["big.yaml"]
    assert isinstance(big, Problem)
    assert (big.line, big.message) == (0, "file is 1048577 bytes; manifests are limited to 1 MiB")
    assert files["limit.yaml"] == b"#" * (MAX_FILE_BYTES - 1) + b"\n"
    loaded = load_files(files.items())
    assert loaded.documents == []
    assert loaded.problems == [big]


# -- encodings -------------------------------------------------------------------------------------


def test_utf8_bom_is_accepted_and_columns_ignore_it() -> None:
    document = _one(b"\xef\xbb\xbfkind: Volume\nmetadata: {name: caf\xc3\xa9}\n")
    assert document.data == {"kind": "Volume", "metadata": {"name": "café"}}
    assert document.locate(("kind",)) == (1, 7)


def test_invalid_utf8_reports_the_line_of_the_bad_byte() -> None:
    problem = _refusal(b"kind: Volume\nmetadata:\n  name: caf\xe9\n")
    assert (problem.file, problem.message) == ("f.yaml", "file is not valid UTF-8")
    assert _where(problem) == (3, 12)


# -- YAML features ---------------------------------------------------------------------------------

MERGE = """\
base: &base
  driver: local
  options: {size: "1"}
spec:
  <<: *base
  driver: nfs
"""


def test_merge_keys_work_and_explicit_keys_win() -> None:
    document = _one(MERGE)
    assert document.data["spec"] == {"driver": "nfs", "options": {"size": "1"}}
    assert document.locate(("spec", "driver")) == (6, 11)  # the explicit key, not the merged one
    assert document.locate(("spec", "options", "size")) == (3, 19)  # inside the anchor


def test_merge_of_several_mappings_takes_the_first_source_first() -> None:
    document = _one("a: &a {x: 1, y: 2}\nb: &b {x: 3, z: 4}\nc: {<<: [*a, *b], y: 5}\n")
    assert document.data["c"] == {"x": 1, "y": 5, "z": 4}


def test_merge_of_a_scalar_is_refused() -> None:
    problem = _refusal("a: {<<: 1}\n")
    assert problem.message == "a merge key (<<) needs a mapping or a list of mappings"
    assert _where(problem) == (1, 9)


def test_duplicate_key_is_refused_naming_the_first_line() -> None:
    problem = _refusal("kind: Volume\nspec:\n  driver: local\n  options: {}\n  driver: nfs\n")
    assert problem.message == "duplicate key 'driver' (first defined on line 3)"
    assert _where(problem) == (5, 3)


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: {c: *a}}\n"], ids=["list", "map"])
def test_recursive_alias_is_refused(text: str) -> None:
    problem = _refusal(text)
    assert problem.message == "recursive alias: an anchor cannot contain an alias to itself"
    assert problem.line == 1


def test_alias_bomb_is_refused_before_expanding() -> None:
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    problem = _refusal("\n".join(lines) + "\n")
    assert problem.message == "aliases expand to over 100000 values; refusing to expand"


def test_reused_anchor_is_fine() -> None:
    assert _one("a: &a [1, 2]\nb: [*a, *a]\n").data == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!binary aGVsbG8=", "tag:yaml.org,2002:binary"),
        ("!env HOME", "!env"),
        ("!!python/object/apply:os.system [echo hi]", "tag:yaml.org,2002:python/object/apply:"),
        ("!!set {a}", "tag:yaml.org,2002:set"),
        ("!!omap [a: 1]", "tag:yaml.org,2002:omap"),
    ],
    ids=["binary", "custom", "python", "set", "omap"],
)
def test_unsupported_tags_are_refused(value: str, tag: str) -> None:
    problem = _refusal(f"kind: Volume\nvalue: {value}\n")
    assert problem.message.startswith(f"unsupported YAML tag '{tag}")
    assert _where(problem) == (2, 8)


def test_non_string_keys_are_refused() -> None:
    problem = _refusal("? [a, b]\n: 1\n")
    assert (problem.message, _where(problem)) == ("mapping keys must be plain strings", (1, 3))


def test_deep_nesting_is_refused() -> None:
    problem = _refusal("a: " + "[" * 70 + "]" * 70 + "\n")
    assert problem.message == "nesting is deeper than 64 levels"


def test_scalars_keep_yaml_types_and_timestamps_stay_strings() -> None:
    document = _one(
        "version: 2024-01-01\nat: 2024-01-01T10:00:00Z\nport: 8080\non: yes\nratio: 1.5\n"
        'quoted: "8080"\nempty:\n'
    )
    assert document.data == {
        "version": "2024-01-01",
        "at": "2024-01-01T10:00:00Z",
        "port": 8080,
        "on": True,
        "ratio": 1.5,
        "quoted": "8080",
        "empty": None,
    }


def test_a_date_as_release_version_is_a_semver_error_not_a_type_error(tmp_path: Path) -> None:
    release = BASE["release.yaml"].replace('version: "1.0.0"', "version: 2024-01-01")
    report = validate_tree(write_tree(tmp_path, {**BASE, "release.yaml": release}))
    found = [(p.line, p.field, p.message) for p in report.errors if p.file == "release.yaml"]
    assert len(found) == 1
    assert found[0][:2] == (6, "spec.version")
    assert found[0][2].startswith("version '2024-01-01' is not Semantic Versioning 2.0.0")


# -- locating values ------------------------------------------------------------------------------

NESTED = """\
kind: Release
spec:
  containers:
    - name: a
      image: x
    - name: b
      env:
        PORT: "80"
      volumes:
        - {volume: data, target: /data}
"""


@pytest.mark.parametrize(
    ("path", "at_key", "where"),
    [
        ((), False, (1, 1)),
        (("kind",), False, (1, 7)),
        (("kind",), True, (1, 1)),
        (("spec", "containers", 1, "name"), False, (6, 13)),
        (("spec", "containers", 1, "name"), True, (6, 7)),
        (("spec", "containers", 1, "env", "PORT"), False, (8, 15)),
        (("spec", "containers", 1, "env", "PORT"), True, (8, 9)),
        (("spec", "containers", 1, "volumes", 0, "target"), False, (10, 34)),
        (("spec", "containers", 0), False, (4, 7)),
        # A path that goes further than the document stops at the deepest node that exists.
        (("spec", "containers", 1, "env", "MISSING"), False, (8, 9)),
        (("spec", "containers", 7, "name"), False, (4, 5)),
        (("spec", "nope", "deeper"), True, (3, 3)),
    ],
)
def test_locate_points_at_the_value_or_the_key(
    path: tuple[str | int, ...], at_key: bool, where: tuple[int, int]
) -> None:
    assert _one(NESTED).locate(path, at_key=at_key) == where


def test_tabs_and_control_characters_get_a_located_explanation() -> None:
    _, problems = load_bytes("t.yaml", b"a:\n\tb: 1\n")
    (tab,) = problems
    assert (tab.line, tab.column) == (2, 1)
    assert tab.message.endswith("YAML does not allow tabs for indentation: use spaces")
    _, problems = load_bytes("n.yaml", b"a: ok\nb: x\x00y\n")
    (nul,) = problems
    assert (nul.line, nul.column) == (2, 5)
    assert nul.message == "invalid YAML: control character U+0000 is not allowed"
