"""Device tokens: issued once, stored as hashes, checked in constant time, revocable by CLI."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.secrets import tokens
from reconciler.store import Store, sqlite_url

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(sqlite_url(tmp_path)) as opened:
        yield opened


def test_tokens_are_prefixed_random_and_url_safe() -> None:
    issued = {tokens.issue() for _ in range(100)}
    assert len(issued) == 100
    for token in issued:
        assert re.fullmatch(r"hdr_[A-Za-z0-9_-]{43}", token), token  # 32 bytes of base64url


def test_a_token_is_stored_as_its_sha256_and_checked_against_it() -> None:
    token = tokens.issue()
    stored = tokens.hash_token(token)
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert tokens.check(token, stored)
    assert not tokens.check(token + "x", stored)
    assert not tokens.check(tokens.issue(), stored)
    assert not tokens.check(token, "")


def test_the_owner_of_a_hash_is_found_for_403s(store: Store) -> None:
    token = tokens.issue()
    store.put_token("pi-1", tokens.hash_token(token), T0)
    assert store.token_owner(tokens.hash_token(token)) == "pi-1"
    assert store.token_owner(tokens.hash_token(tokens.issue())) is None


def test_device_token_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["device", "token", "pi-1", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    token = first.stdout.strip()
    assert token.startswith("hdr_") and first.stdout == token + "\n"
    assert "not shown again" in first.stderr
    with Store.open(sqlite_url(tmp_path)) as store:
        assert store.token_hash("pi-1") == tokens.hash_token(token)
    assert token.encode() not in (tmp_path / "hedgerow.db").read_bytes()

    second = runner.invoke(app, ["device", "token", "pi-1", "--data-dir", str(tmp_path)])
    rotated = second.stdout.strip()
    assert rotated != token
    with Store.open(sqlite_url(tmp_path)) as store:
        assert store.token_hash("pi-1") == tokens.hash_token(rotated)  # the old one is gone


def test_device_token_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["device", "token", "pi-1", "--data-dir", str(tmp_path)])
    revoked = runner.invoke(
        app, ["device", "token", "pi-1", "--revoke", "--data-dir", str(tmp_path)]
    )
    assert revoked.exit_code == 0 and revoked.stdout == ""
    with Store.open(sqlite_url(tmp_path)) as store:
        assert store.token_hash("pi-1") is None
    again = runner.invoke(app, ["device", "token", "pi-1", "--revoke", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1 and "has no token" in again.stderr
    db = f"sqlite:///{tmp_path / 'other.db'}"
    issued = runner.invoke(app, ["device", "token", "pi-2", "--db", db])
    assert issued.exit_code == 0
    with Store.open(db) as store:
        assert store.token_hash("pi-2") == tokens.hash_token(issued.stdout.strip())


def test_device_token_refuses_a_name_that_is_no_device_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["device", "token", "Not_A_Name", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "error:" in result.stderr


def test_a_token_says_which_store_it_went_to_and_warns_of_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token issued into a store no controller reads would be lost silently: the command
    names the store, warns when it made it, and finds it as the controller does."""
    runner = CliRunner()
    first = runner.invoke(app, ["device", "token", "pi-1", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0
    where = str(tmp_path / "hedgerow.db")
    assert f"made a new store at {where}" in first.stderr and f"store: {where}" in first.stderr
    second = runner.invoke(app, ["device", "token", "pi-2", "--data-dir", str(tmp_path)])
    assert "made a new store" not in second.stderr and f"store: {where}" in second.stderr

    monkeypatch.setenv("HEDGEROW_DATA_DIR", str(tmp_path))  # as the controller reads it
    monkeypatch.chdir(tmp_path.parent)
    third = runner.invoke(app, ["device", "token", "pi-3"])
    assert third.exit_code == 0 and f"store: {where}" in third.stderr
    with Store.open(sqlite_url(tmp_path)) as store:
        assert store.token_hash("pi-3") == tokens.hash_token(third.stdout.strip())

    hidden = runner.invoke(
        app, ["device", "token", "pi-4", "--db", f"sqlite:///{tmp_path / 'x.db'}"]
    )
    assert hidden.exit_code == 0 and "store: sqlite:///" in hidden.stderr
