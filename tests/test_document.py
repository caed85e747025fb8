"""A device's document built from shared parts is, byte for byte, the canonical encoding of
the document built whole: the ETag a device holds never depends on how it was built."""

from __future__ import annotations

from datetime import UTC, datetime
from textwrap import dedent
from typing import NoReturn

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import document
from reconciler.core.desired import desired_fleet
from reconciler.core.document import (
    Applied,
    Projection,
    canonical_json,
    desired_document,
    pull_credentials,
)
from reconciler.manifests.credentials import DEFAULT_RULES, CreationRule, render_credential
from reconciler.manifests.validate import validate_files
from reconciler.secrets.secret import Secret
from tests.support.leaks import PLAINTEXT_SECRETS
from tests.support.properties import examples
from tests.support.repos import BASE

IDENTITY = pyrage.x25519.Identity.generate()
PASSWORD = PLAINTEXT_SECRETS[0]


def _credential() -> str:
    rule = CreationRule((str(IDENTITY.to_public()),), DEFAULT_RULES, "test")
    return render_credential(
        "robot",
        Secret("robot"),
        Secret(PASSWORD),
        "registry.example:5000",
        rule,
        now=datetime.now(UTC),
        file="credential.yaml",
    )


def _release(version: str, credentialed: bool) -> str:
    name = version.replace(".", "-")
    credential = "\n      imageCredential: robot" if credentialed else ""
    return f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: web-{name}}}
spec:
  application: web
  version: "{version}"
  containers:
    - name: server
      image: registry.example:5000/web/server:{version}{credential}
      env: {{NOTE: "quotes \\" and unicode é and <html>"}}
      networks: [front]
      volumes: [{{volume: data, target: /data}}]
    - name: sidecar
      image: busybox:1.36
      dependsOn: [server]
"""


def applied(selector: bool, state: str, credentialed: bool, *more: str) -> Applied:
    files = {name: text for name, text in BASE.items() if name != "release.yaml"}
    files.update((f"more-{index}.yaml", text) for index, text in enumerate(more))
    files["release.yaml"] = _release("1.0.0", credentialed)
    files["credential.yaml"] = _credential()
    target = "selector: {matchLabels: {site: lyon}}" if selector else "device: pi-1"
    files["deployment.yaml"] = (
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Deployment\nmetadata: {name: web-lyon}\n"
        f'spec: {{application: web, release: "1.0.0", {target}, state: {state}}}\n'
    )
    report = validate_files(
        [(path, dedent(text).encode()) for path, text in files.items()], [IDENTITY]
    )
    assert report.valid, [p.render() for p in report.errors]
    return Applied("a" * 40, report, desired_fleet(report.catalog))


@settings(max_examples=examples(40), deadline=None)
@given(
    selector=st.booleans(),
    state=st.sampled_from(["Running", "Stopped"]),
    credentialed=st.booleans(),
    holds_image=st.booleans(),
    revision=st.text(min_size=1, max_size=40),
)
def test_a_document_from_shared_parts_is_the_canonical_encoding(
    selector: bool, state: str, credentialed: bool, holds_image: bool, revision: str
) -> None:
    revision_in_force = applied(selector, state, credentialed)
    projection = Projection(revision_in_force)
    present = {"registry.example:5000/web/server:1.0.0"} if holds_image else set()
    for device in ("pi-1", "pi-2"):
        whole = desired_document(revision_in_force, device, present, revision)
        assert projection.body(device, present, revision) == canonical_json(whole)
        stored = projection.stored(device, revision)
        assert stored.credential_images == tuple(
            sorted(pull_credentials(revision_in_force, device))
        )
        assert PASSWORD.encode() not in stored.body


def test_parts_are_shared_across_devices_and_carried_across_revisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pi2 = (  # a deployment of its own, of the same release
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Deployment\nmetadata: {name: web-pi-2}\n"
        'spec: {application: web, release: "1.0.0", device: pi-2, state: Running}\n'
    )
    first = Projection(applied(True, "Running", False, pi2))
    one = first.part(first.applied.fleet["pi-1"]["web"])
    other = first.part(first.applied.fleet["pi-2"]["web"])
    assert b'"deployment":"web-lyon"' in one and b'"deployment":"web-pi-2"' in other
    assert one.replace(b"web-lyon", b"web-pi-2") == other
    assert len(first) == 1  # encoded once, for every deployment of its release
    following = first.carry(applied(True, "Running", False))
    stopped = first.carry(applied(True, "Stopped", False))
    assert stopped.part(stopped.applied.fleet["pi-1"]["web"]) != one
    monkeypatch.setattr(document, "wire_deployment", _never)
    assert following.part(following.applied.fleet["pi-1"]["web"]) == one  # immutable release


def _never(*_: object) -> NoReturn:
    raise AssertionError("encoded again")
