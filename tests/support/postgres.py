"""A throwaway PostgreSQL server for tests, from Debian's binaries: real SQL, no mocks.

One server per test session (startup is the slow part), one fresh database per test. The server
listens only on 127.0.0.1 and on a socket inside its temporary folder, trusts local connections,
and is stopped by its pid file in a finaliser. PostgreSQL refuses to run as root, so under root
it runs as a system user made for it. Missing binaries fail the tests: CI installs them.

Its fixtures are registered for every test by `tests/conftest.py` (`pytest_plugins`): a test
asks for `database_url` (once per backend; the PostgreSQL one is marked `e2e`) or
`postgresql_server`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from reconciler.demo.daemons import free_port
from reconciler.store import sqlite_url

ROLE = "hedgerow"  # the superuser initdb creates; trusted, so no password anywhere
SYSTEM_USER = "hedgerow-pg"  # runs the server when the tests run as root
INSTALL_HINT = (
    "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH): "
    "install Debian's `postgresql` package (apt-get install postgresql)"
)
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def find_bindir() -> Path:
    """The newest Debian PostgreSQL, else one on PATH; fails the test run when there is none."""
    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]
    if candidates:
        return max(candidates, key=lambda path: _version(path.parent.name))
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    pytest.fail(INSTALL_HINT, pytrace=False)


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _system_user() -> str | None:
    """None when not root; else a system user for the server, created on first use."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        done = subprocess.run(
            [*command, SYSTEM_USER], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        try:  # another test process may have created it at the same moment
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            pytest.fail(
                f"running as root: could not create system user {SYSTEM_USER!r} for PostgreSQL "
                f"(which refuses to run as root): {done.stderr.strip()}",
                pytrace=False,
            )
    return SYSTEM_USER


@dataclass
class PostgresServer:
    """A running server; `url(database)` for SQLAlchemy, `create_database()` per test."""

    bindir: Path
    root: Path  # temporary folder: data/, sock/, postgres.log
    user: str | None  # system user the server runs as (under root), else the current user
    port: int = 0
    pid: int | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database with a name unique in this session."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even if a test left connections open."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self._admin(statement.format(sql.Identifier(name)))

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=ROLE, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(statement)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL tool as the server's user; output kept for the failure message."""
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def init(self) -> None:
        done = self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--auth=trust",
            f"--username={ROLE}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode != 0:
            pytest.fail(f"initdb failed:\n{done.stdout}{done.stderr}", pytrace=False)

    def start(self, port: int | None = None) -> None:
        """pg_ctl start on `port` or a free one; the server's output goes to postgres.log."""
        for _ in range(_START_ATTEMPTS):
            self.port = port or free_port()
            options = [
                "-c", "listen_addresses=127.0.0.1",
                "-p", str(self.port),
                "-k", str(self.root / "sock"),
                "-c", "fsync=off",  # a throwaway server: durability buys nothing here
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            ]  # fmt: skip
            done = self._run(
                "pg_ctl",
                "start",
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--wait",
                "--timeout=30",
                "--silent",
                "-o",
                shlex.join(options),
            )
            if done.returncode == 0:
                self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "Address already in use" not in log:
                break
        pytest.fail(
            f"PostgreSQL did not start:\n{done.stdout}{done.stderr}\n{log[-4000:]}",
            pytrace=False,
        )

    def halt(self) -> None:
        """Stop the server and keep its data, so `start(port)` brings it back: an outage."""
        done = self._run("pg_ctl", "stop", "--pgdata", str(self.data), "-m", "fast", "-w")
        if done.returncode != 0:
            pytest.fail(f"pg_ctl stop failed:\n{done.stdout}{done.stderr}", pytrace=False)

    def stop(self) -> None:
        """Stop by the pid file (fast shutdown); the recorded pid gets SIGQUIT if that fails."""
        try:
            if (self.data / "postmaster.pid").exists():
                done = self._run("pg_ctl", "stop", "--pgdata", str(self.data), "-m", "fast", "-w")
                if done.returncode != 0 and self.pid is not None:
                    _kill(self.pid)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _kill(pid: int) -> None:
    """Immediate shutdown of the postmaster we started, then wait for it to go."""
    try:
        os.kill(pid, signal.SIGQUIT)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
    except ProcessLookupError:
        pass


def start_server(request: pytest.FixtureRequest) -> PostgresServer:
    """Initialise and start a server whose stop is already registered, even if start fails."""
    return new_server(request.addfinalizer)


def new_server(on_exit: Callable[[Callable[[], None]], object]) -> PostgresServer:
    """A started server; its stop is handed to `on_exit` first (a finaliser, an ExitStack's
    callback), so it is stopped even if it fails to start. Benchmarks use it too."""
    bindir = find_bindir()
    user = _system_user()
    if user is not None and shutil.which("runuser") is None:
        pytest.fail("running as root needs `runuser` (util-linux) to start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="hedgerow-pg-"))
    server = PostgresServer(bindir, root, user)
    on_exit(server.stop)
    (root / "sock").mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, root / "sock"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    server.init()
    server.start()
    return server


@pytest.fixture(scope="session")
def postgresql_server(request: pytest.FixtureRequest) -> PostgresServer:
    """One PostgreSQL server for the whole session, stopped at its end."""
    return start_server(request)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a fresh, empty database (PostgreSQL starts once, on first use)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
