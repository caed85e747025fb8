"""Application secrets on the controller's side: `hedgerow secret create` writes a Secret that
sops encrypts and Hedgerow decrypts; releases use its keys as env values or files, checked at
their line; a device's document carries the values it needs and no other, the stored body
carries none, and a Secret changed in place is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent
from typing import Any

import git
import msgspec
import pyrage
import pytest
from typer.testing import CliRunner

from reconciler import wire
from reconciler.cli.app import app
from reconciler.controller.controller import Controller
from reconciler.core.desired import desired_fleet
from reconciler.core.document import Applied, Projection, desired_document, stored_document
from reconciler.manifests.appsecrets import DEFAULT_RULES, render_secret
from reconciler.manifests.credentials import CreationRule
from reconciler.manifests.validate import Report, validate_files
from reconciler.secrets.secret import Secret
from reconciler.store import Store
from tests.support.leaks import APP_SECRET
from tests.support.repos import BASE, commit
from tests.test_controller import BranchSource

IDENTITY = pyrage.x25519.Identity.generate()
PASSWORD = APP_SECRET  # a value the suite's leak check looks for everywhere
RULE = CreationRule((str(IDENTITY.to_public()),), DEFAULT_RULES, "test")


def secret(name: str = "db", **data: str) -> str:
    values = {k: Secret(v) for k, v in (data or {"password": PASSWORD, "user": "web"}).items()}
    return render_secret(name, values, RULE, now=datetime.now(UTC), file=f"{name}.yaml")


USING = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {name: web-1-0-0}
spec:
  application: web
  version: "1.0.0"
  containers:
    - name: server
      image: registry.example:5000/web/server:1.0.0
      env:
        PLAIN: "1"
        DB_PASSWORD: {secretKeyRef: {secret: db, key: password}}
      secrets:
        - {secret: db, key: user, target: /etc/db/user, mode: 0440}
"""


def validated(files: dict[str, str], keys: list[Any] | None = None) -> Report:
    merged = {**{k: dedent(v) for k, v in BASE.items()}, **files}
    return validate_files(
        [(p, t.encode()) for p, t in merged.items()], [IDENTITY] if keys is None else keys
    )


