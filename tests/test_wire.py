"""The wire contract stands alone and keeps registry secrets out of reprs."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
from rich.pretty import pretty_repr

from reconciler.wire import DesiredDocument, RegistryAuth, StatusReport


def test_the_agent_side_imports_nothing_else_of_reconciler() -> None:
    code = "import reconciler.wire, sys; print(sorted(m for m in sys.modules if 'reconciler' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == ["reconciler", "reconciler.wire"]


def test_documents_round_trip_in_camel_case() -> None:
    auth = RegistryAuth(image="r:5000/a:1", serveraddress="r:5000", username="u", password="pw")
    document = DesiredDocument(device="pi-1", revision="abc", deployments=[], registry_auth=[auth])
    data = msgspec.to_builtins(document)
    assert data["registryAuth"][0]["serveraddress"] == "r:5000"
    assert msgspec.convert(data, DesiredDocument) == document
    assert "pw" not in repr(auth) and "pw" not in str(auth) and "pw" not in repr(document)
    assert "pw" not in pretty_repr(document)  # rich uses msgspec's __rich_repr__, not __repr__
    report = msgspec.convert(
        {"device": "pi-1", "releases": [{"application": "a", "release": "1.0.0",
         "deployment": "d", "running": True, "complete": True,
         "containers": [{"name": "c", "state": "running", "imagePresent": True}]}]},
        StatusReport,
    )  # fmt: skip
    assert report.releases[0].containers[0].image_present


def test_the_agent_imports_neither_pydantic_nor_the_controllers_libraries() -> None:
    """The agent stays light: pydantic cost the idle agent ~10 MiB on top of the docker SDK."""
    code = (
        "import agent.main, agent.poll, agent.engine, agent.converge, agent.client, agent.state;"
        " import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('pydantic', 'pydantic_core', 'fastapi', 'sqlalchemy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
