"""`hedgerow import compose`: compose's interpolation rules, each mapping rule and each error at
its line, six real compose files (tests/compose, CC0) imported into manifests that validate,
and one of them deployed by the agent on a real engine with its password in a Secret."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agent.converge import converge
from agent.engine import Engine
from reconciler.cli.app import app
from reconciler.compose.convert import Options, convert, size
from reconciler.compose.interpolate import InterpolationError, interpolate, read_env_file
from reconciler.core.desired import desired_fleet
from reconciler.core.document import Applied, desired_document
from reconciler.demo import images as demo_images
from reconciler.manifests.load import load_bytes, read_tree
from reconciler.manifests.validate import Report, validate_files
from tests.support.docker import DockerEngine
from tests.support.properties import examples

STACKS = Path(__file__).parent / "compose"
IDENTITY = pyrage.x25519.Identity.generate()
DEVICE = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Device
metadata: {name: pi-1}
spec: {systemModel: rpi4}
"""

# -- interpolation ------------------------------------------------------------------------------

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET", "value"),
        ("${SET}", "value"),
        ("a${SET}b", "avalueb"),
        ("${UNSET}", ""),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${UNSET-fallback}", "fallback"),
        ("${UNSET:-${SET}}", "value"),
        ("$$SET", "$SET"),
        ("cost: $$5", "cost: $5"),
    ],
)
def test_compose_interpolation(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("${UNSET:?set it first}", "UNSET: set it first"), ("${EMPTY:?}", "EMPTY: is required"),
     ("$1", "write $$ for a literal $")],
)  # fmt: skip
def test_compose_interpolation_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message.replace("$", r"\$")):
        interpolate(text, ENV)


def test_an_env_file_is_read_as_compose_reads_it() -> None:
    text = "# comment\nA=1\nexport B='two words'\nC=\"q\"\nD=x # trailing\nE\n"
    assert read_env_file(text) == {"A": "1", "B": "two words", "C": "q", "D": "x", "E": ""}


@pytest.mark.parametrize(
    ("given", "expected"), [("64m", "64Mi"), ("1g", "1Gi"), ("512k", "512Ki"), (1024, 1024),
                            ("100b", 100), ("1.5g", "1.5Gi"), ("lots", None)],
)  # fmt: skip
def test_compose_sizes_as_quantities(given: Any, expected: Any) -> None:
    assert size(given) == expected


# -- mapping rules, on the data ------------------------------------------------------------------


def imported(text: str, **options: Any) -> tuple[Any, str]:
    documents, problems = load_bytes("compose.yaml", dedent(text).encode())
    assert problems == []
    (document,) = documents
    files = {"app.env": "FROM_FILE=1\nGREETING=from-file\n"}
    result = convert(
        document.data,
        lambda path: document.locate(path)[0],
        lambda path: files[path],
        Options("shop", folder="/srv/shop", **options),
    )
    return result, dedent(text)


def release_of(result: Any) -> dict[str, Any]:
    (spec,) = [spec for kind, _, spec in result.manifests if kind == "Release"]
    return {c["name"]: c for c in spec["containers"]}


def test_every_field_maps_to_its_hedgerow_field() -> None:
    result, _ = imported("""
        services:
          web:
            image: nginx:1.25
            command: nginx -g "daemon off;"
            environment: [GREETING=hello, EMPTY=]
            env_file: app.env
            ports: ["8080:80", {target: 443, published: 8443, host_ip: 127.0.0.1, protocol: tcp}]
            volumes: ["data:/data:ro", "./conf:/etc/nginx/conf.d", {type: tmpfs, target: /tmp}]
            restart: on-failure:3
            depends_on: {db: {condition: service_healthy}}
            healthcheck: {test: curl -f localhost, interval: 10s, retries: 3}
            networks: {front: {ipv4_address: 10.5.0.5, aliases: [api]}}
            sysctls: [net.core.somaxconn=1024]
            ulimits: {nofile: {soft: 1024, hard: 2048}}
            shm_size: 64m
            mem_limit: 1g
            logging: {driver: local, options: {max-size: 10m}}
            devices: ["/dev/ttyUSB0:/dev/ttyUSB0:rw"]
            extra_hosts: ["db.local:10.5.0.6"]
            labels: {team: edge}
            user: "1000"
          db:
            image: postgres:16
            network_mode: service:web
        volumes: {data: {}}
        networks:
          front:
            ipam: {config: [{subnet: 10.5.0.0/24}]}
    """)
    assert result.errors == []
    web = release_of(result)["web"]
    assert web["command"] == 'nginx -g "daemon off;"', "Hedgerow splits it as compose does"
    assert web["env"] == {"GREETING": "hello", "EMPTY": "", "FROM_FILE": "1"}
    assert web["portBindings"] == ["8080:80", "127.0.0.1:8443:443/tcp"]
    assert web["volumes"] == [{"volume": "shop-data", "target": "/data", "readOnly": True}]
    assert web["binds"] == ["/srv/shop/conf:/etc/nginx/conf.d"]
    assert web["tmpfs"] == [{"path": "/tmp", "options": ""}]
    assert (web["restartPolicy"], web["maxRetries"]) == ("on-failure", 3)
    assert web["dependsOn"] == {"db": {"condition": "healthy"}}
    assert web["healthcheck"] == {"test": ["CMD-SHELL", "curl -f localhost"], "interval": "10s",
                                  "retries": 3}  # fmt: skip
    assert web["networks"] == [{"network": "shop-front", "ipv4Address": "10.5.0.5",
                                "aliases": ["api"]}]  # fmt: skip
    assert web["sysctls"] == {"net.core.somaxconn": "1024"}
    assert (web["shmSize"], web["memory"]) == ("64Mi", "1Gi")
    assert web["deviceMappings"] == [
        {"pathOnHost": "/dev/ttyUSB0", "pathInContainer": "/dev/ttyUSB0", "cgroupPermissions": "rw"}
    ]
    assert web["extraHosts"] == ["db.local:10.5.0.6"]
    db = release_of(result)["db"]
    assert db["networkMode"] == "container:web" and db["restartPolicy"] == "no"
    networks = {name: spec for kind, name, spec in result.manifests if kind == "Network"}
    assert networks == {"shop-front": {"ipam": [{"subnet": "10.5.0.0/24"}]}}
    assert any("./conf is /srv/shop/conf on the device" in w.message for w in result.warnings)


