"""Generate the CRDs and the editor JSON Schema from the models, so they can never drift.

Kubernetes wants structural OpenAPI v3: no `$ref`, `nullable` instead of `anyOf [.., null]`,
`enum` instead of `const`, and only name rules under `metadata`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, TypeAdapter

from reconciler import GROUP, VERSION
from reconciler.manifests.model import KINDS
from reconciler.manifests.model.fields import DNS_LABEL

SCHEMA_FILE = "hedgerow.schema.json"
_DROP = {"title", "discriminator"}


def render() -> dict[str, str]:
    """Every file of `crds/`, by name, with its exact content."""
    files = {f"{model.plural}.yaml": _crd(kind) for kind, model in KINDS.items()}
    files[SCHEMA_FILE] = _json_schema()
    return files


def write(folder: Path) -> list[str]:
    """Write the files; return the names that changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = stale(folder)
    for name, content in render().items():
        (folder / name).write_text(content, encoding="utf-8")
    return changed


def stale(folder: Path) -> list[str]:
    """Names of files missing from `folder` or different from what the models generate."""
    out = []
    for name, content in render().items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            out.append(name)
    return sorted(out)


def _json_schema() -> str:
    union = Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    adapter: TypeAdapter[Any] = TypeAdapter(union)  # type: ignore[arg-type]
    schema = adapter.json_schema(by_alias=True)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://{GROUP}/schemas/{VERSION}/hedgerow.schema.json",
        "title": "Hedgerow manifest",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _crd(kind: str) -> str:
    model = KINDS[kind]
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    root = _structural(schema, defs)
    root["properties"]["metadata"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": f"^{DNS_LABEL.pattern}$"}
        },
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{model.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": model.plural,
                "singular": kind.lower(),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }
    header = "# Generated from reconciler/model by `hedgerow crds`; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    options = node.get("anyOf", node.get("oneOf"))
    if options is not None:
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        non_null = [o for o in options if o.get("type") != "null"]
        types = {o.get("type") for o in non_null}
        if types == {"integer", "string"}:
            return {**_structural(rest, defs), "x-kubernetes-int-or-string": True}
        if len(non_null) == 1:
            inner = _structural({**non_null[0], **rest}, defs)
            if len(non_null) < len(options):
                inner["nullable"] = True
            if inner.get("default", 0) is None:
                del inner["default"]
            return inner
        # two forms (a string or a list, a name or a mapping): Kubernetes has no union of
        # types; the node keeps what it is given and `hedgerow validate` checks it
        kept: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
        if "description" in rest:
            kept["description"] = rest["description"]
        if len(non_null) < len(options):
            kept["nullable"] = True
        return kept
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "additionalProperties" and value is False):
            continue
        if key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        else:
            out[key] = _structural(value, defs)
    if (
        out.get("type") == "object"
        and not out.get("properties")
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out
