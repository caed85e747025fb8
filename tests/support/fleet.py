"""The manifests of a one-container fleet, for the end-to-end tests and the benchmarks."""

from __future__ import annotations


def fleet_manifests(
    version: str = "1.0.0",
    image: str = "local/app:1",
    *,
    port: int | None = None,
    state: str = "Running",
) -> dict[str, str]:
    """One application with one release of one container on a network, one device (`pi-1`)
    and its deployment, as files (dedented text) of a repository; `port` publishes 8080 on
    127.0.0.1."""
    ports = f'\n    portBindings: ["127.0.0.1:{port}:8080"]' if port is not None else ""
    dashed = version.replace(".", "-")
    return {
        "app.yaml": "apiVersion: hedgerow.dev/v1alpha1\nkind: Application\nmetadata: {name: web}\n",
        f"releases/{version}.yaml": f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {{name: web-{dashed}}}
spec:
  application: web
  version: "{version}"
  containers:
  - name: server
    image: {image}
    networks: [front]
    env: {{VERSION: "{version}"}}{ports}
""",
        "network.yaml": (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Network\nmetadata: {name: front}\n"
        ),
        "device.yaml": """\
apiVersion: hedgerow.dev/v1alpha1
kind: Device
metadata: {name: pi-1}
spec: {systemModel: rpi4}
""",
        "deployment.yaml": f"""\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {{name: web-pi-1}}
spec: {{application: web, release: "{version}", device: pi-1, state: {state}}}
""",
    }
