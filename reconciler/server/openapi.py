"""The OpenAPI document: FastAPI's, with the wire Structs' schemas and one error body.

`docs/openapi.json` is generated from an app that never runs (`app.render_openapi`), and
`hedgerow openapi --check` keeps the committed file true to the code, and valid OpenAPI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from fastapi import FastAPI

from reconciler import wire

_SCHEMAS = "#/components/schemas/"
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")


def wire_ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": f"{_SCHEMAS}{kind.__name__}"}


def document(app: FastAPI) -> None:
    """Add the wire Structs' JSON Schemas to `app`'s OpenAPI components (FastAPI knows only
    pydantic models; the device routes refer to them by `wire_ref`), and document FastAPI's
    own 422s with the one error body that `reconciler.server.errors` answers."""
    _, wire_schemas = msgspec.json.schema_components(
        [wire.DesiredDocument, wire.StatusReport, wire.EnrollRequest, wire.Enrolled],
        ref_template=_SCHEMAS + "{name}",
    )
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        spec = generate()  # FastAPI's, built once and cached on the app
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        clash = {n for n in wire_schemas if n in schemas and schemas[n] != wire_schemas[n]}
        if clash:
            raise RuntimeError(f"OpenAPI schema names used twice: {sorted(clash)}")
        for name in _FASTAPI_422:
            schemas.pop(name, None)
        spec["components"]["schemas"] = dict(sorted({**schemas, **wire_schemas}.items()))
        _one_error_body(spec.get("paths", {}))
        return spec

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def _one_error_body(paths: dict[str, Any]) -> None:
    old = f"{_SCHEMAS}{_FASTAPI_422[0]}"
    for operations in paths.values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                for content in response.get("content", {}).values():
                    if content.get("schema", {}).get("$ref") == old:
                        content["schema"] = {"$ref": f"{_SCHEMAS}ErrorBody"}


def invalid(spec: Mapping[str, Any]) -> str | None:
    """Why `spec` is not a valid OpenAPI document (per openapi-spec-validator), or None.

    Generators and clients run this validator; a document that only matches itself would let
    `--check` pass on something they refuse. Imported here, not at the top: the running
    controller never needs it.
    """
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import (
        OpenAPIValidationError,
        ValidatorDetectError,
    )

    try:
        validate(spec)
    except ValidatorDetectError:
        return "no openapi version field"
    except OpenAPIValidationError as exc:
        reasons = "; or ".join(sorted({str(c.message) for c in exc.context or ()}))
        return f"{exc.json_path}: {exc.message}" + (f" ({reasons})" if reasons else "")
    return None
