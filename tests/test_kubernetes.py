"""The Kubernetes manifests in `deploy/kubernetes/`: each is valid for the Kubernetes version
pinned here (kubernetes-validate's bundled schemas, strict: an unknown field fails; offline),
and they hold together in what schemas cannot see. The controller's args parse as
`hedgerow controller`'s own options, the probes ask for routes the app serves on the port it
listens on, every Secret, key, volume and file they name exists, the Service and the
PodDisruptionBudget select the Deployment's pods, and every replica reads one fingerprint key
from the Secret."""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml
from typer.core import TyperCommand, TyperGroup, TyperOption

from reconciler.cli.app import app
from reconciler.controller.keys import shared_key
from reconciler.server.app import openapi_document
from tests.support.repos import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are for (policy/v1 PDBs, seccompProfile and
# topologySpreadConstraints are all older); kubernetes-validate bundles its schemas.
KUBERNETES = "1.30"
EXAMPLE_SECRETS = "secrets.example.yaml"
PLACEHOLDER = "REPLACE-ME"

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def manifests() -> Iterator[tuple[str, Doc]]:
    """(file name, document) for every Kubernetes object, the example Secrets included."""
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in documents(path):
                yield path.name, doc


def the(kind: str) -> Doc:
    (found,) = [doc for _, doc in manifests() if doc["kind"] == kind]
    return found


def pod() -> Doc:
    template: Doc = the("Deployment")["spec"]["template"]
    return template


def controller_container() -> Doc:
    (container,) = [c for c in pod()["spec"]["containers"] if c["name"] == "controller"]
    found: Doc = container
    return found


def all_containers() -> list[Doc]:
    spec = pod()["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def controller_command() -> TyperCommand:
    """`hedgerow controller` as typer builds it (typer ships its own click)."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    command = group.commands["controller"]
    assert isinstance(command, TyperCommand)
    return command


def env_values(container: Doc) -> dict[str, str]:
    """The container's env, each variable standing for a value of the right shape."""
    return {entry["name"]: f"placeholder-{entry['name'].lower()}" for entry in container["env"]}


def controller_args() -> list[str]:
    """The args after `controller`, with Kubernetes' $(VAR) expanded from the container's env
    (a variable it lacks is a failure: Kubernetes would pass `$(VAR)` as it is)."""
    container = controller_container()
    args: list[str] = container["args"]
    assert args[0] == "controller", "the image's entrypoint is `hedgerow`: args name the command"
    env = env_values(container)

    def expand(found: re.Match[str]) -> str:
        assert found[1] in env, f"$({found[1]}) is not in the container's env"
        return env[found[1]]

    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, arg) for arg in args[1:]]


def parsed_options() -> dict[str, Any]:
    """The controller's options as `hedgerow controller` parses the Deployment's args and env."""
    command = controller_command()
    env = env_values(controller_container())
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        context = command.make_context("controller", controller_args())
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return dict(context.params)


def flag_values() -> dict[str, str]:
    """Each `--flag=value` in the args, as written."""
    found: dict[str, str] = {}
    for arg in controller_args():
        assert arg.startswith("--") and "=" in arg, f"{arg!r}: write options as --flag=value"
        flag, _, value = arg.partition("=")
        found[flag] = value
    return found


def mounts(container: Doc) -> dict[PurePosixPath, Doc]:
    return {PurePosixPath(m["mountPath"]): m for m in container.get("volumeMounts", [])}


def volumes() -> dict[str, Doc]:
    return {volume["name"]: volume for volume in pod()["spec"]["volumes"]}


def example_secrets() -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in documents(DEPLOY / EXAMPLE_SECRETS)}


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,doc",
    list(manifests()),
    ids=[f"{name}:{doc['kind']}:{doc['metadata']['name']}" for name, doc in manifests()],
)
def test_every_manifest_is_valid_for_the_pinned_kubernetes(name: str, doc: Doc) -> None:
    assert kubernetes_validate.validate(doc, KUBERNETES, strict=True) == KUBERNETES


