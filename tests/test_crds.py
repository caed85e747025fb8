"""The CRDs and the editor schema are generated from the models and must accept real manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.manifests import crds
from reconciler.manifests.load import read_tree
from reconciler.manifests.model import KINDS
from tests.support.repos import MANIFESTS, ROOT

CRDS = ROOT / "crds"


def test_checked_in_files_match_the_models() -> None:
    assert crds.stale(CRDS) == []


def test_stale_detects_an_edit(tmp_path: Path) -> None:
    crds.write(tmp_path)
    (tmp_path / "releases.yaml").write_text("# edited\n")
    (tmp_path / "devices.yaml").unlink()
    assert crds.stale(tmp_path) == ["devices.yaml", "releases.yaml"]


def _walk(node: Any, path: str = "") -> list[tuple[str, str, Any]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((path, key, value))
            out.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for item in node:
            out.extend(_walk(item, path))
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_is_structural(kind: str) -> None:
    """Kubernetes rejects $ref, const, anyOf with null, and additionalProperties: false."""
    crd = yaml.safe_load((CRDS / f"{KINDS[kind].plural}.yaml").read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{KINDS[kind].plural}.hedgerow.dev"
    assert crd["spec"]["names"]["kind"] == kind
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, key, value in _walk(schema):
        assert key not in ("$ref", "$defs", "const", "title"), f"{path}.{key}"
        if key == "anyOf":
            assert {o.get("type") for o in value} <= {"integer", "string"}, path
        if key == "additionalProperties":
            assert isinstance(value, dict), path
    assert set(schema["properties"]["metadata"]["properties"]) == {"name"}
    assert "spec" in schema["properties"]


def test_json_schema_accepts_every_example_manifest() -> None:
    schema = json.loads((CRDS / crds.SCHEMA_FILE).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    count = 0
    for rel, content in read_tree(MANIFESTS):
        assert isinstance(content, bytes)
        for document in yaml.safe_load_all(content):
            errors = [e.message for e in validator.iter_errors(document)]
            assert errors == [], rel
            count += 1
    assert count == 22


def test_json_schema_rejects_unknown_fields_and_kinds() -> None:
    validator = jsonschema.Draft202012Validator(json.loads((CRDS / crds.SCHEMA_FILE).read_text()))
    device = {
        "apiVersion": "hedgerow.dev/v1alpha1",
        "kind": "Device",
        "metadata": {"name": "pi-1"},
        "spec": {"systemModel": "rpi4"},
    }
    assert validator.is_valid(device)
    assert not validator.is_valid({**device, "spec": {"systemModle": "rpi4"}})
    assert not validator.is_valid({**device, "kind": "Gadget"})
    assert not validator.is_valid({**device, "metadata": {"name": "Not_A_Label"}})
