"""The OpenAPI document as outside tools see it: valid for openapi-spec-validator, and the same
whatever version of a library generated it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import prometheus_client
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import reconciler.server.app
from reconciler.cli.app import app as cli
from reconciler.server import metrics
from reconciler.server.app import openapi_document, render_openapi
from reconciler.server.backend import Backend
from reconciler.server.openapi import invalid
from tests.support.repos import ROOT

DESIRED = "/v1/devices/{name}/desired"
OLD_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # prometheus-client 0.20, 0.21


def test_the_generated_document_is_valid_openapi() -> None:
    document = openapi_document()
    assert invalid(document) is None
    etag = document["paths"][DESIRED]["get"]["responses"]["200"]["headers"]["ETag"]
    assert etag["schema"] == {"type": "string"}


def test_the_check_fails_on_an_invalid_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A committed file equal to what the code generates is not enough: it must be OpenAPI."""
    broken = copy.deepcopy(openapi_document())
    del broken["paths"][DESIRED]["get"]["responses"]["200"]["headers"]["ETag"]["schema"]

    def generate() -> dict[str, Any]:
        return copy.deepcopy(broken)

    monkeypatch.setattr(reconciler.server.app, "openapi_document", generate)
    committed = tmp_path / "openapi.json"
    committed.write_text(render_openapi(), encoding="utf-8")  # current, but invalid
    check = CliRunner().invoke(cli, ["openapi", "--check", "--output", str(committed)])
    assert check.exit_code == 1
    assert "invalid" in check.stderr and "ETag" in check.stderr
    assert "'schema' is a required property" in check.stderr
    written = tmp_path / "written.json"
    refused = CliRunner().invoke(cli, ["openapi", "--output", str(written)])
    assert refused.exit_code == 1 and not written.exists()


def test_the_check_passes_on_the_committed_document() -> None:
    committed = ROOT / "docs" / "openapi.json"
    assert invalid(json.loads(committed.read_text(encoding="utf-8"))) is None
    check = CliRunner().invoke(cli, ["openapi", "--check", "--output", str(committed)])
    assert check.exit_code == 0, check.output


def _metrics_app() -> FastAPI:
    class Statuses:
        def condition_counts(self) -> dict[tuple[str, str], int]:
            return {}

        def rollouts(self) -> dict[str, Any]:
            return {}

    class Idle:
        store = Statuses()

        def on_reconciled(self, observer: Callable[[float], None]) -> None:
            pass

        def queue_depth(self) -> int:
            return 0

    app = FastAPI()
    metrics.install(app, cast(Backend, Idle()), metrics.Metrics())
    return app


@pytest.mark.parametrize("content_type", [OLD_CONTENT_TYPE, prometheus_client.CONTENT_TYPE_LATEST])
def test_the_document_does_not_name_the_installed_metrics_format(
    content_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus-client 0.20 and 0.21 serve text format 0.0.4, later versions 1.0.0: the
    committed document says `text/plain` and holds for all, the served type follows the library."""
    monkeypatch.setattr(metrics, "CONTENT_TYPE_LATEST", content_type)
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert render_openapi() == committed
    content = json.loads(committed)["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    response = TestClient(_metrics_app()).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert "# TYPE hedgerow_queue_depth gauge" in response.text
