"""Following a repository: a bare mirror fetched from real repositories on this machine, and a
watch on a local repository's refs. Nothing here talks to any address but loopback."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.controller.source import (
    BranchDeleted,
    Mirror,
    SourceError,
    redact,
    tree_files,
    watch_refs,
)

VOLUME = "kind: Volume\n"
SECRET = "s3cr3t"
SPLIT = "s3c%40r3t"  # a password with an `@`, percent-encoded: shown neither way
UNREACHABLE = f"https://user:{SECRET}@127.0.0.1:9/x.git"  # loopback port 9: refused at once


pytestmark = pytest.mark.usefixtures("git_identity")


def commit(repo: git.Repo, files: dict[str, str], message: str = "change") -> str:
    """Write `files` into the working tree, stage everything and commit; the new sha."""
    for rel, text in files.items():
        target = Path(repo.working_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    repo.git.add("-A")
    repo.git.commit("-q", "--allow-empty", "-m", message)
    return repo.head.commit.hexsha


def where(repo: git.Repo) -> str:
    """The working directory of `repo`: a local path, the simplest URL a mirror follows."""
    return str(repo.working_dir)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[git.Repo]:
    """The repository the controller follows, with one commit on `main`."""
    repo = git.Repo.init(tmp_path / "upstream", mkdir=True, initial_branch="main")
    commit(repo, {"a.yaml": VOLUME})
    yield repo
    repo.close()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_a_path_is_mirrored_bare_and_new_commits_are_fetched(
    upstream: git.Repo, cache: Path
) -> None:
    with Mirror(where(upstream), "main", cache) as mirror:
        assert mirror.fetch() == upstream.head.commit.hexsha
        assert mirror.repo.bare
        assert mirror.path == cache / hashlib.sha256(where(upstream).encode()).hexdigest()[:16]
        assert mirror.fetch() == upstream.head.commit.hexsha  # nothing new
        second = commit(upstream, {"b.yaml": VOLUME})
        assert mirror.fetch() == second


def test_a_file_url_is_mirrored(upstream: git.Repo, cache: Path) -> None:
    url = Path(upstream.working_dir).as_uri()
    assert url.startswith("file:///")
    with Mirror(url, "main", cache) as mirror:
        assert mirror.fetch() == upstream.head.commit.hexsha
        second = commit(upstream, {"b.yaml": VOLUME})
        assert mirror.fetch() == second


def test_a_relative_path_is_made_absolute(
    upstream: git.Repo, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(upstream.working_dir).parent)
    with Mirror("upstream", "main", cache) as mirror:
        assert mirror.display_url == where(upstream)
        monkeypatch.chdir(cache.parent.parent)  # the working directory no longer matters
        assert mirror.fetch() == upstream.head.commit.hexsha


def test_a_force_push_is_followed(upstream: git.Repo, cache: Path) -> None:
    first = upstream.head.commit.hexsha
    with Mirror(where(upstream), "main", cache) as mirror:
        dropped = commit(upstream, {"b.yaml": VOLUME}, "to be dropped")
        assert mirror.fetch() == dropped
        upstream.git.reset("-q", "--hard", first)
        rewritten = commit(upstream, {"c.yaml": VOLUME}, "rewritten")
        assert mirror.fetch() == rewritten
        commits = mirror.repo.commit
        assert mirror.repo.is_ancestor(commits(first), commits(rewritten))
        assert not mirror.repo.is_ancestor(commits(dropped), commits(rewritten))
        assert dict(tree_files(mirror.repo, rewritten)) == {
            "a.yaml": VOLUME.encode(),
            "c.yaml": VOLUME.encode(),
        }


def test_other_branches_are_mirrored_too_and_pruned(upstream: git.Repo, cache: Path) -> None:
    upstream.git.branch("feature")
    upstream.git.branch("gone")
    with Mirror(where(upstream), "feature", cache) as mirror:
        assert mirror.fetch() == upstream.head.commit.hexsha
        upstream.git.branch("-D", "gone")
        mirror.fetch()
        assert sorted(b.name for b in mirror.repo.branches) == ["feature", "main"]


def test_a_deleted_branch_is_reported_and_its_last_commit_kept(
    upstream: git.Repo, cache: Path
) -> None:
    upstream.git.branch("feature")
    with Mirror(where(upstream), "feature", cache) as mirror:
        last = mirror.fetch()
        upstream.git.branch("-D", "feature")
        for _ in range(2):  # and again at the next interval
            with pytest.raises(BranchDeleted) as raised:
                mirror.fetch()
            assert raised.value.last == last
            assert str(raised.value) == (
                f"{where(upstream)}: branch 'feature' was deleted upstream (its branches: main); "
                f"its last fetched commit {last[:12]} is kept"
            )
        assert "feature" not in [b.name for b in mirror.repo.branches]  # pruned, yet kept:
        mirror.repo.git.gc("--quiet", "--prune=now")
        assert dict(tree_files(mirror.repo, last)) == {"a.yaml": VOLUME.encode()}
        back = commit(upstream, {"b.yaml": VOLUME}, "after")
        upstream.git.branch("feature")
        assert mirror.fetch() == back
    with Mirror(where(upstream), "feature", cache) as restarted:  # it survives a restart
        upstream.git.branch("-D", "feature")
        with pytest.raises(BranchDeleted) as raised:
            restarted.fetch()
        assert raised.value.last == back


def test_a_branch_never_fetched_is_missing_not_deleted(upstream: git.Repo, cache: Path) -> None:
    with Mirror(where(upstream), "main", cache) as mirror:
        mirror.fetch()
    with Mirror(where(upstream), "release", cache) as other, pytest.raises(SourceError) as raised:
        other.fetch()
    assert not isinstance(raised.value, BranchDeleted)
    assert "has no branch 'release'" in str(raised.value)


def test_descends_follows_history(upstream: git.Repo, cache: Path) -> None:
    first = upstream.head.commit.hexsha
    second = commit(upstream, {"b.yaml": VOLUME})
    upstream.git.checkout("-q", "--orphan", "unrelated")
    orphan = commit(upstream, {"c.yaml": VOLUME}, "no parent")
    with Mirror(where(upstream), "main", cache) as mirror:
        mirror.fetch()
        assert mirror.descends(second, first) and mirror.descends(first, first)
        assert not mirror.descends(first, second)  # moved back
        assert not mirror.descends(orphan, second) and not mirror.descends(second, orphan)
        assert not mirror.descends(second, "0" * 40)  # unknown: not shown to descend
        with pytest.raises(ValueError, match="not a full commit sha"):
            mirror.descends("--all", first)


def test_a_missing_branch_is_named(upstream: git.Repo, cache: Path) -> None:
    with (
        Mirror(where(upstream), "production", cache) as mirror,
        pytest.raises(SourceError, match=f"^{where(upstream)} has no branch 'production'"),
    ):
        mirror.fetch()


def test_an_empty_repository_has_no_branches(tmp_path: Path, cache: Path) -> None:
    empty = git.Repo.init(tmp_path / "empty", mkdir=True, bare=True)
    with (
        Mirror(str(empty.git_dir), "main", cache) as mirror,
        pytest.raises(SourceError, match="has no branch 'main' \\(it has no branches\\)"),
    ):
        mirror.fetch()


def test_a_missing_repository_is_a_source_error(tmp_path: Path, cache: Path) -> None:
    url = (tmp_path / "nothing").as_uri()
    with (
        Mirror(url, "main", cache) as mirror,
        pytest.raises(SourceError, match=f"^cannot fetch {url}: .*does not appear to be a git"),
    ):
        mirror.fetch()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (UNREACHABLE, "https://***@127.0.0.1:9/x.git"),
        (f"https://{SECRET}@127.0.0.1:9/x.git", "https://***@127.0.0.1:9/x.git"),  # a token
        (f"https://user:{SPLIT}@127.0.0.1:9/x.git", "https://***@127.0.0.1:9/x.git"),
    ],
)
def test_an_unreachable_remote_fails_without_showing_credentials(
    url: str, shown: str, cache: Path
) -> None:
    mirror = Mirror(url, "main", cache)
    assert SECRET not in repr(mirror)
    assert repr(mirror).startswith(f"Mirror({shown!r}, branch='main'")
    started = time.monotonic()
    with pytest.raises(SourceError) as raised:
        mirror.fetch()
    assert time.monotonic() - started < 5  # refused, not prompted for a password
    error = raised.value
    assert str(error).startswith(f"cannot fetch {shown}: ")
    assert "127.0.0.1" in str(error)
    for text in (str(error), repr(error), repr(mirror)):
        for secret in (SECRET, SPLIT, "s3c@r3t"):
            assert secret not in text
    # nothing chained to it carries git's command or raw output
    assert error.__context__ is None
    assert error.__cause__ is None
    # and the credentials were never written into the cache
    for file in mirror.path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes()
    mirror.close()


class Refuse(BaseHTTPRequestHandler):
    """An https git server that wants credentials and accepts none; it notes what it got."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="fleet"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the assertions."""


