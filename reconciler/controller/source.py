"""Manifests from a git revision: the adapter between git and the pure core.

Everything is read from a commit's tree, never from a checkout, so a review sees exactly what
a merge would bring, whatever state the working tree is in. The path rule (hidden paths,
`.yaml`/`.yml`, `.hedgerowignore`) is `reconciler.manifests.load`'s, so a revision and a folder
on disk always agree on which files are manifests.

A `Mirror` keeps a bare copy of the branches of the repository the controller follows, and
`watch_refs` notices commits in a local one; both only feed the same tree reading.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote

import git
import pathspec

from reconciler.errors import HedgerowError
from reconciler.manifests.incremental import Keyed, known
from reconciler.manifests.load import (
    IGNORE_FILE,
    MAX_FILE_BYTES,
    ignore_spec,
    is_manifest_path,
    skip_folder,
)
from reconciler.manifests.problems import Problem

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names
_LINK_MODE = 0o120000
_MAX_LINKS = 8  # like a kernel's ELOOP limit, small: a chain longer than this is a mistake


class SourceError(HedgerowError):
    """A repository or revision that cannot be used; the message is meant for the user."""


class BranchDeleted(SourceError):
    """The followed branch is gone upstream; `last` is the commit it had when last fetched,
    which the mirror keeps."""

    def __init__(self, message: str, last: str) -> None:
        super().__init__(message)
        self.last = last


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


def descends(repo: git.Repo, sha: str, ancestor: str) -> bool:
    """Whether commit `sha` is `ancestor` or comes after it in history. False as well when
    either is unknown to `repo`: a descent that cannot be shown is not assumed."""
    if not (_SHA.fullmatch(sha) and _SHA.fullmatch(ancestor)):
        raise ValueError(f"not a full commit sha: {sha!r}, {ancestor!r}")
    status, _, _ = repo.git.execute(
        ["git", "merge-base", "--is-ancestor", ancestor, sha],
        with_extended_output=True,
        with_exceptions=False,
    )
    return status == 0


def tree_files(repo: git.Repo, sha: str, path: str = "") -> Iterator[tuple[str, bytes | Problem]]:
    """(path, content) of every manifest in the commit's tree, sorted like `read_tree`.

    `path` is the folder of the manifests inside the repository ("" for its root); paths are
    reported relative to it, as `hedgerow validate PATH` reports them.

    A blob over 1 MiB becomes a Problem without being read; a symbolic link is followed inside
    the tree, as a checkout would; submodules are not part of the repository's manifests.
    """
    for file in tree_blobs(repo, sha, path):
        yield file.path, file.read()


def tree_blobs(repo: git.Repo, sha: str, path: str = "") -> Iterator[Keyed]:
    """`tree_files` without reading: each manifest keyed by its blob id (a link's by its
    target's), which the tree gives for free, its content read only when asked for. An
    incremental validation then reads only the files a commit changed."""
    try:
        root = repo.commit(sha).tree
    except ValueError:  # GitPython's word for a commit the repository does not have
        raise SourceError(f"commit {sha[:12]} is not in the repository") from None
    if path.strip("/"):
        try:
            root = root / path.strip("/")
        except KeyError:
            raise SourceError(f"{path!r} is not a folder in commit {sha[:12]}") from None
        if not isinstance(root, git.Tree):
            raise SourceError(f"{path!r} is not a folder in commit {sha[:12]}")
    spec = _tree_ignore_spec(root)
    base = f"{root.path}/" if root.path else ""
    for rel, blob in sorted(_walk(root, spec, base), key=lambda found: found[0]):
        target = _follow(root, rel, blob)
        if isinstance(target, str):
            yield known(rel, _problem(rel, target))
        else:
            yield Keyed(rel, target.hexsha, partial(_read_blob, rel, target))


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


def _walk(
    tree: git.Tree, spec: pathspec.GitIgnoreSpec | None, base: str
) -> Iterator[tuple[str, git.Blob]]:
    """Manifest blobs with their paths relative to the folder `base`; excluded folders are
    never read."""
    for blob in tree.blobs:
        rel = os.fspath(blob.path)[len(base) :]
        if is_manifest_path(rel, spec):
            yield rel, blob
    for sub in tree.trees:
        if not skip_folder(os.fspath(sub.path)[len(base) :], spec):
            yield from _walk(sub, spec, base)


def _read_blob(rel: str, blob: git.Blob) -> bytes | Problem:
    size = blob.size  # from the object header: the content is not read
    if size > MAX_FILE_BYTES:
        return _problem(rel, f"file is {size} bytes; manifests are limited to 1 MiB")
    data: bytes = blob.data_stream.read()
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


# --- following a repository: a mirror fetched on demand, and a watch on local refs -----------

_SCHEMES = frozenset({"file", "https", "ssh"})
_REFSPEC = "+refs/heads/*:refs/heads/*"  # branches only: no pull-request refs, no moved tags
# The followed branch's last fetched commit, out of the refspec's reach: a branch deleted
# upstream is pruned from refs/heads, and this keeps its commits (and `git gc` off them).
_KEPT = "refs/hedgerow/followed/"
_MIN_GIT = (2, 31)  # GIT_CONFIG_COUNT, which keeps the URL out of files and process lists
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#\s'\"]*)@")
_DEFAULT_TIMEOUT = 300.0


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`.

    An https user name is often a token itself (`https://<token>@github.com/...`), so the whole
    userinfo goes; for ssh and file only a password does, `git@` is not a secret.
    """

    def hide(found: re.Match[str]) -> str:
        scheme, userinfo = found["scheme"], found["userinfo"]
        if scheme.lower() in ("http", "https"):
            return f"{scheme}://***@"
        user, colon, _ = userinfo.partition(":")
        return f"{scheme}://{user}:***@" if colon else found[0]

    return _USERINFO.sub(hide, text)


class Mirror:
    """A bare copy of a repository's branches in `cache`, fetched on demand; never checked out.

    The controller reads manifests from trees (`tree_files(mirror.repo, sha)`), so a mirror is
    all it needs of the remote. The URL, credentials included, reaches git only through its
    environment: it is not written into the cache nor shown in the process list, and every
    message and repr uses the redacted form. Blocking: the controller runs `fetch` in a thread.
    """

    def __init__(
        self, url: str, branch: str, cache: Path, *, timeout: float = _DEFAULT_TIMEOUT
    ) -> None:
        self._url = _normalize_url(url)
        self._secrets = _url_secrets(self._url)
        self.display_url = redact(self._url)
        self.branch = _check_branch(branch)
        # keyed by the redacted URL: a rotated token keeps the same mirror
        self.path = Path(cache) / hashlib.sha256(self.display_url.encode()).hexdigest()[:16]
        self._timeout = timeout
        self._repo: git.Repo | None = None
        self._kept: str | None = None  # the commit _KEPT names, once this process wrote it
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Mirror({self.display_url!r}, branch={self.branch!r}, path={str(self.path)!r})"

    @property
    def repo(self) -> git.Repo:
        """The mirror's repository, for `tree_files` and `resolve`; it must have been fetched."""
        if self._repo is None:
            if not self.path.is_dir():
                raise SourceError(f"{self.display_url}: not fetched yet")
            self._repo = self._open()
        return self._repo

    def fetch(self) -> str:
        """Bring the mirror up to date (creating it on first use); the full sha of the branch.

        A branch rewritten upstream is followed: the refspec forces and prunes. A followed
        branch deleted upstream raises `BranchDeleted`, naming the commit it last had, which
        the mirror keeps; fetched again once the branch is back.
        """
        with self._lock:
            if self._repo is None:
                self._repo = self._open() if self.path.is_dir() else self._create()
            self._git(
                self._repo,
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--no-write-fetch-head",
                "origin",
                _REFSPEC,
                action=f"cannot fetch {self.display_url}",
            )
            return self._tip(self._repo)

    def files(self, sha: str, path: str = "") -> Iterator[tuple[str, bytes | Problem]]:
        """`tree_files` of a fetched commit: a Mirror is a controller `Source` as it is."""
        return tree_files(self.repo, sha, path)

    def blobs(self, sha: str, path: str = "") -> Iterator[Keyed]:
        """`tree_blobs` of a fetched commit: the files a controller validates incrementally."""
        return tree_blobs(self.repo, sha, path)

    def message(self, sha: str) -> str:
        """The commit's subject line."""
        summary = self.repo.commit(sha).summary
        return summary.decode("utf-8", "replace") if isinstance(summary, bytes) else summary

    def descends(self, sha: str, ancestor: str) -> bool:
        """`descends` in the mirror: a Mirror is the controller's `History` too."""
        return descends(self.repo, sha, ancestor)

    def close(self) -> None:
        """End the git processes the repository keeps for reading objects."""
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def __enter__(self) -> Mirror:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> git.Repo:
        """An empty bare repository, renamed into place so that a crash leaves no half mirror."""
        _check_git_version()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{self.path.name}-", dir=self.path.parent)
        try:
            git.Repo.init(staging, bare=True).close()
            os.rename(staging, self.path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not self.path.is_dir():  # not merely another process creating it first
                raise
        return self._open()

    def _open(self) -> git.Repo:
        try:
            return git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise SourceError(
                f"{self.path}: the mirror of {self.display_url} is damaged; delete the folder"
            ) from None

    def _tip(self, repo: git.Repo) -> str:
        kept = f"{_KEPT}{self.branch}"
        sha = _rev_parse(repo, f"refs/heads/{self.branch}")
        if sha is not None:
            if sha != self._kept:
                repo.git.update_ref(kept, sha)
                self._kept = sha
            return sha
        branches = repo.git.for_each_ref("--format=%(refname:lstrip=2)", "refs/heads/").split()
        known = ", ".join(branches[:10]) + (", ..." if len(branches) > 10 else "")
        listed = f"(its branches: {known})" if branches else "(it has no branches)"
        last = _rev_parse(repo, kept)
        if last is not None:
            raise BranchDeleted(
                f"{self.display_url}: branch {self.branch!r} was deleted upstream {listed}; "
                f"its last fetched commit {last[:12]} is kept",
                last,
            )
        raise SourceError(f"{self.display_url} has no branch {self.branch!r} {listed}")

    def _git(self, repo: git.Repo, *args: str, action: str) -> None:
        """Run git for the remote, without prompting; a failure becomes a redacted SourceError.

        The error is raised outside the `except` block so that no exception holding the
        command or git's raw output is chained to it.
        """
        failure: str | None = None
        try:
            status, _, stderr = repo.git.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=self._timeout,
                env=self._env(),
            )
        except git.GitCommandNotFound:
            failure = "git is not installed"
        else:
            if status != 0:
                failure = _summary(stderr) or f"git exited with status {status}"
        if failure is not None:
            raise SourceError(self._scrub(f"{action}: {failure}"))

    def _env(self) -> dict[str, str]:
        """The URL as configuration in the environment, after any the caller already set."""
        try:
            count = int(os.environ.get("GIT_CONFIG_COUNT") or 0)
        except ValueError:
            count = 0
        return {
            "GIT_TERMINAL_PROMPT": "0",  # a missing credential fails instead of waiting forever
            "GIT_CONFIG_COUNT": str(count + 1),
            f"GIT_CONFIG_KEY_{count}": "remote.origin.url",
            f"GIT_CONFIG_VALUE_{count}": self._url,
        }

    def _scrub(self, message: str) -> str:
        message = redact(message.replace(self._url, self.display_url))
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message


def _rev_parse(repo: git.Repo, ref: str) -> str | None:
    """The commit `ref` names, or None when there is no such ref."""
    status, sha, _ = repo.git.execute(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        with_extended_output=True,
        with_exceptions=False,
    )
    return sha.strip() if status == 0 else None


def _normalize_url(url: str) -> str:
    """The URL git is given: a local path made absolute, so the mirror does not depend on cwd."""
    if not url.strip():
        raise SourceError("the repository URL is empty")
    if "://" in url:
        scheme = url.partition("://")[0].lower()
        if scheme not in _SCHEMES:
            raise SourceError(
                f"{redact(url)}: unsupported URL scheme {scheme!r} "
                "(use a local path, file://, https:// or ssh://)"
            )
        return url
    head = url.partition(":")[0]
    if ":" in url and "/" not in head:  # git's scp-like ssh syntax, git@host:org/repo.git
        return url
    return os.path.abspath(os.path.expanduser(url))


def _url_secrets(url: str) -> tuple[str, ...]:
    """What of the userinfo must never be shown, as written and percent-decoded."""
    found = _USERINFO.match(url)
    if found is None:
        return ()
    user, _, password = found["userinfo"].partition(":")
    hidden = [user, password] if found["scheme"].lower() in ("http", "https") else [password]
    secrets = {form for part in hidden if part for form in (part, unquote(part))}
    return tuple(sorted(secrets, key=len, reverse=True))  # longest first: no partial leftovers


def _check_branch(branch: str) -> str:
    """A branch name git accepts, refused early: a typo should not cost a fetch to find."""
    valid = not branch.startswith("-") and branch != "HEAD"
    if valid:
        status, _, _ = git.Git().execute(
            ["git", "check-ref-format", f"refs/heads/{branch}"],
            with_extended_output=True,
            with_exceptions=False,
        )
        valid = status == 0
    if not valid:
        raise SourceError(f"{branch!r} is not a valid branch name")
    return branch


def _check_git_version() -> None:
    version = git.Git().version_info[:2]
    if version < _MIN_GIT:
        raise SourceError(
            f"git {'.'.join(map(str, version))} is too old to follow a repository; "
            f"{'.'.join(map(str, _MIN_GIT))} or later is needed"
        )


def _summary(stderr: str) -> str:
    """git's complaint on one line, without its `fatal:`/`error:` prefixes, for a log line."""
    summary = ""
    for line in stderr.splitlines():
        line = re.sub(r"^(fatal|error): ", "", line.strip()).rstrip(".")
        if line:  # a line starting in lower case continues the sentence before it
            glue = " " if line[0].islower() else "; "
            summary = f"{summary}{glue}{line}" if summary else line
    return summary


_REF_FILES = frozenset({"HEAD", "packed-refs"})
_REF_FOLDERS = frozenset({"refs", "reftable"})
_WATCH_DEBOUNCE_MS = 300  # a commit is a burst of writes: one call for it, well within 1 s
_WATCH_STEP_MS = 50


async def watch_refs(path: Path, on_change: Callable[[], None], *, stop: asyncio.Event) -> None:
    """Call `on_change()` whenever a ref of the local repository at `path` moves, until `stop`.

    For a repository on the same machine a fetch loop is wasted work: the controller reacts to
    the commit itself. Only refs and HEAD count (objects written by a commit do not), and
    watchfiles groups a commit's writes into one call. `path` is the repository, its `.git`, or
    a bare repository; `on_change` runs in the event loop and should only schedule work.
    """
    import watchfiles  # here: only the controller needs it, not the CLI

    repo = open_repo(path)
    try:
        git_dir = Path(repo.common_dir).resolve()  # a linked worktree's refs live there
    finally:
        repo.close()
    prefix = str(git_dir) + os.sep

    def is_ref(change: watchfiles.Change, changed: str) -> bool:
        if not changed.startswith(prefix):
            return False
        rel = changed[len(prefix) :].split(os.sep)
        if rel[-1].endswith(".lock"):
            return False
        return (len(rel) == 1 and rel[0] in _REF_FILES) or rel[0] in _REF_FOLDERS

    async for _ in watchfiles.awatch(
        git_dir,
        watch_filter=is_ref,
        debounce=_WATCH_DEBOUNCE_MS,
        step=_WATCH_STEP_MS,
        stop_event=stop,
    ):
        on_change()