def test_services_on_no_network_share_a_default_one() -> None:
    result, _ = imported("""
        services:
          a: {image: busybox}
          b: {image: busybox, network_mode: host}
    """)
    containers = release_of(result)
    assert containers["a"]["networks"] == ["shop-default"]
    assert "networks" not in containers["b"]
    assert ("Network", "shop-default", {}) in result.manifests


def test_a_password_goes_to_a_secret_with_a_warning() -> None:
    result, _ = imported("""
        services:
          db:
            image: postgres
            environment: {POSTGRES_PASSWORD: hunter2, POSTGRES_USER: shop}
    """)
    env = release_of(result)["db"]["env"]
    assert env["POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"secret": "shop-db", "key": "POSTGRES_PASSWORD"}
    }
    assert env["POSTGRES_USER"] == "shop"
    assert result.secrets == {"shop-db": {"POSTGRES_PASSWORD": "hunter2"}}
    assert any("moved to Secret 'shop-db'" in w.message for w in result.warnings)
    kept, _ = imported(
        "services: {db: {image: postgres, environment: {POSTGRES_PASSWORD: x}}}", secrets=False
    )
    assert release_of(kept)["db"]["env"] == {"POSTGRES_PASSWORD": "x"}
    assert any("looks like a password" in w.message for w in kept.warnings)


def test_compose_secrets_become_a_secret_read_as_files() -> None:
    result, _ = imported(
        """
        services:
          db:
            image: postgres
            secrets: [db_password, {source: api_key, target: key.txt, mode: 0400}]
        secrets:
          db_password: {file: app.env}
          api_key: {environment: API_KEY}
    """,
        environment={"API_KEY": "k-123"},
    )
    assert result.errors == []
    assert release_of(result)["db"]["secrets"] == [
        {"secret": "shop-secrets", "key": "db_password", "target": "/run/secrets/db_password",
         "mode": 0o444},
        {"secret": "shop-secrets", "key": "api_key", "target": "/run/secrets/key.txt",
         "mode": 0o400},
    ]  # fmt: skip
    assert result.secrets == {
        "shop-secrets": {"db_password": "FROM_FILE=1\nGREETING=from-file\n", "api_key": "k-123"}
    }
    plain, _ = imported(
        "services: {db: {image: postgres, secrets: [p]}}\nsecrets: {p: {file: app.env}}\n",
        secrets=False,
    )
    assert [(e.where, e.message[:40]) for e in plain.errors] == [
        ("secrets.p", "a compose secret needs --age or a .sops.")
    ]


@pytest.mark.parametrize(
    ("service", "where", "message"),
    [
        ("build: .", "services.app.build", "Hedgerow deploys images"),
        ("links: [db]", "services.app.links", "cannot carry `links`"),
        ("volumes: [/cache]", "services.app.volumes.0", "an anonymous volume at /cache"),
        ("volumes: [nope:/x]", "services.app.volumes.0", "volume 'nope' is not declared"),
        ("networks: [nope]", "services.app.networks.nope", "network 'nope' is not declared"),
        ("stdin_open: true", "services.app.stdin_open", "cannot carry `stdin_open`"),
        ("restart: sometimes", "services.app.restart", "is not no, always"),
    ],
)
def test_what_cannot_be_carried_is_an_error_at_its_line(
    service: str, where: str, message: str
) -> None:
    text = f"services:\n  app:\n    image: busybox\n    {service}\n"
    result, _ = imported(text)
    assert [(e.line, e.where) for e in result.errors] == [(4, where)]
    assert message in result.errors[0].message