@pytest.fixture
def https_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[str]]]:
    """`https://127.0.0.1:<port>` with a certificate git trusts, and the Authorization headers
    it received."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv("GIT_SSL_CAINFO", str(cert_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    seen: list[str] = []
    handler = type("Handler", (Refuse,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    serving.join()


def test_a_missing_credential_fails_instead_of_prompting(
    https_server: tuple[str, list[str]], cache: Path
) -> None:
    host, _ = https_server
    with (
        Mirror(f"https://{host}/fleet.git", "main", cache, timeout=10) as mirror,
        pytest.raises(SourceError, match="terminal prompts disabled"),
    ):
        mirror.fetch()


def test_refused_credentials_reach_the_server_and_are_never_shown(
    https_server: tuple[str, list[str]], cache: Path
) -> None:
    host, seen = https_server
    mirror = Mirror(f"https://user:{SECRET}@{host}/fleet.git", "main", cache, timeout=10)
    with pytest.raises(
        SourceError, match=f"^cannot fetch https://\\*\\*\\*@{host}/fleet.git: "
    ) as raised:
        mirror.fetch()
    assert f"Basic {base64.b64encode(f'user:{SECRET}'.encode()).decode()}" in seen
    assert "Authentication failed" in str(raised.value)
    assert SECRET not in str(raised.value)
    assert raised.value.__context__ is None
    for file in mirror.path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes()
    mirror.close()


def test_a_rotated_token_keeps_the_same_mirror(cache: Path) -> None:
    old = Mirror("https://user:old-token@127.0.0.1:9/x.git", "main", cache)
    new = Mirror("https://user:new-token@127.0.0.1:9/x.git", "main", cache)
    assert old.path == new.path


def test_the_mirror_survives_a_restart(upstream: git.Repo, cache: Path) -> None:
    with Mirror(where(upstream), "main", cache) as mirror:
        mirror.fetch()
        git_dir = mirror.repo.git_dir
    second = commit(upstream, {"b.yaml": VOLUME})
    with Mirror(where(upstream), "main", cache) as again:
        assert again.repo.git_dir == git_dir  # opened before any fetch
        assert again.fetch() == second
    assert [p.name for p in cache.iterdir()] == [mirror.path.name]  # no leftover staging


def test_the_repo_needs_a_fetch_first(upstream: git.Repo, cache: Path) -> None:
    with pytest.raises(SourceError, match="not fetched yet"):
        _ = Mirror(where(upstream), "main", cache).repo


def test_tree_files_reads_the_fetched_commit(upstream: git.Repo, cache: Path) -> None:
    web = b"kind: Application\n"
    files = {"apps/web.yaml": web.decode(), "apps/.hedgerowignore": "/drafts\n"}
    commit(upstream, {**files, "apps/drafts/x.yaml": VOLUME, "README.md": "# fleet\n"})
    (Path(where(upstream)) / "apps" / "link.yaml").symlink_to("web.yaml")
    sha = commit(upstream, {})
    # uncommitted work upstream is not part of any commit
    (Path(where(upstream)) / "draft.yaml").write_text(VOLUME)
    with Mirror(where(upstream), "main", cache) as mirror:
        assert mirror.fetch() == sha
        assert dict(tree_files(mirror.repo, sha)) == {
            "a.yaml": VOLUME.encode(),
            "apps/drafts/x.yaml": VOLUME.encode(),  # the ignore file of apps/ is not the root's
            "apps/link.yaml": web,
            "apps/web.yaml": web,
        }
        # a folder of the repository: paths, ignore file and links are relative to it
        assert dict(tree_files(mirror.repo, sha, "apps")) == {"link.yaml": web, "web.yaml": web}
        assert dict(mirror.files(sha, "apps")) == {"link.yaml": web, "web.yaml": web}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "the repository URL is empty"),
        ("git://127.0.0.1/x.git", "unsupported URL scheme 'git'"),
        (f"http://user:{SECRET}@127.0.0.1/x.git", r"^http://\*\*\*@127.0.0.1/x.git: unsupported"),
    ],
)
def test_unsupported_urls_are_refused_at_once(url: str, message: str, cache: Path) -> None:
    with pytest.raises(SourceError, match=message) as raised:
        Mirror(url, "main", cache)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("branch", ["", "-x", "HEAD", "a..b", "a b", "x@{1}", "x.lock"])
def test_invalid_branch_names_are_refused_at_once(branch: str, cache: Path) -> None:
    with pytest.raises(SourceError, match="is not a valid branch name"):
        Mirror("/nowhere", branch, cache)


def test_scp_like_and_ssh_urls_are_kept_as_git_reads_them(cache: Path) -> None:
    assert Mirror("git@example.invalid:org/fleet.git", "main", cache).display_url == (
        "git@example.invalid:org/fleet.git"
    )
    assert Mirror(f"ssh://git:{SECRET}@example.invalid/fleet", "main", cache).display_url == (
        "ssh://git:***@example.invalid/fleet"
    )


def test_redact_hides_userinfo_in_any_text() -> None:
    text = (
        "fatal: 'https://u:p@h/x' or https://tok@h/y, ssh://git@h/z, ssh://git:pw@h/w, file:///a@b"
    )
    assert redact(text) == (
        "fatal: 'https://***@h/x' or https://***@h/y, ssh://git@h/z, ssh://git:***@h/w, file:///a@b"
    )


# --- watch_refs ---------------------------------------------------------------------------


def watch_then(git_dir: Path, act: list[str], cwd: Path) -> tuple[float | None, int]:
    """Watch `git_dir`, run the git command `act` in `cwd`, then stop: the delay until the first
    call (None if there was none within a second) and the number of calls."""

    async def scenario() -> tuple[float | None, int]:
        stop = asyncio.Event()
        seen = asyncio.Event()
        calls = 0

        def on_change() -> None:
            nonlocal calls
            calls += 1
            seen.set()

        watching = asyncio.create_task(watch_refs(git_dir, on_change, stop=stop))
        await asyncio.sleep(0.2)  # the watch is set up when the task first waits
        assert calls == 0
        git.Git(cwd).execute(act)
        done = time.monotonic()
        try:
            await asyncio.wait_for(seen.wait(), timeout=1.0)
            delay: float | None = time.monotonic() - done
        except TimeoutError:
            delay = None
        stop.set()
        await asyncio.wait_for(watching, timeout=1.0)  # returns once stop is set
        return delay, calls

    return asyncio.run(scenario())


def test_watch_refs_sees_a_commit_within_a_second(upstream: git.Repo) -> None:
    work = Path(upstream.working_dir)
    (work / "b.yaml").write_text(VOLUME)
    upstream.git.add("-A")
    delay, calls = watch_then(work, ["git", "commit", "-q", "-m", "new"], work)
    assert delay is not None
    assert delay < 1.0
    assert calls == 1  # the commit's many writes are one change


def test_watch_refs_sees_a_push_into_a_bare_repository(upstream: git.Repo, tmp_path: Path) -> None:
    bare = git.Repo.init(tmp_path / "bare.git", mkdir=True, bare=True)
    work = Path(upstream.working_dir)
    commit(upstream, {"b.yaml": VOLUME})
    delay, _ = watch_then(
        Path(bare.git_dir), ["git", "push", "-q", str(bare.git_dir), "main"], work
    )
    assert delay is not None
    assert delay < 1.0
    assert bare.commit("main").hexsha == upstream.head.commit.hexsha
    bare.close()


def test_watch_refs_ignores_objects_that_move_no_ref(upstream: git.Repo) -> None:
    work = Path(upstream.working_dir)
    (work / "loose.txt").write_text("not committed\n")
    delay, calls = watch_then(work / ".git", ["git", "hash-object", "-w", "loose.txt"], work)
    assert delay is None
    assert calls == 0


def test_watch_refs_stops_on_the_event_and_refuses_a_non_repository(tmp_path: Path) -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        stop.set()
        repo = git.Repo.init(tmp_path / "repo", mkdir=True)
        repo.close()
        await asyncio.wait_for(watch_refs(tmp_path / "repo", lambda: None, stop=stop), 1.0)
        with pytest.raises(SourceError, match="not a git repository"):
            await watch_refs(tmp_path / "plain", lambda: None, stop=stop)

    (tmp_path / "plain").mkdir()
    asyncio.run(scenario())
