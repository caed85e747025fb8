"""Small repositories for tests: a minimal valid manifest set (BASE), and writing and committing
files in a temporary folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from textwrap import dedent

import git

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"

# A minimal valid repository: one of each kind but credentials; tests add or replace files.
BASE: dict[str, str] = {
    "app.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Application
        metadata: {name: web}
        spec: {description: A web server}
        """,
    "release.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Release
        metadata: {name: web-1-0-0}
        spec:
          application: web
          version: "1.0.0"
          supportedSystemModels: [rpi4]
          containers:
            - name: server
              image: registry.example:5000/web/server:1.0.0
              networks: [front]
              volumes:
                - {volume: data, target: /data}
        """,
    "resources.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Network
        metadata: {name: front}
        ---
        apiVersion: hedgerow.dev/v1alpha1
        kind: Volume
        metadata: {name: data}
        """,
    "devices.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Device
        metadata: {name: pi-1, labels: {site: lyon}}
        spec: {systemModel: rpi4}
        ---
        apiVersion: hedgerow.dev/v1alpha1
        kind: Device
        metadata: {name: pi-2, labels: {site: nantes}}
        spec: {systemModel: rpi4}
        """,
    "deployment.yaml": """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Deployment
        metadata: {name: web-lyon}
        spec:
          application: web
          release: "1.0.0"
          selector: {matchLabels: {site: lyon}}
        """,
}

# The upgrade of BASE's release, for tests that move a deployment from 1.0.0 to 1.1.0.
RELEASE_110 = """\
    apiVersion: hedgerow.dev/v1alpha1
    kind: Release
    metadata: {name: web-1-1-0}
    spec:
      application: web
      version: "1.1.0"
      containers:
        - {name: server, image: registry.example:5000/web/server:1.1.0}
    """


def resources(volume: str = "", network: str = "", extra: str = "") -> str:
    """BASE's resources.yaml with specs for the volume `data` and the network `front`."""
    return (
        dedent(BASE["resources.yaml"])
        .replace("metadata: {name: front}\n", f"metadata: {{name: front}}\n{network}")
        .replace("metadata: {name: data}\n", f"metadata: {{name: data}}\n{volume}")
        + extra
    )


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(dedent(content), encoding="utf-8")
    return root


def commit(repo: git.Repo, message: str, files: Mapping[str, str | bytes] | None = None) -> str:
    """Write `files` into the working tree, stage everything and commit; the new sha."""
    write_tree(Path(repo.working_dir), files or {})
    repo.git.add(A=True)
    repo.git.commit(m=message, allow_empty=True)
    return repo.head.commit.hexsha