KEYS = sorted({"image", "command", "environment", "env_file", "restart", "ports", "volumes",
               "tmpfs", "networks", "network_mode", "depends_on", "healthcheck", "devices",
               "extra_hosts", "sysctls", "labels", "dns", "shm_size", "mem_limit", "cpu_period",
               "ulimits", "group_add", "logging", "secrets", "user", "links"})  # fmt: skip
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=examples(300), deadline=None)
@given(
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5),
    st.dictionaries(st.sampled_from(["volumes", "networks", "secrets", "name"]), VALUES,
                    max_size=2),
)  # fmt: skip
def test_any_shape_of_value_is_a_finding_never_a_traceback(
    service: dict[str, Any], top: dict[str, Any]
) -> None:
    compose = {"services": {"app": service}, **top}
    result = convert(compose, lambda path: 1, lambda path: "A=1\n", Options("shop"))
    assert isinstance(result.errors, list)


# -- six real stacks ---------------------------------------------------------------------------


def import_stack(tmp_path: Path, stack: str) -> tuple[Path, Any]:
    out = tmp_path / stack
    result = CliRunner().invoke(
        app,
        ["import", "compose", str(STACKS / stack / "compose.yaml"), "--device", "pi-1",
         "-o", str(out), "--age", str(IDENTITY.to_public())],
    )  # fmt: skip
    return out, result


def validated(folder: Path) -> Report:
    (folder / "device.yaml").write_text(DEVICE)
    return validate_files(read_tree(folder), [IDENTITY])


@pytest.mark.parametrize("stack", sorted(p.name for p in STACKS.iterdir() if p.is_dir()))
def test_a_real_stack_imports_into_manifests_that_validate(tmp_path: Path, stack: str) -> None:
    out, result = import_stack(tmp_path, stack)
    assert result.exit_code == 0, result.output
    report = validated(out)
    assert [p.render() for p in report.problems] == []
    assert report.catalog.deployments and len(report.catalog.releases) == 1


def test_a_stack_s_password_from_dot_env_is_encrypted_not_written(tmp_path: Path) -> None:
    out, result = import_stack(tmp_path, "pihole-cloudflared-DoH")
    assert result.exit_code == 0, result.output
    written = b"".join(p.read_bytes() for p in out.rglob("*.yaml"))
    assert b"changeit" not in written, "PIHOLE_PW from .env, now in a Secret"
    report = validated(out)
    (values,) = report.secrets.values()
    assert values["WEBPASSWORD"].reveal() == "changeit"


def test_a_build_only_service_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  api:\n    build: ./api\n    ports: ['80:80']\n")
    result = CliRunner().invoke(app, ["import", "compose", str(compose), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "compose.yaml:3: services.api: no image" in result.output
    assert "compose.yaml:3: services.api.build" in result.output
    assert not (tmp_path / "o").exists()


# -- one stack deployed ----------------------------------------------------------------------


@pytest.mark.e2e
def test_an_imported_stack_runs_on_the_agent_with_its_secret(
    tmp_path: Path, docker_engine: DockerEngine
) -> None:
    out, result = import_stack(tmp_path, "nextcloud-redis-mariadb")
    assert result.exit_code == 0, result.output
    report = validated(out)
    # the stack's images, as local busybox imports that run whatever command they are given
    busybox = demo_images.busybox()
    tar = demo_images.rootfs_tar(busybox, "stack")
    keep = 'ENTRYPOINT ["sh", "-c", "trap \'exit 0\' TERM; sleep 1000000 & wait", "--"]'
    for image in ("nextcloud:apache", "redis:alpine", "mariadb:10.5"):
        docker_engine.engine.import_image(image, tar, keep)
    desired = desired_document(Applied("a" * 40, report, desired_fleet(report.catalog)), "pi-1",
                               set(), "r")  # fmt: skip
    engine = Engine(docker_engine.client, device="pi-1", stop_timeout=2)
    engine.hold_secrets(desired.secrets)
    api = docker_engine.client.api
    try:
        deadline = time.monotonic() + 60
        while True:
            outcome = converge(engine, desired)
            assert outcome.ok, [f.message for f in outcome.failures]
            state = {c.container: c.state for c in engine.read().containers}
            if state == {"nc": "running", "redis": "running", "db": "running"}:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        (db,) = [c for c in engine.read().containers if c.container == "db"]
        env = api.inspect_container(db.name)["Config"]["Env"]
        assert "MYSQL_ROOT_PASSWORD=nextcloud" in env and "MYSQL_DATABASE=nextcloud" in env
    finally:
        docker_engine.remove_managed()
        for image in ("nextcloud:apache", "redis:alpine", "mariadb:10.5"):
            api.remove_image(image, force=True)
