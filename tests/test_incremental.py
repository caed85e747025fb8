"""An incremental validation gives exactly the full validation's report after every commit of a
history, reading only the files the commit changed: adds, removals and edits, references broken
and mended, duplicate names, bad YAML, credentials changed, sealed or undecryptable, and age keys
given, taken away or changed between commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from textwrap import dedent

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.manifests.check import Checked
from reconciler.manifests.credentials import (
    DEFAULT_RULES,
    CreationRule,
    Credential,
    decrypt_credential,
    render_credential,
)
from reconciler.manifests.incremental import Keyed, Validation, known, validate_changes
from reconciler.manifests.model import ImageCredential
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import validate_files
from reconciler.secrets.secret import Secret
from reconciler.secrets.sops import Identity, Rules, encrypt
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.properties import examples
from tests.support.repos import BASE, RELEASE_110
from tests.support.sops import KEY1, STRANGER

PASSWORD, OTHER_PASSWORD, *_ = PLAINTEXT_SECRETS
NOW = datetime(2026, 1, 2, tzinfo=UTC)
IMAGE = "image: registry.example:5000/web/server:1.0.0\n"


def _base(name: str, old: str = "", new: str = "") -> str:
    return dedent(BASE[name]).replace(old, new)


def _credential(password: str, name: str = "robot", recipient: str = KEY1.recipient) -> str:
    rule = CreationRule((recipient,), DEFAULT_RULES, "test")
    return render_credential(
        name,
        Secret("robot"),
        Secret(password),
        "registry.example:5000",
        rule,
        now=NOW,
        file="credential.yaml",
    )


PLAIN_CREDENTIAL = f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: ImageCredential
metadata: {{name: robot}}
spec: {{registry: "registry.example:5000", username: robot, password: {PASSWORD}}}
"""
SEALED = encrypt(PLAIN_CREDENTIAL, [KEY1.recipient], Rules(), now=NOW, file="sealed.yaml")
TOO_BIG = "file is 2000000 bytes; manifests are limited to 1 MiB"

# What each path may hold; None is "absent". The first is the starting one, where hypothesis
# shrinks to: BASE for its files, nothing for the others.
CONTENTS: dict[str, list[str | bytes | Problem | None]] = {
    "app.yaml": [_base("app.yaml"), None, _base("app.yaml", "name: web", "name: wbe")],
    "release.yaml": [
        _base("release.yaml"),
        _base("release.yaml", IMAGE, IMAGE + "      imageCredential: robot\n"),
        _base("release.yaml", "[front]", "[back]"),
        _base("release.yaml", "application: web", "application: wbe"),
        _base("release.yaml", "image:", "imagee:"),
        None,
    ],
    "release-110.yaml": [
        None,
        dedent(RELEASE_110),
        dedent(RELEASE_110).replace('"1.1.0"', '"v1.1.0"'),
        dedent(RELEASE_110).replace('"1.1.0"', '"1.0.0"'),  # a version released twice
    ],
    "deployment.yaml": [
        _base("deployment.yaml"),
        _base("deployment.yaml", '"1.0.0"', '"1.1.0"'),
        _base("deployment.yaml", "selector: {matchLabels: {site: lyon}}", "device: pi-9"),
        _base("deployment.yaml", "site: lyon", "site: paris"),  # a warning
        None,
    ],
    "devices.yaml": [
        _base("devices.yaml"),
        _base("devices.yaml", "{systemModel: rpi4}", "{systemModel: rpi3}"),
        _base("devices.yaml", "site: nantes", "site: lyon"),
    ],
    "resources.yaml": [
        _base("resources.yaml"),
        _base("resources.yaml", "metadata: {name: front}", "metadata: {name: front}\nspec: {a, a}"),
        _base("resources.yaml").split("---\n")[0],
    ],
    "copy.yaml": [
        None,
        _base("app.yaml"),
        _base("devices.yaml"),
        _base("deployment.yaml", "name: web-lyon", "name: web-again"),
    ],
    "broken.yaml": [
        None,
        "kind: [\n",
        b"\xff\xfe\x00",
        "apiVersion: hedgerow.dev/v1alpha1\n\tkind: Volume\n",
        "- a list\n",
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Gadget\nmetadata: {name: g}\n",
        "---\n# nothing\n---\n",
        Problem("broken.yaml", 0, 0, None, None, None, TOO_BIG),
        SEALED,
    ],
    "credential.yaml": [
        None,
        _credential(PASSWORD),
        _credential(OTHER_PASSWORD),
        _credential(PASSWORD, recipient=STRANGER.recipient),  # cannot be decrypted
        _credential(PASSWORD) + "---\n" + _base("app.yaml", "web", "other"),
        PLAIN_CREDENTIAL,
    ],
    "more/credential.yaml": [None, _credential(OTHER_PASSWORD), _credential(PASSWORD, "mirror")],
}
PATHS = sorted(CONTENTS)
# Age keys as the controller holds them: the same objects from one commit to the next.
IDENTITIES: tuple[list[Identity] | None, ...] = (None, [], [KEY1.identity])

