"""The `hedgerow` entry point. On a device that installed the agent alone (`pip install
hedgerow`, without the `controller` extra), it says so instead of failing on an import."""

from __future__ import annotations

import importlib.util
import sys

CONTROLLER_LIBRARIES = ("typer", "pydantic", "fastapi", "sqlalchemy")


def main() -> None:
    missing = [name for name in CONTROLLER_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        sys.stderr.write(
            f"hedgerow: the controller's libraries are not installed ({', '.join(missing)}): "
            "pip install 'hedgerow[controller]'. The agent alone runs as `hedgerow-agent`.\n"
        )
        sys.exit(2)
    from reconciler.cli.app import app

    app()
