"""Credentials that sops encrypted whole, with no `.sops.yaml` rule: kind, metadata and
apiVersion are encrypted too. Flux decrypts such files; with a key Hedgerow does too and checks
the decrypted document as an ImageCredential, without a key it says so once, at the file.

Each test seals the credential twice: with Hedgerow's codec and no rule (as sops does; quick)
and with the real `sops --encrypt --age` and no config (e2e).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.manifests.validate import Report, validate_tree
from reconciler.secrets.sops import Rules, encrypt, is_encrypted_value
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.repos import BASE, write_tree
from tests.support.sops import KEY1, KEY2, NOW, STRANGER, sops_encrypt

PASSWORD, OTHER_SECRET, *_ = PLAINTEXT_SECRETS
FILE = "credentials/registry.yaml"
CREDENTIAL = f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: ImageCredential
metadata:
  name: registry
  labels: {{team: edge}}
spec:
  registry: registry.example:5000
  username: robot
  password: {PASSWORD}
"""
IMAGE = "image: registry.example:5000/web/server:1.0.0\n"
RELEASE = dedent(BASE["release.yaml"]).replace(IMAGE, IMAGE + "      imageCredential: registry\n")

Seal = Callable[[str], str]


def _hedgerow(plain: str, tmp: Path) -> str:
    return encrypt(plain, [KEY1.recipient, KEY2.recipient], Rules(), now=NOW, file=FILE)


def _sops(plain: str, tmp: Path) -> str:
    return sops_encrypt(plain, None, tmp, [KEY1.recipient, KEY2.recipient])


@pytest.fixture(
    params=[_hedgerow, pytest.param(_sops, marks=pytest.mark.e2e)], ids=["hedgerow", "sops"]
)
def seal(request: pytest.FixtureRequest, tmp_path: Path) -> Seal:
    """Encrypt a whole file, every value, as sops does when no creation rule applies."""
    sealer: Callable[[str, Path], str] = request.param
    work = tmp_path / "sops"
    work.mkdir()

    def run(plain: str) -> str:
        sealed = sealer(plain, work)
        kind = next(line for line in sealed.splitlines() if line.startswith("kind:"))
        assert is_encrypted_value(kind.removeprefix("kind: "))  # encrypted whole
        assert PASSWORD not in sealed
        return sealed

    return run


def _repo(tmp_path: Path, credential: str, release: str = RELEASE) -> Path:
    return write_tree(tmp_path / "repo", {**BASE, "release.yaml": release, FILE: credential})


