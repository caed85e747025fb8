"""The container fields taken from compose: each bad value is refused at its line and field, and
a good release reaches the agent as the wire contract says (lists split, ulimits as soft and hard,
fixed addresses and conditions apart from what older agents read)."""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent

import msgspec
import pytest

from reconciler import wire
from reconciler.core.document import wire_container
from reconciler.manifests.model.release import Container
from reconciler.manifests.validate import Report
from tests.test_fields import RELEASE_HEAD, line_of, problems_of

Validate = Callable[..., Report]

NETWORK = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Network
metadata: {name: front}
spec:
  ipam: [{subnet: 10.9.0.0/24, gateway: 10.9.0.1}]
---
apiVersion: hedgerow.dev/v1alpha1
kind: Volume
metadata: {name: data}
"""

# (what is wrong, the container's YAML, the line's needle, the field, a part of the message)
REFUSED = [
    ("a command that cannot be split", 'command: "echo \\"open"', "command:",
     "spec.containers[0].command", "cannot split"),
    ("a user with spaces", 'user: "web server"', "user:", "spec.containers[0].user",
     "is not a valid user"),
    ("a relative working folder", "workingDir: srv", "workingDir:",
     "spec.containers[0].workingDir", "must be absolute"),
    ("maxRetries without on-failure", "maxRetries: 3", "maxRetries:",
     "spec.containers[0].maxRetries", "goes with restartPolicy on-failure"),
    ("a soft ulimit over the hard one", "ulimits: {nofile: {soft: 10, hard: 5}}", "ulimits:",
     "spec.containers[0].ulimits.nofile.soft", "soft must not exceed hard"),
    ("an unknown ulimit", "ulimits: {files: 10}", "ulimits:", "spec.containers[0].ulimits.files",
     "is not a ulimit"),
    ("a sysctl that is no sysctl", "sysctls: {somaxconn: 1}", "sysctls:",
     "spec.containers[0].sysctls.somaxconn", "is not a valid sysctl"),
    ("a signal by an odd name", "stopSignal: TERM", "stopSignal:",
     "spec.containers[0].stopSignal", "is not a valid signal"),
    ("a grace period without a unit", "stopGracePeriod: '10'", "stopGracePeriod:",
     "spec.containers[0].stopGracePeriod", "is not a duration"),
    ("a label in Hedgerow's prefix", "labels: {hedgerow.release: x}", "labels:",
     "spec.containers[0].labels.hedgerow.release", "the prefix 'hedgerow.' is Hedgerow's own"),
    ("a DNS server that is no address", "dns: [resolver.local]", "dns:",
     "spec.containers[0].dns[0]", "is not an IP address"),
    ("a pid mode of another kind", "pidMode: 'service:db'", "pidMode:",
     "spec.containers[0].pidMode", "'container:NAME'"),
    ("logging without a driver", "logging: {options: {max-size: 10m}}", "logging:",
     "spec.containers[0].logging.driver", "required field driver is missing"),
    ("an address outside the network's subnet",
     "networks: [{network: front, ipv4Address: 10.8.0.5}]", "networks:",
     "spec.containers[0].networks[0].ipv4Address", "outside every subnet of Network 'front'"),
    ("an IPv4 address that is none", "networks: [{network: front, ipv4Address: 10.9.0.300}]",
     "networks:", "spec.containers[0].networks[0].ipv4Address", "is not an IPv4 address"),
    ("a condition compose does not have", "dependsOn: {b: {condition: ready}}", "dependsOn:",
     "spec.containers[0].dependsOn.b.condition", "must be one of started, healthy"),
    ("a read-only flag that is a string", "volumes: [{volume: data, target: /d, readOnly: 'yes'}]",
     "volumes:", "spec.containers[0].volumes[0].readOnly", "expected true or false"),
]  # fmt: skip


def containers(first: str, *, second: str = "") -> str:
    return (
        "    - name: a\n      image: busybox\n"
        + "".join(f"      {line}\n" for line in first.splitlines())
        + "    - name: b\n      image: busybox\n"
        + "".join(f"      {line}\n" for line in second.splitlines())
    )


@pytest.mark.parametrize(("what", "field", "needle", "path", "message"), REFUSED)
def test_each_bad_compose_field_is_refused_at_its_line(
    validate_repo: Validate, what: str, field: str, needle: str, path: str, message: str
) -> None:
    body = containers(field)
    report = validate_repo({"release.yaml": RELEASE_HEAD + body, "resources.yaml": NETWORK})
    found = problems_of(report)
    assert len(found) == 1, (what, found)
    (file, line, field_path, text) = found[0]
    assert (file, line, field_path) == (
        "release.yaml",
        line_of(RELEASE_HEAD + body, needle),
        path,
    ), what
    assert message in text, (what, text)


def test_a_gateway_outside_the_subnet_is_refused_at_its_line(validate_repo: Validate) -> None:
    network = NETWORK.replace("gateway: 10.9.0.1", "gateway: 10.10.0.1")
    report = validate_repo({"resources.yaml": network})
    assert problems_of(report) == [
        (
            "resources.yaml",
            5,
            "spec.ipam[0].gateway",
            "gateway 10.10.0.1 is outside the subnet 10.9.0.0/24",
        )
    ]


def test_a_job_waited_for_must_not_be_restarted_when_it_exits(validate_repo: Validate) -> None:
    body = containers("dependsOn: {b: {condition: completedSuccessfully}}")
    report = validate_repo({"release.yaml": RELEASE_HEAD + body})
    ((_, line, path, message),) = problems_of(report)
    assert (line, path) == (
        line_of(RELEASE_HEAD + body, "dependsOn"),
        "spec.containers[0].dependsOn.b",
    )
    assert "restartPolicy 'unless-stopped' restarts it" in message

    fixed = containers(
        "dependsOn: {b: {condition: completedSuccessfully}}", second="restartPolicy: 'no'"
    )
    assert problems_of(validate_repo({"release.yaml": RELEASE_HEAD + fixed})) == []


def test_a_dependency_cycle_through_the_mapping_form_is_refused(validate_repo: Validate) -> None:
    body = containers("dependsOn: {b: {condition: healthy}}", second="dependsOn: [a]")
    messages = [m for *_, m in problems_of(validate_repo({"release.yaml": RELEASE_HEAD + body}))]
    assert messages == ["dependsOn has a cycle: a -> b -> a"]


def container(text: str) -> Container:
    import yaml

    return Container.model_validate(yaml.safe_load(dedent(text)))


def test_a_container_reaches_the_agent_as_the_wire_contract_says() -> None:
    found = wire_container(
        container("""
            name: app
            image: busybox
            command: serve --port "8080"
            entrypoint: /bin/run
            ulimits: {nofile: {soft: 10, hard: 20}, nproc: 64}
            sysctls: {net.core.somaxconn: 1024}
            shmSize: 64Mi
            networks: [back, {network: front, ipv4Address: 10.9.0.5, aliases: [api]}]
            dependsOn: {db: {condition: healthy}, job: {condition: completedSuccessfully}, b: {}}
            volumes: [{volume: data, target: /d, readOnly: true}]
            imageCredential: private
        """)
    )
    assert found.command == ["serve", "--port", "8080"]
    assert found.entrypoint == ["/bin/run"]
    assert found.ulimits == {
        "nofile": wire.Ulimit(soft=10, hard=20),
        "nproc": wire.Ulimit(soft=64, hard=64),
    }
    assert found.sysctls == {"net.core.somaxconn": "1024"}
    assert found.shm_size == 64 * 2**20
    assert found.networks == ["back", "front"]
    assert found.endpoints == {"front": wire.Endpoint(ipv4_address="10.9.0.5", aliases=["api"])}
    assert found.depends_on == ["db", "job", "b"]
    assert found.wait_for == {"db": "healthy", "job": "completedSuccessfully"}
    assert found.volumes == [wire.Mount(volume="data", target="/d", read_only=True)]
    encoded = msgspec.json.encode(found)
    assert b"private" not in encoded, "the credential's name never reaches a device"


def test_a_container_setting_nothing_new_is_sent_as_before() -> None:
    """Fields at their default stay out of the document: older agents read it as they did,
    and a fleet's documents do not grow by what its releases do not use."""
    encoded = msgspec.json.decode(
        msgspec.json.encode(wire_container(container("{name: app, image: busybox}")))
    )
    assert encoded == {"name": "app", "image": "busybox"}
