"""What the controller writes is its user's alone: the data folder, the SQLite database, the
fingerprint key and device token files; and a token for a device the fleet lacks is flagged.

Every test runs under umask 000, where a file created without an explicit mode would be
world-readable (and writable): each mode below is the code's, not the environment's."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from reconciler.cli.app import app
from reconciler.controller.keys import fingerprint_key
from reconciler.secrets import tokens
from reconciler.store import DATABASE_FILE, Store, sqlite_url

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_data_folder_and_the_database_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open(sqlite_url(data)) as store:
        store.put_token("pi-1", tokens.hash_token(tokens.issue()), T0)  # writes the WAL
        assert mode(data) == 0o700
        for name in (DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm"):
            assert mode(data / name) == 0o600, name


def test_an_existing_database_is_made_private_and_its_folder_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    with Store.open(sqlite_url(shared)):
        pass
    (shared / DATABASE_FILE).chmod(0o644)  # as an older version left it
    with Store.open(sqlite_url(shared)):
        assert mode(shared / DATABASE_FILE) == 0o600
    assert mode(shared) == 0o755  # an operator's folder (even /var/lib) is theirs to set


def test_the_fingerprint_key_is_private_and_stays_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = fingerprint_key(data)
    assert len(key) == 32 and mode(data) == 0o700
    assert mode(data / "fingerprint.key") == 0o600
    (data / "fingerprint.key").chmod(0o644)
    assert fingerprint_key(data) == key
    assert mode(data / "fingerprint.key") == 0o600


def issue(*args: str) -> Result:
    return CliRunner().invoke(app, ["device", "token", *args])


def test_a_token_file_is_private_and_the_token_is_not_printed(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "pi-1.token"
    result = issue("pi-1", "-o", str(target), "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    token = target.read_text().strip()
    assert token.startswith("hdr_") and target.read_text() == f"{token}\n"
    assert mode(target) == 0o600
    assert token not in result.output and f"wrote {target}" in result.stderr
    with Store.open(sqlite_url(data)) as store:
        assert store.token_hash("pi-1") == tokens.hash_token(token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pi-1.token"]  # no leftovers


def test_a_new_token_replaces_a_token_file_and_tightens_it(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "pi-1.token"
    target.write_text("old\n")
    target.chmod(0o644)
    result = issue("pi-1", "--output", str(target), "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert mode(target) == 0o600 and target.read_text().startswith("hdr_")


def test_a_token_file_that_cannot_be_written_issues_no_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = issue("pi-1", "-o", str(tmp_path / "missing" / "pi-1.token"), "--data-dir", str(data))
    assert result.exit_code == 2 and "cannot write" in result.stderr
    with Store.open(sqlite_url(data)) as store:
        assert store.token_hash("pi-1") is None  # the device's previous token, if any, still works


@pytest.fixture
def applied(database_url: str) -> str:
    """A store whose applied revision has devices pi-1 and pi-2 (on both backends)."""
    sha = "a" * 40
    with Store.open(database_url) as store:
        store.apply(sha, T0, changed=["pi-1", "pi-2"])
    return database_url


def test_a_token_for_a_device_of_the_applied_revision_is_issued_quietly(applied: str) -> None:
    result = issue("pi-1", "--db", applied)
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_a_token_for_a_device_the_applied_revision_lacks_is_flagged(applied: str) -> None:
    result = issue("pi-9", "--db", applied)
    assert result.exit_code == 0 and result.stdout.startswith("hdr_")
    assert "warning: pi-9 is not a device of the applied revision aaaaaaaaaaaa" in result.stderr
    assert result.stdout.strip() not in result.stderr


def test_a_token_before_any_revision_is_applied_says_so(database_url: str) -> None:
    result = issue("pi-1", "--db", database_url)
    assert result.exit_code == 0
    assert "warning: no revision is applied yet: pi-1 cannot be checked" in result.stderr
