"""Manifests read from git revisions, in real repositories: the commit's tree and nothing else,
with exactly the folder rule of `read_tree`."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from reconciler.controller.source import (
    SourceError,
    open_repo,
    resolve,
    tree_blobs,
    tree_files,
)
from reconciler.manifests.load import MAX_FILE_BYTES, read_tree
from reconciler.manifests.problems import Problem
from tests.support.repos import write_tree

VOLUME = "kind: Volume\n"


pytestmark = pytest.mark.usefixtures("git_identity")


def init(root: Path) -> git.Repo:
    root.mkdir(parents=True, exist_ok=True)
    return git.Repo.init(root, initial_branch="main")


def commit(repo: git.Repo, files: dict[str, str | bytes], message: str = "change") -> str:
    """Write `files` (over the working tree), stage everything and commit; the new sha."""
    write_tree(Path(repo.working_dir), files)
    repo.git.add("-A")
    repo.git.commit("-q", "--allow-empty", "-m", message)
    return repo.head.commit.hexsha


def contents(repo: git.Repo, sha: str) -> dict[str, bytes | Problem]:
    return dict(tree_files(repo, sha))


def test_reads_the_commit_tree_not_the_working_tree(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    first = commit(repo, {"a.yaml": "kind: A\n", "b/c.yaml": "kind: C\n"})
    second = commit(repo, {"a.yaml": "kind: A2\n"})
    # the working tree differs in every way from both commits
    write_tree(tmp_path / "repo", {"a.yaml": "kind: dirty\n", "untracked.yaml": VOLUME})
    (tmp_path / "repo" / "b" / "c.yaml").unlink()
    assert contents(repo, first) == {"a.yaml": b"kind: A\n", "b/c.yaml": b"kind: C\n"}
    assert contents(repo, second) == {"a.yaml": b"kind: A2\n", "b/c.yaml": b"kind: C\n"}


def test_same_files_as_read_tree_for_the_same_content(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        ".hedgerowignore": (
            "# drafts are not validated\ndrafts/\n*.draft.yaml\n!keep.draft.yaml\n/generated\n"
            "wip/\n!wip/keep.yaml\n"
        ),
        ".sops.yaml": VOLUME,
        ".github/workflow.yaml": VOLUME,
        "apps/.hidden/x.yaml": VOLUME,
        "a.yaml": VOLUME,
        "b.yml": VOLUME,
        "README.md": "# readme\n",
        "c.json": "{}",
        "d.yaml.bak": VOLUME,
        "drafts/b.yaml": VOLUME,
        "apps/drafts/c.yaml": VOLUME,
        "apps/d.draft.yaml": VOLUME,
        "apps/keep.draft.yaml": VOLUME,
        "generated/e.yaml": VOLUME,
        "apps/generated/f.yaml": VOLUME,
        "wip/keep.yaml": VOLUME,  # a negation cannot re-include a file of an excluded folder
        "z/y/x.yaml": VOLUME,
    }
    repo = init(tmp_path / "repo")
    sha = commit(repo, files)
    from_git = list(tree_files(repo, sha))
    assert [rel for rel, _ in from_git] == [
        "a.yaml",
        "apps/generated/f.yaml",
        "apps/keep.draft.yaml",
        "b.yml",
        "z/y/x.yaml",
    ]
    assert from_git == list(read_tree(write_tree(tmp_path / "copy", files)))


def test_hedgerowignore_comes_from_the_tree(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    sha = commit(repo, {".hedgerowignore": "wip/\n", "a.yaml": VOLUME, "wip/b.yaml": VOLUME})
    # an uncommitted ignore file changes nothing about the commit
    write_tree(tmp_path / "repo", {".hedgerowignore": "a.yaml\n"})
    assert list(contents(repo, sha)) == ["a.yaml"]
    sha = commit(repo, {".hedgerowignore": "*.yaml\n!/b.yaml\n", "b.yaml": VOLUME})
    assert list(contents(repo, sha)) == ["b.yaml"]


def test_a_blob_over_one_mebibyte_is_a_problem(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    limit = b"#" * (MAX_FILE_BYTES - 1) + b"\n"
    sha = commit(repo, {"big.yaml": b"#" * MAX_FILE_BYTES + b"\n", "limit.yaml": limit})
    files = contents(repo, sha)
    assert files["big.yaml"] == Problem(
        "big.yaml", 0, 0, None, None, None, "file is 1048577 bytes; manifests are limited to 1 MiB"
    )
    assert files["limit.yaml"] == limit


def test_symbolic_links_are_followed_inside_the_tree_only(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    root = tmp_path / "repo"
    write_tree(root, {"shared/web.yaml": VOLUME, "outside.txt": "x"})
    (root / "link.yaml").symlink_to("shared/web.yaml")
    (root / "escape.yaml").symlink_to("../../etc/passwd")
    (root / "dangling.yaml").symlink_to("missing.yaml")
    (root / "ignore").write_text("shared/\n")
    (root / ".hedgerowignore").symlink_to("ignore")
    sha = commit(repo, {})
    on_disk = dict(read_tree(root))
    files = contents(repo, sha)
    # shared/ is excluded through the linked ignore file, in both
    assert list(files) == list(on_disk) == ["dangling.yaml", "escape.yaml", "link.yaml"]
    assert files["link.yaml"] == on_disk["link.yaml"] == VOLUME.encode()
    assert files["escape.yaml"] == Problem(
        "escape.yaml",
        0,
        0,
        None,
        None,
        None,
        "symbolic link to '../../etc/passwd', which is not a file in this revision",
    )
    assert isinstance(files["dangling.yaml"], Problem)


def test_blobs_are_keyed_by_content_and_a_link_by_its_target(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    root = tmp_path / "repo"
    write_tree(root, {"shared/web.yaml": VOLUME, "a.yaml": "kind: A\n"})
    (root / "link.yaml").symlink_to("shared/web.yaml")
    first = commit(repo, {})
    second = commit(repo, {"shared/web.yaml": "kind: Network\n"})  # only the link's target
    before = {file.path: file for file in tree_blobs(repo, first)}
    after = {file.path: file for file in tree_blobs(repo, second)}
    assert {p: f.read() for p, f in after.items()} == contents(repo, second)
    assert before["a.yaml"].key == after["a.yaml"].key == repo.commit(first).tree["a.yaml"].hexsha
    assert before["link.yaml"].key == before["shared/web.yaml"].key
    assert after["link.yaml"].key == after["shared/web.yaml"].key != before["link.yaml"].key


def test_a_merge_commit_has_both_sides(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"a.yaml": "kind: A\n"})
    repo.git.checkout("-q", "-b", "feature")
    commit(repo, {"feature.yaml": "kind: F\n"})
    repo.git.checkout("-q", "main")
    commit(repo, {"main.yaml": "kind: M\n"})
    repo.git.merge("-q", "--no-edit", "feature")
    merge = resolve(repo, "HEAD")
    assert len(repo.commit(merge).parents) == 2
    assert contents(repo, merge) == {
        "a.yaml": b"kind: A\n",
        "feature.yaml": b"kind: F\n",
        "main.yaml": b"kind: M\n",
    }


def test_resolve_names_a_commit_the_way_git_does(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    first = commit(repo, {"a.yaml": VOLUME})
    second = commit(repo, {"b.yaml": VOLUME})
    repo.create_tag("v1", ref=first, message="annotated")
    assert resolve(repo, "main") == second
    assert resolve(repo, "HEAD~1") == first
    assert resolve(repo, "v1") == first  # an annotated tag peels to its commit
    assert resolve(repo, first[:10]) == first


@pytest.mark.parametrize("rev", ["nope", "--all", "HEAD^{tree}", "main~5", ""])
def test_resolve_refuses_what_is_not_a_commit_naming_the_revision(tmp_path: Path, rev: str) -> None:
    repo = init(tmp_path / "repo")
    commit(repo, {"a.yaml": VOLUME})
    with pytest.raises(SourceError, match=f"unknown revision '{rev}'".replace("^", r"\^")):
        resolve(repo, rev)


def test_open_repo_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a git repository"):
        open_repo(tmp_path)
    with pytest.raises(SourceError, match="no such directory"):
        open_repo(tmp_path / "missing")
    with pytest.raises(SourceError, match="remote repositories are not supported yet"):
        open_repo("https://example.invalid/fleet.git")
    repo = init(tmp_path / "repo")
    assert Path(open_repo(tmp_path / "repo").working_dir) == Path(repo.working_dir)