def test_secret_create_writes_what_hedgerow_decrypts(tmp_path: Path) -> None:
    source = tmp_path / "password.txt"
    source.write_text(PASSWORD)
    out = tmp_path / "secrets" / "db.yaml"
    result = CliRunner().invoke(
        app,
        ["secret", "create", "db", "--from-file", f"password={source}",
         "--from-literal", "user=web", "--age", str(IDENTITY.to_public()), "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert PASSWORD not in text and PASSWORD not in result.output
    assert "kind: Secret" in text and "name: db" in text, "readable in review"
    report = validated({"release.yaml": USING, "secrets/db.yaml": text})
    assert report.errors == []
    assert {k: v.reveal() for k, v in report.secrets["db"].items()} == {
        "password": PASSWORD,
        "user": "web",
    }
    again = CliRunner().invoke(
        app, ["secret", "create", "db", "--from-literal", "a=b", "--age", "x", "-o", str(out)]
    )
    assert again.exit_code != 0 and "immutable" in again.output


@pytest.mark.parametrize(
    ("release", "field", "message"),
    [
        (USING.replace("key: password", "key: pasword"), "spec.containers[0].env.DB_PASSWORD"
         ".secretKeyRef", "Secret 'db' has no key 'pasword' (did you mean 'password'?)"),
        (USING.replace("secret: db, key: user", "secret: cache, key: user"),
         "spec.containers[0].secrets[0]", "Secret 'cache' is not defined"),
        (USING.replace("target: /etc/db/user", "target: etc/db/user"),
         "spec.containers[0].secrets[0].target", "must be absolute"),
    ],
)  # fmt: skip
def test_a_bad_reference_is_refused_at_its_line(release: str, field: str, message: str) -> None:
    report = validated({"release.yaml": release, "secrets/db.yaml": secret()})
    assert [(p.file, p.field) for p in report.errors] == [("release.yaml", field)]
    assert message in report.errors[0].message
    assert report.errors[0].line > 8


def test_a_plaintext_value_is_refused_without_repeating_it() -> None:
    plain = dedent(f"""\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Secret
        metadata: {{name: db}}
        spec: {{data: {{password: {PASSWORD}}}}}
        sops: {{}}
        """)
    report = validated({"secrets/db.yaml": plain})
    assert report.errors and "is not SOPS-encrypted" in report.errors[0].message
    assert PASSWORD not in report.errors[0].render()


def applied() -> Applied:
    report = validated(
        {
            "release.yaml": USING,
            "secrets/db.yaml": secret(),
            "secrets/other.yaml": secret("other", token="unused-by-pi-1"),
        }
    )
    assert report.errors == []
    return Applied("a" * 40, report, desired_fleet(report.catalog))


def test_a_document_carries_the_values_its_containers_use_and_no_other() -> None:
    revision = applied()
    document = desired_document(revision, "pi-1", set(), "r")
    assert [(s.secret, s.key, s.value) for s in document.secrets] == [
        ("db", "password", PASSWORD),
        ("db", "user", "web"),
    ]
    (server,) = document.deployments[0].containers
    assert server.env == {"PLAIN": "1"}
    assert server.secret_env == {"DB_PASSWORD": wire.SecretRef(secret="db", key="password")}
    assert server.secrets == [
        wire.SecretFile(secret="db", key="user", target="/etc/db/user", mode=0o440)
    ]
    assert PASSWORD not in repr(document), "a SecretValue's repr hides the value"
    body = Projection(revision).body("pi-1", set(), "r")
    assert body == msgspec.json.encode(msgspec.to_builtins(document), order="sorted")
    assert b"unused-by-pi-1" not in body


def test_the_stored_body_holds_no_value_and_is_never_served_as_it_is() -> None:
    revision = applied()
    for stored in (
        stored_document(revision, "pi-1", "r"),
        Projection(revision).stored("pi-1", "r"),
    ):
        assert PASSWORD.encode() not in stored.body and stored.needs_secrets
        assert not stored.serves(set()), "a restarted controller decrypts before serving it"
    assert not stored_document(revision, "pi-2", "r").needs_secrets, "pi-2 runs none of it"


def test_without_an_age_key_the_values_are_left_out_with_a_warning() -> None:
    report = validated({"release.yaml": USING, "secrets/db.yaml": secret()}, keys=[])
    assert report.errors == [] and report.secrets == {}
    assert any("not decrypted" in w.message for w in report.warnings)


def test_a_pull_request_changing_a_secret_in_place_is_flagged() -> None:
    from reconciler.core.review import review

    base = validated({"release.yaml": USING, "secrets/db.yaml": secret()})
    head = validated({"release.yaml": USING, "secrets/db.yaml": secret(password="new", user="w")})
    same = validated({"release.yaml": USING, "secrets/db.yaml": base_text(base)})
    messages = [p.message for p in review(base, head).errors]
    assert any("Secret db changed: Secrets are immutable" in m for m in messages), messages
    assert review(base, same).errors == []


def base_text(report: Report) -> str:
    return report.catalog.secrets["db"].document.text


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """On SQLite and on PostgreSQL."""
    with Store.open(database_url) as opened:
        yield opened


def test_the_controller_serves_values_stores_none_and_refuses_a_secret_changed(
    upstream: git.Repo, store: Store
) -> None:
    commit(upstream, "a secret", {"release.yaml": USING, "secrets/db.yaml": secret()})
    clock = iter(datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(60))
    ctl = Controller(
        BranchSource(Path(upstream.working_dir)),
        store,
        identities=[IDENTITY],
        fingerprint_key=b"k" * 32,
        now=lambda: next(clock),
    )
    outcome = ctl.sync()
    assert outcome is not None and outcome.applied, outcome
    good = store.applied_revision()
    body = ctl.document("pi-1")
    assert body is not None
    served = msgspec.json.decode(body, type=wire.DesiredDocument)
    assert [(s.secret, s.key) for s in served.secrets] == [("db", "password"), ("db", "user")]
    ctl.reconcile("pi-1")
    stored = store.stored_document("pi-1")
    assert stored is not None and stored.needs_secrets and PASSWORD.encode() not in stored.body

    commit(upstream, "changed in place", {"secrets/db.yaml": secret(password="other", user="w")})
    outcome = ctl.sync()
    assert outcome is not None and not outcome.applied
    assert [p.message for p in outcome.errors] == [
        "Secret db changed: Secrets are immutable; create a new Secret and switch releases to it"
    ]
    assert store.applied_revision() == good