Files = dict[str, bytes | Problem]
Commit = tuple[Files, int]


def _files(choice: dict[str, int]) -> Files:
    files: Files = {}
    for path, index in choice.items():
        content = CONTENTS[path][index % len(CONTENTS[path])]
        if content is not None:
            files[path] = content.encode() if isinstance(content, str) else content
    return files


@st.composite
def histories(draw: st.DrawFn) -> list[Commit]:
    """A repository, then commits that each set a few paths to other contents (or remove
    them); the age keys may change between commits."""
    choice = {path: draw(st.integers(0, len(CONTENTS[path]) - 1)) for path in PATHS}
    keys = draw(st.integers(0, len(IDENTITIES) - 1))
    history = [(_files(choice), keys)]
    for _ in range(draw(st.integers(1, 5))):
        edits = st.tuples(st.sampled_from(PATHS), st.integers(0, 8))
        choice.update(draw(st.lists(edits, max_size=4)))
        keys = draw(st.sampled_from([keys, keys, keys, *range(len(IDENTITIES))]))
        history.append((_files(choice), keys))
    return history


def _keyed(files: Files, read: list[str]) -> Iterator[Keyed]:
    """The files in tree order, each recording its path in `read` when read."""
    for path, content in sorted(files.items()):
        file = known(path, content)
        yield replace(file, read=partial(_reading, file, read))


def _reading(file: Keyed, read: list[str]) -> bytes | Problem:
    read.append(file.path)
    return file.read()


@settings(max_examples=examples(100), deadline=None)
@given(histories())
def test_incremental_validation_is_the_full_validation_after_every_commit(
    history: list[Commit],
) -> None:
    state: Validation | None = None
    before: Files = {}
    keys_before: int | None = None
    for files, keys in history:
        identities = IDENTITIES[keys]
        read: list[str] = []
        state = validate_changes(state, _keyed(files, read), identities)
        full = validate_files(sorted(files.items()), identities)
        assert state.report.problems == full.problems  # the same findings, in the same order
        assert state.report == full  # documents, catalog and decrypted credentials too
        changed = [p for p in sorted(files) if keys != keys_before or before.get(p) != files[p]]
        assert read == changed
        before, keys_before = files, keys


def test_an_unchanged_credential_is_not_decrypted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    decrypted: list[str] = []

    def counted(
        entry: Checked[ImageCredential], identities: Sequence[Identity]
    ) -> Credential | Problem:
        decrypted.append(entry.name)
        return decrypt_credential(entry, identities)

    monkeypatch.setattr("reconciler.manifests.incremental.decrypt_credential", counted)
    keys = [KEY1.identity]
    files = _files(dict.fromkeys(PATHS, 0) | {"credential.yaml": 1, "release.yaml": 1})
    state = validate_changes(None, _keyed(files, []), keys)
    assert decrypted == ["robot"] and state.report.valid and state.report.credentials
    files["copy.yaml"] = _base("app.yaml", "web", "other").encode()  # another file changes
    state = validate_changes(state, _keyed(files, []), keys)
    assert decrypted == ["robot"]
    assert state.report.credentials["robot"].password.reveal() == PASSWORD
    files["credential.yaml"] = _credential(OTHER_PASSWORD).encode()  # the credential changes
    state = validate_changes(state, _keyed(files, []), keys)
    assert decrypted == ["robot", "robot"]
    assert state.report.credentials["robot"].password.reveal() == OTHER_PASSWORD
    same_key = [pyrage.x25519.Identity.from_str(KEY1.secret)]  # another object: not assumed
    state = validate_changes(state, _keyed(files, []), same_key)
    assert decrypted == ["robot", "robot", "robot"]


def test_what_is_kept_shows_no_secret() -> None:
    files = _files(dict.fromkeys(PATHS, 0) | {"credential.yaml": 1, "release.yaml": 1})
    state = validate_changes(None, _keyed(files, []), [KEY1.identity])
    assert state.report.credentials["robot"].password.reveal() == PASSWORD
    shown = repr(state) + str(state)
    assert PASSWORD not in shown and str(KEY1.identity) not in shown
