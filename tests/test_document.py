"""A device's document built from shared parts is, byte for byte, the canonical encoding of
the document built whole: the ETag a device holds never depends on how it was built."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from textwrap import dedent

import pyrage
from hypothesis import given, settings
from hypothesis import strategies as st

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


def applied(selector: bool, state: str, credentialed: bool) -> Applied:
    files = {name: text for name, text in BASE.items() if name != "release.yaml"}
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


def test_parts_are_shared_across_devices_and_carried_across_revisions() -> None:
    first = Projection(applied(True, "Running", False))
    one = first.shared(first.applied.fleet["pi-1"]["web"])
    web = first.applied.fleet["pi-1"]["web"]
    assert first.shared(web) is one  # encoded once
    other = dataclasses.replace(web, deployment="web-paris")  # the same release by another name
    assert first.shared(other) is one
    assert first.part(other) == first.part(web).replace(b'"web-lyon"', b'"web-paris"')
    following = first.carry(applied(True, "Running", False))
    assert following.shared(following.applied.fleet["pi-1"]["web"]) is one  # immutable release
    stopped = first.carry(applied(True, "Stopped", False))
    assert stopped.shared(stopped.applied.fleet["pi-1"]["web"]) != one