def _validate(root: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`hedgerow validate -o json`, with no key but those given."""
    for name in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(root.parent / "home"))
    result = CliRunner().invoke(app, ["validate", str(root), "-o", "json", *args])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)


def _line(text: str, needle: str) -> int:
    """1-based line of the first line of `text` containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _no_plaintext(report: Report) -> None:
    for text in (repr(report), *map(repr, report.problems)):
        assert PASSWORD not in text and OTHER_SECRET not in text
    for entry in report.catalog.credentials.values():
        assert PASSWORD not in repr(entry.document.data), "the secrets stay encrypted"


def test_with_a_key_it_is_decrypted_and_validated(seal: Seal, tmp_path: Path) -> None:
    root = _repo(tmp_path, seal(CREDENTIAL))
    report = validate_tree(root, [KEY2.identity])
    assert report.problems == []
    credential = report.credentials["registry"]
    assert (credential.name, credential.registry) == ("registry", "registry.example:5000")
    assert credential.username.reveal() == "robot" and credential.password.reveal() == PASSWORD
    entry = report.catalog.credentials["registry"]
    assert entry.manifest.metadata.labels == {"team": "edge"}
    assert is_encrypted_value(entry.manifest.spec.password)
    _no_plaintext(report)


def test_the_command_accepts_it_with_a_key(
    seal: Seal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path, seal(CREDENTIAL))
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{KEY1.secret}\n")
    result = _validate(root, "--age-key-file", str(key_file), monkeypatch=monkeypatch)
    assert result["valid"] is True and result["errors"] == result["warnings"] == []


def test_without_a_key_one_error_at_the_file(
    seal: Seal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not also "ImageCredential 'registry' is not defined" at the release: its name is
    encrypted, so the reference may well be to it."""
    root = _repo(tmp_path, seal(CREDENTIAL))
    result = _validate(root, monkeypatch=monkeypatch)
    assert result["valid"] is False and result["warnings"] == []
    (error,) = result["errors"]
    assert (error["file"], error["line"], error["kind"], error["name"]) == (FILE, 1, None, None)
    assert error["message"].startswith("encrypted whole by sops (kind, metadata and apiVersion")
    assert "no age key found" in error["message"] and "ENC[" not in error["message"]
    no_keys: tuple[list[Any] | None, ...] = (None, [])
    for identities in no_keys:
        assert [p.message for p in validate_tree(root, identities).problems] == [error["message"]]


def test_with_another_key_one_error_naming_the_recipients(seal: Seal, tmp_path: Path) -> None:
    root = _repo(tmp_path, seal(CREDENTIAL))
    (problem,) = validate_tree(root, [STRANGER.identity]).problems
    assert (problem.file, problem.line) == (FILE, 1)
    assert "cannot decrypt: no age identity matches" in problem.message
    assert KEY1.recipient in problem.message and KEY2.recipient in problem.message


def test_tampering_is_an_error(seal: Seal, tmp_path: Path) -> None:
    sealed = seal(CREDENTIAL)
    kind = next(line for line in sealed.splitlines() if line.startswith("kind:"))
    api = next(line for line in sealed.splitlines() if line.startswith("apiVersion:"))
    swapped = sealed.replace(kind, "kind:" + api.removeprefix("apiVersion:"))
    (problem,) = validate_tree(_repo(tmp_path, swapped), [KEY1.identity]).problems
    assert problem.file == FILE and "cannot decrypt" in problem.message


def test_the_decrypted_document_is_checked_as_an_image_credential(
    seal: Seal, tmp_path: Path
) -> None:
    """Findings point at the lines of the encrypted file (sops keeps the keys) and never show a
    value that a credential keeps encrypted, even one under an unknown field."""
    broken = (
        CREDENTIAL.replace("name: registry", "name: Registry_1")
        .replace(f"  password: {PASSWORD}\n", f"  passwrod: {PASSWORD}\n")
        .replace("  username: robot\n", f"  username: robot\n  token: {OTHER_SECRET}\n")
    )
    sealed = seal(broken)
    report = validate_tree(_repo(tmp_path, sealed, release=BASE["release.yaml"]), [KEY1.identity])
    found = {(p.line, p.field): p.message for p in report.problems}
    assert {p.file for p in report.problems} == {FILE}
    assert set(found) == {
        (_line(sealed, "name:"), "metadata.name"),
        (_line(sealed, "token:"), "spec.token"),
        (_line(sealed, "passwrod:"), "spec.passwrod"),
        (_line(sealed, "registry:"), "spec.password"),  # missing: where spec starts
    }, found
    assert found[(_line(sealed, "passwrod:"), "spec.passwrod")].startswith(
        "unknown field 'passwrod' (did you mean 'password'?)"
    )
    assert found[(_line(sealed, "registry:"), "spec.password")] == (
        "required field password is missing"
    )
    assert "'Registry_1'" in found[(_line(sealed, "name:"), "metadata.name")]
    _no_plaintext(report)


def test_only_a_credential_may_be_encrypted_whole(seal: Seal, tmp_path: Path) -> None:
    root = _repo(tmp_path, seal(dedent(BASE["app.yaml"]).replace("name: web", "name: api")))
    (problem,) = validate_tree(root, [KEY1.identity]).problems
    assert problem.message.endswith(
        "only an ImageCredential may be; this document's kind is Application"
    )


def test_a_credential_encrypted_whole_is_alone_in_its_file(seal: Seal, tmp_path: Path) -> None:
    sealed = seal(CREDENTIAL)
    root = _repo(tmp_path, sealed + "---\n" + dedent(BASE["app.yaml"]).replace("web", "api"))
    (problem,) = validate_tree(root, [KEY1.identity]).problems
    assert problem.message.endswith(
        "sops encrypts whole files: keep each ImageCredential in a file of its own"
    )
