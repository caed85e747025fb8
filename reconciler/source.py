"""Manifests from a git revision: the adapter between git and the pure core.

Everything is read from a commit's tree, never from a checkout, so a review sees exactly what
a merge would bring, whatever state the working tree is in. The path rule (hidden paths,
`.yaml`/`.yml`, `.hedgerowignore`) is `reconciler.load`'s, so a revision and a folder on disk
always agree on which files are manifests.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

import git
import pathspec

from reconciler.load import (
    IGNORE_FILE,
    MAX_FILE_BYTES,
    ignore_spec,
    is_manifest_path,
    skip_folder,
)
from reconciler.problems import Problem

_LINK_MODE = 0o120000
_MAX_LINKS = 8  # like a kernel's ELOOP limit, small: a chain longer than this is a mistake


class SourceError(Exception):
    """A repository or revision that cannot be used; the message is meant for the user."""


def open_repo(path_or_url: str | Path) -> git.Repo:
    """The repository at a local path (its root or its `.git`); remote URLs are not yet read."""
    location = str(path_or_url)
    if "://" in location or location.startswith("git@"):
        raise SourceError(f"{location}: remote repositories are not supported yet; clone it first")
    try:
        return git.Repo(location)
    except git.NoSuchPathError:
        raise SourceError(f"{location}: no such directory") from None
    except git.InvalidGitRepositoryError:
        raise SourceError(f"{location}: not a git repository") from None


def resolve(repo: git.Repo, rev: str) -> str:
    """The full sha of the commit `rev` names (a branch, tag, sha or expression like `HEAD~1`).

    git itself parses the revision, so every syntax the user knows from git works the same.
    """
    try:
        sha = repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except git.GitCommandError:
        raise SourceError(
            f"unknown revision {rev!r}: no commit has that name in this repository "
            "(for a branch of a clone, fetch it with its history first)"
        ) from None
    return str(sha).strip()


def tree_files(repo: git.Repo, sha: str, path: str = "") -> Iterator[tuple[str, bytes | Problem]]:
    """(path, content) of every manifest in the commit's tree, sorted like `read_tree`.

    `path` is the folder of the manifests inside the repository ("" for its root); paths are
    reported relative to it, as `hedgerow validate PATH` reports them.

    A blob over 1 MiB becomes a Problem without being read; a symbolic link is followed inside
    the tree, as a checkout would; submodules are not part of the repository's manifests.
    """
    root = repo.commit(sha).tree
    if path.strip("/"):
        try:
            root = root / path.strip("/")
        except KeyError:
            raise SourceError(f"{path!r} is not a folder in commit {sha[:12]}") from None
        if not isinstance(root, git.Tree):
            raise SourceError(f"{path!r} is not a folder in commit {sha[:12]}")
    spec = _tree_ignore_spec(root)
    for rel, blob in sorted(_walk(root, spec), key=lambda found: found[0]):
        yield rel, _read_blob(root, rel, blob)


def _tree_ignore_spec(root: git.Tree) -> pathspec.GitIgnoreSpec | None:
    """`.hedgerowignore` from the tree root; unreadable or absent means nothing is ignored."""
    found = _lookup(root, IGNORE_FILE)
    blob = _follow(root, IGNORE_FILE, found) if isinstance(found, git.Blob) else None
    if not isinstance(blob, git.Blob) or blob.size > MAX_FILE_BYTES:
        return None
    try:
        return ignore_spec(blob.data_stream.read().decode("utf-8").splitlines())
    except UnicodeDecodeError:
        return None


def _walk(tree: git.Tree, spec: pathspec.GitIgnoreSpec | None) -> Iterator[tuple[str, git.Blob]]:
    """Manifest blobs with their paths; excluded folders are never read."""
    for blob in tree.blobs:
        rel = os.fspath(blob.path)
        if is_manifest_path(rel, spec):
            yield rel, blob
    for sub in tree.trees:
        if not skip_folder(os.fspath(sub.path), spec):
            yield from _walk(sub, spec)


def _read_blob(root: git.Tree, rel: str, blob: git.Blob) -> bytes | Problem:
    target = _follow(root, rel, blob)
    if isinstance(target, str):
        return _problem(rel, target)
    size = target.size  # from the object header: the content is not read
    if size > MAX_FILE_BYTES:
        return _problem(rel, f"file is {size} bytes; manifests are limited to 1 MiB")
    data: bytes = target.data_stream.read()
    return data


def _follow(root: git.Tree, path: str, blob: git.Blob) -> git.Blob | str:
    """The blob a symbolic link leads to inside the tree, or why it leads nowhere."""
    for _ in range(_MAX_LINKS):
        if blob.mode != _LINK_MODE:
            return blob
        link = blob.data_stream.read().decode("utf-8", "replace")
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
        outside = link.startswith("/") or path == ".." or path.startswith("../")
        found = None if outside else _lookup(root, path)
        if not isinstance(found, git.Blob):
            return f"symbolic link to {link!r}, which is not a file in this revision"
        blob = found
    return "symbolic link: too many levels of links"


def _lookup(root: git.Tree, path: str) -> object:
    try:
        return root / path
    except KeyError:
        return None


def _problem(rel: str, message: str) -> Problem:
    return Problem(rel, 0, 0, None, None, None, message)
