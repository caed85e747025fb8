"""One exception tree, and one error body on every HTTP error."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import agent
import reconciler
from reconciler.controller.controller import Controller
from reconciler.controller.runner import Runner
from reconciler.errors import HedgerowError
from reconciler.secrets import tokens
from reconciler.server.app import create_app, openapi_document
from reconciler.store import Store

OPERATOR = "hdr_operator-token-for-error-tests"


def exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (reconciler, agent):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__") or ".migrations" in info.name:
                continue
            module = importlib.import_module(info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == info.name:
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_exception_of_ours_is_a_hedgerow_error() -> None:
    classes = exception_classes()
    assert len(classes) >= 12  # the walk finds them: sops, source, queue, agent, demo, ...
    assert [c.__name__ for c in classes if not issubclass(c, HedgerowError)] == []


class _Nothing:
    def fetch(self) -> str:
        raise AssertionError("not fetched in this test")

    def files(self, sha: str) -> Any:
        return []


@pytest.fixture
def client(tmp_path: Path) -> Any:
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        runner = Runner(Controller(_Nothing(), store, identities=[], fingerprint_key=b"k"))
        app = create_app(runner, webhook_secret=b"s", operator_token=OPERATOR)
        yield TestClient(app, raise_server_exceptions=False)


def is_error_body(response: Any) -> bool:
    body = response.json()
    return set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"] != ""


def test_every_error_has_the_one_body(client: TestClient) -> None:
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    answers = {
        "no token": client.get("/v1/status"),
        "bad operator token": client.get("/v1/status", headers={"Authorization": "Bearer x"}),
        "validation (FastAPI's own 422)": client.get("/v1/events?limit=0", headers=operator),
        "validation of a type": client.get("/v1/events?after=x", headers=operator),
        "unknown route": client.get("/v1/nothing"),
        "wrong method": client.delete("/healthz"),
        "unsigned webhook": client.post("/v1/hooks/git", content=b"{}"),
        "device without token": client.get("/v1/devices/pi-1/desired"),
        "report without token": client.put("/v1/devices/pi-1/status", content=b"{}"),
    }
    codes = {name: response.status_code for name, response in answers.items()}
    assert codes == {
        "no token": 401,
        "bad operator token": 401,
        "validation (FastAPI's own 422)": 422,
        "validation of a type": 422,
        "unknown route": 404,
        "wrong method": 405,
        "unsigned webhook": 401,
        "device without token": 401,
        "report without token": 401,
    }
    assert [name for name, response in answers.items() if not is_error_body(response)] == []
    assert "query.limit" in answers["validation (FastAPI's own 422)"].json()["detail"]


def test_an_unexpected_failure_is_a_500_with_the_one_body(tmp_path: Path) -> None:
    """A bug in a route (here: the queue's depth fails) is a 500 with the one error body, not
    Starlette's plain text or a traceback."""

    class Broken(Runner):
        def queue_depth(self) -> int:
            raise RuntimeError("a bug with a detail that stays in the log")

    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        runner = Broken(Controller(_Nothing(), store, identities=[], fingerprint_key=b"k"))
        app = create_app(runner, webhook_secret=None, operator_token=OPERATOR)
        response = TestClient(app, raise_server_exceptions=False).get("/metrics")
    assert response.status_code == 500 and is_error_body(response)
    assert "Traceback" not in response.text and "detail that stays" not in response.text


def test_a_store_that_does_not_answer_is_a_503_with_retry_after(tmp_path: Path) -> None:
    """A database that does not answer (here: never migrated, so every query fails) is a 503
    the client retries, with the one error body."""
    from sqlalchemy import create_engine

    store = Store(create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}"))
    runner = Runner(Controller(_Nothing(), store, identities=[], fingerprint_key=b"k"))
    app = create_app(runner, webhook_secret=None, operator_token=OPERATOR)
    response = TestClient(app, raise_server_exceptions=False).get(
        "/v1/status", headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert response.status_code == 503 and is_error_body(response)
    assert response.headers["retry-after"] == "5"


def test_the_openapi_document_describes_the_one_error_body() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorBody" in schemas
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if int(code) >= 400 and path != "/readyz":  # its 503 is the readiness report
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method)


def test_a_failure_in_a_poll_ahead_of_the_middlewares_is_the_same_500(tmp_path: Path) -> None:
    """The poll of a document skips the middleware stack (`app.HedgerowApp`): a bug there is
    still the one logged 500, and a GET with a body still meets the body cap (413)."""

    class Broken(Runner):
        def document_key(self, device: str) -> Any:
            raise RuntimeError("a bug with a detail that stays in the log")

    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        store.put_token("pi-1", tokens.hash_token("hdr_pi-1"), datetime.now(UTC))
        runner = Broken(Controller(_Nothing(), store, identities=[], fingerprint_key=b"k"))
        app = create_app(runner, webhook_secret=None, operator_token=OPERATOR)
        client = TestClient(app, raise_server_exceptions=False)
        auth = {"Authorization": "Bearer hdr_pi-1"}
        response = client.get("/v1/devices/pi-1/desired?wait=1", headers=auth)
        large = client.request(
            "GET", "/v1/devices/pi-1/desired", headers=auth, content=b"x" * (65 * 1024)
        )
    assert response.status_code == 500 and is_error_body(response)
    assert "Traceback" not in response.text and "detail that stays" not in response.text
    assert large.status_code == 413 and is_error_body(large)
