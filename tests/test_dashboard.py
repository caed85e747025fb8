"""The dashboard without a browser: its pure model (conditions, the devices table's query,
pages and sorting, links to git), its sessions (signed, ended by logout or by the token's
revocation, never holding a token), a prefix, and pages readable without JavaScript."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from reconciler import wire
from reconciler.core.enrollment import EnrollmentToken
from reconciler.core.status import ConditionType, DeploymentStatus, condition
from reconciler.secrets import tokens
from reconciler.server.app import Dashboard, create_app
from reconciler.server.auth import OperatorAuth
from reconciler.server.dashboard.data import Links
from reconciler.server.dashboard.fleet import Activity
from reconciler.server.dashboard.model import (
    DeviceQuery,
    DeviceRow,
    counts,
    device_condition,
    forge_of,
    select,
    source_link,
)
from reconciler.server.dashboard.sessions import Sessions
from reconciler.store import EventIn, Store, sqlite_url
from tests.test_api import OPERATOR, Env, env

__all__ = ["env"]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def status(ready: bool = True, degraded: bool = False) -> DeploymentStatus:
    return DeploymentStatus(
        deployment="web",
        device="pi-1",
        application="web",
        desired_release="1.0.0",
        observed_release="1.0.0",
        desired_state="Running",
        observed_state="Running",
        revision="abc",
        conditions=(
            condition(ConditionType.READY, ready, "R", "", "abc"),
            condition(ConditionType.PROGRESSING, not ready, "P", "", "abc"),
            condition(ConditionType.DEGRADED, degraded, "D", "", "abc"),
        ),
    )


@pytest.mark.parametrize(
    ("pending", "statuses", "seen", "expected"),
    [
        (True, [], None, "Pending"),
        (False, [status()], None, "Offline"),
        (False, [status()], NOW - timedelta(seconds=91), "Offline"),
        (False, [status(), status(ready=False, degraded=True)], NOW, "Degraded"),
        (False, [status(), status(ready=False)], NOW, "Progressing"),
        (False, [status()], NOW - timedelta(seconds=90), "Ready"),
        (False, [], NOW, "Ready"),
    ],
)
def test_one_condition_per_device(
    pending: bool, statuses: list[DeploymentStatus], seen: datetime | None, expected: str
) -> None:
    assert device_condition(pending, statuses, seen, NOW, 90.0) == expected


def rows() -> list[DeviceRow]:
    made = []
    for n in range(1, 121):
        made.append(
            DeviceRow(
                device=f"d-{n:03d}",
                condition="Degraded" if n % 10 == 0 else "Ready",
                labels={"site": "lyon" if n % 2 else "nantes", "ring": "canary" if n < 4 else "b"},
                system_model="rpi4" if n % 3 else "orin",
                applications=("web",) if n % 4 else (),
                disk_free=n * 1000,
                last_seen=NOW - timedelta(seconds=n),
            )
        )
    return made


def test_filters_combine_and_pages_count_what_matches() -> None:
    query = DeviceQuery.parse({"label": ["site=lyon"], "model": "rpi4", "perPage": "10"})
    page = select(rows(), query)
    expected = [r for r in rows() if r.labels["site"] == "lyon" and r.system_model == "rpi4"]
    assert page.total == len(expected) == 40 and page.pages == 4
    assert [r.device for r in page.rows] == [r.device for r in expected[:10]]
    third = select(rows(), DeviceQuery.parse({"label": ["site=lyon"], "model": "rpi4",
                                              "perPage": "10", "page": "3"}))  # fmt: skip
    assert [r.device for r in third.rows] == [r.device for r in expected[20:30]]
    both = DeviceQuery.parse({"label": ["site=lyon", "ring=canary"]})
    assert [r.device for r in select(rows(), both).rows] == ["d-001", "d-003"]
    assert select(rows(), DeviceQuery.parse({"condition": "Degraded"})).total == 12
    assert select(rows(), DeviceQuery.parse({"application": "web"})).total == 90
    assert [r.device for r in select(rows(), DeviceQuery.parse({"q": "D-11"})).rows] == [
        f"d-11{n}" for n in range(10)
    ]


def test_sorting_by_each_column_both_ways() -> None:
    def order(sort: str) -> list[str]:
        return [r.device for r in select(rows(), DeviceQuery.parse({"sort": sort})).rows]

    assert order("device")[:2] == ["d-001", "d-002"]
    assert order("-device")[:2] == ["d-120", "d-119"]
    assert order("-freeDisk")[0] == "d-120" and order("freeDisk")[0] == "d-001"
    assert order("lastSeen")[0] == "d-120", "the longest unseen first"
    assert order("condition")[:2] == ["d-010", "d-020"], "Degraded first"
    assert order("model")[0] == "d-003"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"label": ["site"]}, "label: 'site' is not key=value"),
        ({"condition": "Broken"}, "condition: one of Ready"),
        ({"sort": "name"}, "sort: one of device"),
        ({"page": "0"}, "page: a whole number from 1"),
        ({"perPage": "501"}, "perPage: a whole number from 1 to 500"),
        ({"page": "x"}, "page"),
    ],
)
def test_a_bad_query_is_refused_naming_its_parameter(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceQuery.parse(params)


def test_a_query_round_trips_through_its_url() -> None:
    query = DeviceQuery.parse({"label": ["site=lyon"], "q": "pi", "sort": "-lastSeen"})
    params = query.to_params(page=3)
    again: dict[str, Any] = {"label": [v for k, v in params if k == "label"]}
    again.update({k: v for k, v in params if k != "label"})
    assert DeviceQuery.parse(again) == DeviceQuery.parse({**again, "page": "3"})
    assert ("page", "3") in params and ("sort", "-lastSeen") in params


def test_counts_name_every_condition() -> None:
    assert counts(rows()) == {"Ready": 108, "Progressing": 0, "Degraded": 12, "Offline": 0,
                              "Pending": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("base", "forge", "link"),
    [
        ("https://github.com/org/fleet", "github",
         "https://github.com/org/fleet/blob/abc/devices/pi%201.yaml#L7"),
        ("https://gitlab.example.com/org/fleet/", "gitlab",
         "https://gitlab.example.com/org/fleet/-/blob/abc/devices/pi%201.yaml#L7"),
        ("https://codeberg.org/org/fleet", "gitea",
         "https://codeberg.org/org/fleet/src/commit/abc/devices/pi%201.yaml#L7"),
    ],
)  # fmt: skip
def test_links_to_a_file_and_line_in_each_forge(base: str, forge: str, link: str) -> None:
    assert forge_of(base) == forge
    assert source_link(base, forge, "abc", "devices/pi 1.yaml", 7) == link
    assert source_link(None, forge, "abc", "x.yaml", 1) is None
    assert source_link(base, forge, "abc", None, 1) is None


# -- sessions ------------------------------------------------------------------------------------


def test_a_session_never_holds_its_token_and_ends_with_it(tmp_path: Path) -> None:
    with Store.open(sqlite_url(tmp_path)) as store:
        store.create_viewer_token("ann", tokens.hash_token("hdr_ann"), NOW)
        auth = OperatorAuth(OPERATOR, store, refresh=0)
        sessions = Sessions(b"k" * 32, auth)
        assert asyncio.run(sessions.login("hdr_nobody")) is None
        made = asyncio.run(sessions.login("hdr_ann"))
        assert made is not None
        session, cookie = made
        assert session.who == "viewer ann" and "hdr_ann" not in cookie
        assert tokens.hash_token("hdr_ann") not in cookie
        assert asyncio.run(sessions.session(cookie)) == session
        assert asyncio.run(sessions.session(cookie[:-2] + "xx")) is None, "tampered"
        other = Sessions(b"j" * 32, auth)
        assert asyncio.run(other.session(cookie)) is None, "another key"
        store.revoke_viewer_token("ann")
        assert asyncio.run(sessions.session(cookie)) is None, "its token was revoked"
        made = asyncio.run(sessions.login(OPERATOR))
        assert made is not None
        operator, cookie = made
        other_replica = Sessions(b"k" * 32, auth, refresh=0)
        assert asyncio.run(other_replica.session(cookie)) == operator
        asyncio.run(sessions.end(operator))
        assert asyncio.run(sessions.session(cookie)) is None, "logged out"
        assert asyncio.run(other_replica.session(cookie)) is None, "on every replica"
        expiring = Sessions(b"k" * 32, auth, max_age=-1)
        made = asyncio.run(expiring.login(OPERATOR))
        assert made is not None and asyncio.run(expiring.session(made[1])) is None, "expired"


def test_under_a_prefix_without_javascript(env: Env) -> None:
    env.controller.sync()
    settings = Dashboard(prefix="/ui", links=Links("https://github.com/o/f"))
    app = create_app(env.runner, webhook_secret=None, operator_token=OPERATOR, dashboard=settings)
    client = TestClient(app)
    away = client.get("/ui/devices?label=site%3Dlyon", follow_redirects=False)
    assert away.status_code == 303
    # the query as the browser sent it (site%3Dlyon), quoted once more as a parameter
    assert away.headers["location"] == "/ui/login?next=%2Fui%2Fdevices%3Flabel%3Dsite%253Dlyon"
    assert client.get("/devices", follow_redirects=False).status_code == 404
    hijack = client.post("/ui/login", data={"token": OPERATOR, "next": "https://evil.example/"},
                         follow_redirects=False)  # fmt: skip
    assert hijack.headers["location"] == "/ui/"
    login = client.post("/ui/login", data={"token": OPERATOR, "next": "/ui/devices?q=pi"},
                        follow_redirects=False)  # fmt: skip
    assert login.status_code == 303 and login.headers["location"] == "/ui/devices?q=pi"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie, "plain HTTP here; Secure under TLS"
    page = client.get("/ui/devices?label=site%3Dlyon")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # readable without JavaScript: the rows are in the HTML, the filter form has a button
    assert '<a href="/ui/devices/pi-1">pi-1</a>' in page.text and "pi-2" not in page.text
    assert '<button type="submit">Filter</button>' in page.text
    assert 'href="https://github.com/o/f/blob/' in client.get("/ui/devices/pi-1").text
    bad = client.get("/ui/devices?sort=nope")
    assert bad.status_code == 422 and "sort: one of" in bad.text
    assert client.get("/ui/devices/nobody").status_code == 404
    logout = client.post("/ui/logout", follow_redirects=False)
    assert logout.headers["location"] == "/ui/login"
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_the_json_api_answers_what_the_pages_show(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app)
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    page = client.get("/v1/devices?label=site%3Dlyon&sort=-device", headers=auth).json()
    assert [d["device"] for d in page["devices"]] == ["pi-1"] and page["total"] == 1
    assert client.get("/v1/devices?sort=nope", headers=auth).status_code == 422
    device = client.get("/v1/devices/pi-1", headers=auth).json()
    assert device["deployments"][0]["deployment"] == "web-lyon"
    assert client.get("/v1/devices/nobody", headers=auth).status_code == 404
    deployment = client.get("/v1/deployments/web-lyon", headers=auth).json()
    server, _ = deployment["containers"]
    assert server["env"] == [{"name": "PORT", "value": "8080"}]
    assert [n["network"] for n in server["networks"]] == ["front"]
    assert (server["memory"], server["cpus"]) == (64 * 1024 * 1024, None)
    assert server["volumes"] == [
        {"volume": "data", "target": "/data", "readOnly": False, "driver": "local"}
    ]
    overview = client.get("/v1/overview", headers=auth).json()
    assert overview["applied"]["revision"] == env.repo.head.commit.hexsha
    assert overview["total"] == 2
    releases = client.get("/v1/releases", headers=auth).json()
    assert releases["applications"][0]["releases"][0]["devices"] == ["pi-1"]
    assert client.get("/v1/overview").status_code == 401


def test_the_session_cookie_is_secure_under_tls(env: Env) -> None:
    env.controller.sync()
    client = TestClient(env.app, base_url="https://hedgerow.test")
    login = client.post("/login", data={"token": OPERATOR}, follow_redirects=False)
    assert login.status_code == 303 and "Secure" in login.headers["set-cookie"]


def test_events_newest_first_filtered_and_paged(env: Env) -> None:
    env.controller.sync()
    at = datetime.now(UTC)
    env.store.append_events(
        [EventIn(at, device, kind, f"{kind} on {device}", "web-lyon")
         for device in ("pi-1", "pi-2") for kind in ("deploy", "start")]
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    client = TestClient(env.app)
    oldest_first = client.get("/v1/events", headers=auth).json()
    newest = client.get("/v1/events?order=desc&limit=2", headers=auth).json()
    assert [e["id"] for e in newest] == [e["id"] for e in oldest_first][::-1][:2]
    older = client.get(f"/v1/events?before={newest[-1]['id']}&limit=2", headers=auth).json()
    assert all(e["id"] < newest[-1]["id"] for e in older)
    mine = client.get("/v1/events?order=desc&device=pi-1&event=deploy", headers=auth).json()
    assert mine and {(e["device"], e["event"]) for e in mine} == {("pi-1", "deploy")}
    client.post("/login", data={"token": OPERATOR})
    page = client.get("/events?device=pi-1&event=deploy")
    assert page.status_code == 200 and "deploy on pi-1" in page.text
    assert "start on pi-1" not in page.text and "deploy on pi-2" not in page.text
    assert client.get("/events?before=x").status_code == 422


def test_the_store_reads_one_device_or_one_deployment_alone(tmp_path: Path) -> None:
    """What a device's or a deployment's page reads: its own rows, not the fleet's."""
    with Store.open(sqlite_url(tmp_path)) as store:
        for device in ("pi-1", "pi-2"):
            for deployment in ("web", "db"):
                store.put_status(
                    msgspec.structs.replace(status(), device=device, deployment=deployment)
                )
        mine = store.statuses(device="pi-2")
        assert [(s.deployment, s.device) for s in mine] == [("db", "pi-2"), ("web", "pi-2")]
        web = store.statuses(deployment="web")
        assert [(s.deployment, s.device) for s in web] == [("web", "pi-1"), ("web", "pi-2")]
        assert len(store.statuses()) == 4
        token = EnrollmentToken("batch", {"site": "lyon"}, NOW)
        store.create_enrollment_token(token, tokens.hash_token("hde_batch"))
        for device in ("pi-8", "pi-9"):
            asked = wire.EnrollRequest(device=device, system_model="rpi4",
                                       facts=wire.Facts(kernel=device))  # fmt: skip
            store.enroll(tokens.hash_token("hde_batch"), asked, tokens.hash_token(device), NOW)
        (one,) = store.inventory(["pi-9"])
        assert (one.device, one.pending, one.facts) == ("pi-9", True, wire.Facts(kernel="pi-9"))
        assert [i.device for i in store.inventory()] == ["pi-8", "pi-9"]
        assert store.inventory(["nobody"]) == []


def test_every_open_page_shares_one_read_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    with Store.open(sqlite_url(tmp_path)) as store:
        reads: list[int] = []
        real = store.activity

        def counted() -> tuple[object, ...]:
            reads.append(1)
            return real()

        monkeypatch.setattr(store, "activity", counted)
        activity = Activity(store, 0.5, clock=lambda: clock[0])

        async def pages(count: int) -> set[str]:
            return set(await asyncio.gather(*(activity.version() for _ in range(count))))

        assert len(asyncio.run(pages(20))) == 1 and len(reads) == 1
        clock[0] = 0.4
        asyncio.run(pages(5))
        assert len(reads) == 1, "read less than every 0.5 s"
        store.append_events([EventIn(NOW, "pi-1", "deploy", "new", "web")])
        clock[0] = 0.5
        (moved,) = asyncio.run(pages(5))
        assert len(reads) == 2 and json.loads(moved)[0] == 1