def test_strict_validation_rejects_a_field_kubernetes_does_not_know() -> None:
    deployment = the("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example_secrets() -> None:
    (kustomization,) = documents(DEPLOY / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {EXAMPLE_SECRETS}


def test_every_object_is_in_the_hedgerow_namespace() -> None:
    namespace = the("Namespace")["metadata"]["name"]
    for name, doc in manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{name}: {doc['kind']}"


# -- the Deployment and the controller -------------------------------------------------------


def test_the_deployment_runs_three_replicas_of_this_versions_image() -> None:
    deployment = the("Deployment")
    assert deployment["spec"]["replicas"] == 3
    image = f"hedgerow/controller:{importlib.metadata.version('hedgerow')}"
    assert {container["image"] for container in all_containers()} == {image}


def test_every_flag_in_the_args_is_an_option_hedgerow_controller_takes() -> None:
    options = {
        name
        for param in controller_command().params
        if isinstance(param, TyperOption)
        for name in (*param.opts, *param.secondary_opts)
    }
    unknown = set(flag_values()) - options
    assert not unknown, f"not options of `hedgerow controller`: {sorted(unknown)}"
    parsed_options()  # and they parse: types, ranges, the required --repo


def test_the_store_is_postgresql_from_a_secret_through_hedgerow_db() -> None:
    command = controller_command()
    (db,) = [p for p in command.params if isinstance(p, TyperOption) and "--db" in p.opts]
    assert db.envvar == "HEDGEROW_DB"
    (entry,) = [e for e in controller_container()["env"] if e["name"] == db.envvar]
    assert entry["valueFrom"]["secretKeyRef"] == {"name": "hedgerow-db", "key": "url"}
    url = example_secrets()["hedgerow-db"]["stringData"]["url"]
    assert url.startswith("postgresql+psycopg://"), "replicas need PostgreSQL"
    assert parsed_options()["db"] == env_values(controller_container())["HEDGEROW_DB"]


def test_the_replicas_share_the_files_every_replica_needs() -> None:
    """README: every replica needs the same age key and webhook secret; and the operator API is
    on. Each is a file from a Secret, mounted read-only where the args say."""
    options = parsed_options()
    container = controller_container()
    for option in ("age_key_file", "webhook_secret_file", "operator_token_file"):
        path = PurePosixPath(str(options[option]))
        mount = mounts(container).get(path.parent)
        assert mount is not None, f"{option}: nothing is mounted at {path.parent}"
        assert mount.get("readOnly") is True
        source = volumes()[mount["name"]]["secret"]
        assert path.name in {item["path"] for item in source["items"]}, f"{option}: {path}"


def test_the_probes_ask_for_routes_the_app_serves_on_the_port_it_listens_on() -> None:
    container = controller_container()
    host, _, port = str(parsed_options()["listen"]).rpartition(":")
    assert host == "0.0.0.0", "the kubelet and the Service reach the pod's address, not loopback"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    routes = {path for path, item in openapi_document()["paths"].items() if "get" in item}
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes, probe
        assert ports.get(get["port"], get["port"]) == int(port), probe
        assert get.get("scheme", "HTTP") == "HTTP"  # no --tls-cert in the args
    assert parsed_options()["tls_cert"] is None


def test_the_service_and_the_budget_select_the_deployments_pods() -> None:
    labels = pod()["metadata"]["labels"]
    selector = the("Deployment")["spec"]["selector"]["matchLabels"]
    budget = the("PodDisruptionBudget")["spec"]
    service = the("Service")["spec"]
    for name, chosen in [
        ("Deployment", selector),
        ("PodDisruptionBudget", budget["selector"]["matchLabels"]),
        ("Service", service["selector"]),
        *[
            ("spread", c["labelSelector"]["matchLabels"])
            for c in pod()["spec"]["topologySpreadConstraints"]
        ],
    ]:
        assert chosen and chosen.items() <= labels.items(), name
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 2
    assert service["type"] == "ClusterIP"
    container_ports = {p["name"] for p in controller_container()["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= container_ports


def test_the_replicas_spread_over_nodes() -> None:
    keys = {
        c["topologyKey"]: c["whenUnsatisfiable"] for c in pod()["spec"]["topologySpreadConstraints"]
    }
    assert keys.get("kubernetes.io/hostname") == "DoNotSchedule"


def test_every_container_is_locked_down() -> None:
    spec = pod()["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in all_containers():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]


def test_what_the_controller_writes_is_a_writable_volume() -> None:
    """The root filesystem is read-only: the data folder (git mirror) and /tmp are emptyDirs."""
    container = controller_container()
    for path in (PurePosixPath(str(parsed_options()["data_dir"])), PurePosixPath("/tmp")):
        mount = mounts(container)[path]
        assert not mount.get("readOnly", False)
        assert "emptyDir" in volumes()[mount["name"]], path


def test_every_volume_mounted_exists_and_every_secret_is_in_the_example() -> None:
    secrets = example_secrets()
    for container in all_containers():
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes(), f"{container['name']}: {mount['name']}"
        for entry in container.get("env", []):
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]["stringData"], entry["name"]
    for volume in volumes().values():
        if "secret" in volume:
            source = volume["secret"]
            assert source["defaultMode"] == 0o440  # readable by fsGroup, by no one else
            for item in source["items"]:
                assert item["key"] in secrets[source["secretName"]]["stringData"], item["key"]


def test_the_example_secrets_hold_placeholders_only() -> None:
    for name, secret in example_secrets().items():
        assert "data" not in secret, f"{name}: stringData only, so placeholders show"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, f"{name}/{key} is not marked {PLACEHOLDER}"


# -- the fingerprint key ---------------------------------------------------------------------


def test_every_replica_reads_one_fingerprint_key_from_the_secret(tmp_path: Path) -> None:
    """The replicas share the key (whichever leads next compares against the fingerprints the
    last leader stored): the flag names the Secret's file, mounted read-only."""
    path = PurePosixPath(str(parsed_options()["fingerprint_key_file"]))
    mount = mounts(controller_container())[path.parent]
    assert mount["readOnly"] is True
    items = volumes()[mount["name"]]["secret"]["items"]
    assert path.name in [item["path"] for item in items]
    key = tmp_path / "fingerprint.key"
    key.write_text("c2hhcmVkIGJ5IGV2ZXJ5IHJlcGxpY2EsIDMyIGJ5dGVzIG9yIG1vcmU=\n")
    assert shared_key(key) == shared_key(key) == key.read_bytes().strip()


def test_a_short_fingerprint_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "fingerprint.key"
    key.write_text(PLACEHOLDER)
    with pytest.raises(ValueError, match="a key needs 32 or more"):
        shared_key(key)
