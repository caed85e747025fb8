"""Enrollment: the pure rules (token state, refusals, labels, names, models, facts), the
`POST /v1/enroll` route over a real controller and store, Pending devices and their empty
documents, facts in reports, and the CLI an operator uses (`hedgerow enrollment`, `device
list --pending`, `device manifest`, `status --device`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agent.enroll import Identity, save, saved
from agent.facts import FREE_DISK_STEP, FactsProbe, facts_of
from agent.identity import IdentityError, device_name, system_model
from reconciler import wire
from reconciler.cli.app import app as cli
from reconciler.core.enrollment import (
    EnrolledDevice,
    EnrollmentToken,
    device_manifest,
    parse_labels,
    parse_ttl,
    refusal,
)
from reconciler.manifests.model.simple import Device
from reconciler.secrets import tokens
from reconciler.server.app import create_app
from reconciler.server.enroll import Buckets, EnrollLimit
from reconciler.server.polls import PollTimes
from reconciler.store import Store, sqlite_url
from reconciler.store.schema import EnrollmentToken as EnrollmentRow
from tests.support.leaks import ENROLLMENT_TOKEN
from tests.test_api import OPERATOR, Env, commit, desired, env, report, run_with_runner, status

__all__ = ["env"]  # the fixture, shared with tests/test_api.py
SHARED = ENROLLMENT_TOKEN  # a planted enrollment token: never in any output
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


# -- the pure rules ----------------------------------------------------------------------------


def token(**fields: Any) -> EnrollmentToken:
    return replace(EnrollmentToken("batch", {"site": "lyon"}, NOW - timedelta(hours=1)), **fields)


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, "active"),
        ({"expires_at": NOW}, "expired"),
        ({"expires_at": NOW + timedelta(seconds=1)}, "active"),
        ({"max_uses": 3, "uses": 3}, "used"),
        ({"max_uses": 3, "uses": 2}, "active"),
        ({"revoked_at": NOW, "max_uses": 1, "uses": 1}, "revoked"),
    ],
)
def test_a_token_is_active_until_revoked_expired_or_used_up(
    fields: dict[str, Any], state: str
) -> None:
    assert token(**fields).state(NOW) == state


def test_a_taken_name_is_refused_unless_the_token_allows_reenrollment() -> None:
    assert refusal(token(), name_taken=False, now=NOW) is None
    taken = refusal(token(), name_taken=True, now=NOW)
    assert taken is not None and taken.status == 409 and "--allow-reenroll" in taken.reason
    assert refusal(token(allow_reenroll=True), name_taken=True, now=NOW) is None
    expired = refusal(token(expires_at=NOW), name_taken=False, now=NOW)
    assert expired is not None and (expired.status, expired.reason) == (
        403,
        "this enrollment token has expired",
    )


def test_labels_and_lifetimes_as_operators_type_them() -> None:
    assert parse_labels("site=lyon, ring=stable,") == {"site": "lyon", "ring": "stable"}
    assert parse_labels("") == {}
    for bad in ("site", "site=lyon,site=paris", "Bad Key=x", "k=" + "v" * 64):
        with pytest.raises(ValueError):
            parse_labels(bad)
    assert parse_ttl("72h") == timedelta(hours=72) and parse_ttl("7d") == timedelta(days=7)
    for bad in ("72", "0h", "h", "1.5h", "-1d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_ttl(bad)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [
        ("raspberrypi", "raspberrypi"),
        ("Lyon_Orin_01.local", "lyon-orin-01"),
        ("gw--7.example.com", "gw--7"),
        ("-edge-", "edge"),
        ("kiosk (2)", "kiosk-2"),
    ],
)
def test_the_hostname_is_made_a_dns_label(hostname: str, name: str) -> None:
    assert device_name(hostname) == name


@pytest.mark.parametrize("hostname", ["", "___", ".local", "a" * 64])
def test_a_hostname_that_cannot_be_a_device_name_is_refused_with_the_flag_to_use(
    hostname: str,
) -> None:
    with pytest.raises(IdentityError, match="pass --device NAME"):
        device_name(hostname)


def test_the_system_model_comes_from_the_device_tree_then_dmi(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="--system-model"):
        system_model(tmp_path)
    dmi = tmp_path / "sys/class/dmi/id/product_name"
    dmi.parent.mkdir(parents=True)
    dmi.write_text("To Be Filled By O.E.M.\n")
    with pytest.raises(IdentityError):
        system_model(tmp_path)
    dmi.write_text("NUC11TNHi5\n")
    assert system_model(tmp_path) == "NUC11TNHi5"
    tree = tmp_path / "proc/device-tree/model"
    tree.parent.mkdir(parents=True)
    tree.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    assert system_model(tmp_path) == "Raspberry Pi 4 Model B Rev 1.5"


INFO = {
    "Architecture": "aarch64",
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "KernelVersion": "6.1.0-rpi7",
    "MemTotal": 8_000_000_000,
    "DockerRootDir": "/var/lib/docker",
}


def test_facts_come_from_the_engine_and_free_disk_is_rounded_down() -> None:
    docker = {"Version": "20.10.24", "Components": [{"Name": "Engine", "Version": "20.10.24"}]}
    facts = facts_of(INFO, docker, (64_000_000_000, 5 * FREE_DISK_STEP + 12345))
    assert facts == wire.Facts(
        architecture="aarch64",
        os="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0-rpi7",
        engine="docker",
        engine_version="20.10.24",
        memory_bytes=8_000_000_000,
        disk_bytes=64_000_000_000,
        disk_free_bytes=5 * FREE_DISK_STEP,
    )
    podman = {"Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
    assert facts_of({}, podman, None) == wire.Facts(engine="podman", engine_version="4.3.1")


def test_the_probe_asks_the_engine_seldom_and_survives_its_silence(tmp_path: Path) -> None:
    asked: list[float] = []
    clock = [0.0]

    def describe() -> tuple[dict[str, Any], dict[str, Any]]:
        asked.append(clock[0])
        if len(asked) > 1:
            raise OSError("the engine went away")
        return INFO, {"Version": "20.10.24"}

    probe = FactsProbe(describe, tmp_path, clock=lambda: clock[0])
    first = probe()
    assert first.kernel == "6.1.0-rpi7" and first.disk_free_bytes is not None
    clock[0] = 599.0
    assert probe() == first and asked == [0.0]
    clock[0] = 600.0
    assert probe().kernel == "6.1.0-rpi7", "the last answer stays in force"
    assert asked == [0.0, 600.0]


def test_the_device_manifest_admits_the_device_as_it_enrolled() -> None:
    enrolled = EnrolledDevice("pi-9", "batch", "rpi4", {"site": "lyon"}, NOW)
    text = device_manifest(enrolled)
    assert text.startswith("# Enrolled 2026-12-04 12:00:00Z with enrollment token batch.")
    device = Device.model_validate(yaml.safe_load(text))
    assert (device.metadata.name, device.spec.system_model) == ("pi-9", "rpi4")
    assert device.metadata.labels == {"site": "lyon"}


def test_an_enrolled_identity_is_kept_private_and_read_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert saved(data) is None
    save(data, Identity("pi-9", "hdr_own"))
    assert saved(data) == Identity("pi-9", "hdr_own")
    assert {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()} == {
        "device-name": 0o600,
        "device-token": 0o600,
    }
    assert "hdr_own" not in repr(saved(data))


def test_the_rate_limit_is_a_bucket_per_token() -> None:
    clock = [0.0]
    buckets = Buckets(EnrollLimit(rate=0.5, burst=2, tokens=2), clock=lambda: clock[0])
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(2.0)
    assert buckets.take("b") == 0.0, "another token has its own bucket"
    clock[0] = 2.0
    assert buckets.take("a") == 0.0
    buckets.take("c")
    assert len(buckets._buckets) == 2, "a bounded number of buckets"


def test_poll_times_are_noted_at_most_once_a_minute_per_device() -> None:
    clock = [1000.0]
    polls = PollTimes(clock=lambda: clock[0])
    polls.record("pi-1")
    clock[0] = 1010.0
    polls.record("pi-1")
    assert polls.take() == {"pi-1": datetime.fromtimestamp(1010.0, UTC)}
    clock[0] = 1050.0
    polls.record("pi-1")
    assert polls.take() == {}
    clock[0] = 1070.0
    polls.record("pi-1")
    assert list(polls.take()) == ["pi-1"]


# -- the route, over a real controller and store -----------------------------------------------


def make_token(store: Store, name: str = "batch", value: str = SHARED, **fields: Any) -> None:
    record = replace(token(name=name, created_at=datetime.now(UTC) - timedelta(hours=1)), **fields)
    assert store.create_enrollment_token(record, tokens.hash_token(value))


def enroll(client: TestClient, device: str = "pi-9", value: str = SHARED, **body: Any) -> Any:
    return client.post(
        "/v1/enroll",
        json={"device": device, "systemModel": "rpi4", **body},
        headers={"Authorization": f"Bearer {value}"},
    )


def test_a_device_enrolls_gets_its_own_token_and_an_empty_document_while_pending(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.controller.sync()
    make_token(env.store)
    client = TestClient(env.app)
    facts = {"architecture": "aarch64", "engine": "docker", "diskFreeBytes": 1 << 30}
    answer = enroll(client, facts=facts)
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    own = answer.json()["token"]
    assert answer.json()["device"] == "pi-9" and own.startswith("hdr_")
    assert env.store.token_hash("pi-9") == tokens.hash_token(own)
    # Pending: an empty document at the applied revision, with an ETag
    headers = {"Authorization": f"Bearer {own}"}
    document = client.get(desired("pi-9"), headers=headers)
    assert document.status_code == 200, document.text
    decoded = msgspec.json.decode(document.content, type=wire.DesiredDocument)
    assert decoded == wire.DesiredDocument(
        device="pi-9", revision=env.repo.head.commit.hexsha, deployments=[]
    )
    again = client.get(
        desired("pi-9"), headers={**headers, "If-None-Match": document.headers["etag"]}
    )
    assert again.status_code == 304
    # the enrollment token is no device token
    assert (
        client.get(desired("pi-9"), headers={"Authorization": f"Bearer {SHARED}"}).status_code
        == 401
    )
    # the operator sees it Pending, with its facts
    (row,) = [r for r in env.store.inventory() if r.device == "pi-9"]
    assert row.pending and row.enrollment == "batch" and row.system_model == "rpi4"
    assert row.facts == wire.Facts(architecture="aarch64", engine="docker", disk_free_bytes=1 << 30)
    listed = client.get("/v1/devices?pending=true", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert [d["device"] for d in listed.json()["devices"]] == ["pi-9"]
    assert [t.uses for t in env.store.enrollment_tokens()] == [1]
    logged = capsys.readouterr().out
    assert "device enrolled" in logged and own not in logged


def test_admission_is_a_commit_of_the_manifest_the_cli_prints(env: Env, tmp_path: Path) -> None:
    env.controller.sync()
    make_token(env.store, labels={"site": "lyon"})
    client = TestClient(env.app)
    own = enroll(client).json()["token"]
    data = str(Path(env.store.url.removeprefix("sqlite:///")).parent)
    shown = CliRunner().invoke(cli, ["device", "manifest", "pi-9", "--data-dir", data])
    assert shown.exit_code == 0, shown.output
    (pi1,) = [d for d in yaml.safe_load_all(Path(env.repo.working_dir, "devices.yaml").read_text())
              if d["metadata"]["name"] == "pi-1"]  # fmt: skip
    manifest = yaml.safe_load(shown.stdout)
    manifest["metadata"]["labels"] = pi1["metadata"]["labels"]  # matched by web-lyon's selector
    commit(env.repo, "admit pi-9", {"devices/pi-9.yaml": yaml.safe_dump(manifest)})
    env.controller.sync()
    document = client.get(desired("pi-9"), headers={"Authorization": f"Bearer {own}"})
    assert [
        d.deployment
        for d in msgspec.json.decode(document.content, type=wire.DesiredDocument).deployments
    ] == ["web-lyon"]
    assert not [r for r in env.store.inventory() if r.pending]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"revoked_at": NOW}, "revoked"),
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, "expired"),
        ({"max_uses": 1, "uses": 1}, "used"),
    ],
)
def test_a_revoked_expired_or_used_up_token_enrolls_nothing(
    env: Env, fields: dict[str, Any], reason: str
) -> None:
    make_token(env.store)
    with env.store._sessions.begin() as session:  # the token as it would be by now
        row = session.get(EnrollmentRow, "batch")
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)
    answer = enroll(TestClient(env.app))
    assert answer.status_code == 403 and reason in answer.json()["detail"]
    assert env.store.token_hash("pi-9") is None


def test_refusals_name_their_reason(env: Env) -> None:
    make_token(env.store, max_uses=2)
    client = TestClient(env.app)
    assert client.post("/v1/enroll", json={"device": "pi-9", "systemModel": "x"}).status_code == 401
    assert enroll(client, value="hde_made-up").status_code == 401
    bad_name = enroll(client, device="Pi_9")
    assert bad_name.status_code == 422 and "$.device" in bad_name.json()["detail"]
    no_model = client.post(
        "/v1/enroll", json={"device": "pi-9"}, headers={"Authorization": f"Bearer {SHARED}"}
    )
    assert no_model.status_code == 422 and "systemModel" in no_model.json()["detail"]
    bad_facts = enroll(client, facts={"memoryBytes": -1})
    assert bad_facts.status_code == 422 and "$.facts.memoryBytes" in bad_facts.json()["detail"]
    assert enroll(client).status_code == 201
    taken = enroll(client)
    assert taken.status_code == 409 and "--allow-reenroll" in taken.json()["detail"]
    assert enroll(client, device="pi-10").status_code == 201
    assert enroll(client, device="pi-11").status_code == 403, "max-uses 2"
    assert [t.uses for t in env.store.enrollment_tokens()] == [2]


def test_reenrollment_replaces_the_old_device_token_when_the_token_allows_it(env: Env) -> None:
    env.controller.sync()
    make_token(env.store, allow_reenroll=True)
    client = TestClient(env.app)
    first = enroll(client).json()["token"]
    second = enroll(client, facts={"kernel": "6.6"})
    assert second.status_code == 201
    assert (
        client.get(desired("pi-9"), headers={"Authorization": f"Bearer {first}"}).status_code == 401
    )
    fresh = {"Authorization": f"Bearer {second.json()['token']}"}
    assert client.get(desired("pi-9"), headers=fresh).status_code == 200


def test_enrollment_is_rate_limited_per_token(env: Env, tmp_path: Path) -> None:
    app = create_app(env.runner, webhook_secret=None, operator_token=OPERATOR,
                     enroll_limit=EnrollLimit(rate=0.01, burst=2))  # fmt: skip
    make_token(env.store)
    client = TestClient(app)
    assert [enroll(client, device=f"pi-{n}").status_code for n in (7, 8)] == [201, 201]
    limited = enroll(client, device="pi-9")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 99
    assert env.store.token_hash("pi-9") is None


def test_facts_in_reports_are_stored_apart_and_plan_nothing(env: Env) -> None:
    async def body(client: Any) -> None:
        auth = env.auth("pi-1")
        first = await client.put(status("pi-1"), json=report(facts={"kernel": "6.1"}), headers=auth)
        assert first.status_code == 200, first.text
        planned = dict(env.controller._planned)
        observed = dict(env.controller._observed)
        again = await client.put(status("pi-1"), json=report(facts={"kernel": "6.6"}), headers=auth)
        assert again.status_code == 200
        assert env.controller._observed == observed and env.controller._planned == planned
        facts, reported, _ = env.store.device_facts(["pi-1"])["pi-1"]
        assert facts == wire.Facts(kernel="6.6") and reported is not None
        stored = env.store.get_observed("pi-1")
        assert stored is not None and stored[0].facts is None

    run_with_runner(env, body)


def test_poll_times_reach_the_store(env: Env) -> None:
    env.controller.sync()
    with TestClient(env.app) as client:  # the lifespan writes them at shutdown
        assert client.get(desired("pi-1"), headers=env.auth("pi-1")).status_code == 200
    (row,) = [r for r in env.store.inventory() if r.device == "pi-1"]
    assert row.polled_at is not None and not row.pending
    assert datetime.now(UTC) - row.polled_at < timedelta(minutes=1)


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    with Store.open(sqlite_url(tmp_path / "data")):
        pass
    yield tmp_path / "data"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_enrollment_create_list_revoke(data: Path) -> None:
    made = run("enrollment", "create", "batch", "--ttl", "72h", "--max-uses", "500",
               "--labels", "site=lyon", "--allow-reenroll", "--data-dir", str(data))  # fmt: skip
    assert made.exit_code == 0, made.output
    shared = made.stdout.strip()
    assert shared.startswith("hde_") and "not shown again" in made.stderr
    twice = run("enrollment", "create", "batch", "--data-dir", str(data))
    assert twice.exit_code == 1 and "exists already" in twice.stderr
    listed = json.loads(run("enrollment", "list", "-o", "json", "--data-dir", str(data)).stdout)
    (entry,) = listed
    assert (entry["name"], entry["state"], entry["uses"], entry["maxUses"]) == (
        "batch",
        "active",
        0,
        500,
    )
    assert entry["labels"] == {"site": "lyon"} and entry["allowReenroll"] is True
    assert shared not in json.dumps(listed)
    text = run("enrollment", "list", "--data-dir", str(data))
    assert "batch" in text.stdout and shared not in text.stdout
    assert run("enrollment", "revoke", "batch", "--data-dir", str(data)).exit_code == 0
    again = run("enrollment", "revoke", "batch", "--data-dir", str(data))
    assert again.exit_code == 1 and "no enrollment token batch" in again.stderr
    listed = json.loads(run("enrollment", "list", "-o", "json", "--data-dir", str(data)).stdout)
    assert listed[0]["state"] == "revoked"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ttl", "3 days"], "not a duration"),
        (["--labels", "site"], "not key=value"),
        (["--max-uses", "0"], "--max-uses"),
    ],
)
def test_enrollment_create_refuses_bad_options(data: Path, args: list[str], message: str) -> None:
    result = run("enrollment", "create", "batch", *args, "--data-dir", str(data))
    assert result.exit_code == 2 and message in result.output


def test_enrollment_create_writes_the_token_to_a_private_file(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "enroll-token"
    result = run("enrollment", "create", "batch", "-o", str(out), "--data-dir", str(data))
    assert result.exit_code == 0 and result.stdout == ""
    assert out.stat().st_mode & 0o777 == 0o600 and out.read_text().startswith("hde_")


def test_device_list_manifest_and_status_of_a_pending_device(data: Path) -> None:
    with Store.open(sqlite_url(data)) as store:
        make_token(store)
        request = wire.EnrollRequest(
            device="pi-9",
            system_model="Raspberry Pi 4 Model B",
            facts=wire.Facts(engine="docker", engine_version="20.10.24", disk_free_bytes=3 << 30),
        )
        store.enroll(tokens.hash_token(SHARED), request, tokens.hash_token("hdr_x"), NOW)
    listed = run("device", "list", "--pending", "--data-dir", str(data))
    assert listed.exit_code == 0, listed.output
    assert (
        "pi-9" in listed.stdout
        and "docker 20.10.24" in listed.stdout
        and "3.0 GiB" in listed.stdout
    )
    manifest = run("device", "manifest", "pi-9", "--data-dir", str(data))
    assert yaml.safe_load(manifest.stdout)["spec"] == {"systemModel": "Raspberry Pi 4 Model B"}
    missing = run("device", "manifest", "pi-8", "--data-dir", str(data))
    assert missing.exit_code == 1 and "has not enrolled" in missing.stderr
    shown = run("status", "--device", "pi-9", "--data-dir", str(data))
    assert shown.exit_code == 0, shown.output
    assert "Pending" in shown.stdout and "hedgerow device manifest pi-9" in shown.stdout
    as_json = json.loads(
        run("status", "--device", "pi-9", "-o", "json", "--data-dir", str(data)).stdout
    )
    assert as_json["condition"] == "Pending" and as_json["facts"]["diskFreeBytes"] == 3 << 30
    overall = run("status", "--data-dir", str(data))
    assert "1 device(s) enrolled, not admitted yet" in overall.stdout
    unknown = run("status", "--device", "pi-8", "--data-dir", str(data))
    assert (
        unknown.exit_code == 1 and "neither in the applied revision nor enrolled" in unknown.stderr
    )
