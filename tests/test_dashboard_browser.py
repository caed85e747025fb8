"""The dashboard in a real browser: Debian's chromium, driven by Playwright (no browser
download), against a real controller process following a git repository, with devices that
report over the device API. Screenshots of each page go under the test's output folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git
import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.demo.daemons import free_port
from reconciler.manifests.appsecrets import render_secret, secret_rule
from reconciler.manifests.credentials import DEFAULT_RULES, CreationRule, render_credential
from reconciler.secrets.secret import Secret
from reconciler.server.webhook import sign
from tests.support.e2e import healthy, wait
from tests.support.fleet import fleet_manifests
from tests.support.leaks import APP_SECRET, PLAINTEXT_SECRETS
from tests.support.repos import commit, write_tree
from tests.support.sops import make_key

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("git_identity")]
CHROMIUM = "/usr/bin/chromium"
LIVE_MS = 2000  # a commit, a report or a rollout step shows within 2 s, without a reload
OPERATOR = "hdr_dashboard-operator-token"
HOOK = b"dashboard-webhook-secret"
PASSWORD = PLAINTEXT_SECRETS[0]
WEB = "https://github.com/example/fleet"
# flags that keep chromium from calling home: this machine's network is closed
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def devices_yaml(count: int) -> str:
    return "".join(
        f"---\napiVersion: hedgerow.dev/v1alpha1\nkind: Device\nmetadata:\n  name: pi-{n}\n"
        f"  labels: {{site: {'lyon' if n % 2 else 'nantes'}}}\nspec: {{systemModel: rpi4}}\n"
        for n in range(1, count + 1)
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: tests/system-deps.sh installs Debian's chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = make_key()
        self.repo = git.Repo.init(root / "fleet", initial_branch="main")
        write_tree(Path(self.repo.working_dir), {})
        files = fleet_manifests("1.0.0", "registry.example:5000/web:1")
        files["device.yaml"] = devices_yaml(4)
        files["deployment.yaml"] = (
            "apiVersion: hedgerow.dev/v1alpha1\nkind: Deployment\nmetadata: {name: web-lyon}\n"
            "spec: {application: web, release: '1.0.0', selector: {matchLabels: {site: lyon}},"
            " state: Running}\n"
        )
        rule = CreationRule((self.key.recipient,), DEFAULT_RULES, "test")
        files["credentials/registry.yaml"] = render_credential(
            "registry", Secret("robot"), Secret(PASSWORD), "registry.example:5000", rule,
            now=datetime.now(UTC), file="credentials/registry.yaml",
        )  # fmt: skip
        for_secrets = secret_rule(CreationRule(rule.recipients, DEFAULT_RULES, "--age"))
        files["secrets/db.yaml"] = render_secret(
            "db", {"password": Secret(APP_SECRET)}, for_secrets, now=datetime.now(UTC),
            file="secrets/db.yaml",
        )  # fmt: skip
        files["releases/1.0.0.yaml"] = (
            files["releases/1.0.0.yaml"]
            .replace(
                "    image: registry.example:5000/web:1",
                "    image: registry.example:5000/web:1\n    imageCredential: registry",
            )
            .replace(
                '    env: {VERSION: "1.0.0"}',
                '    env: {VERSION: "1.0.0", DB_PASSWORD: {secretKeyRef: {secret: db, '
                "key: password}}}",
            )
        )
        commit(self.repo, "web 1.0.0 for lyon", files)
        self.data = root / "controller"
        (root / "age.key").write_text(self.key.secret + "\n")
        (root / "operator").write_text(OPERATOR + "\n")
        (root / "hook").write_bytes(HOOK)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (root / "controller.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "controller", "--repo", self.repo.working_dir,
             "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}",
             "--interval", "3600", "--webhook-secret-file", str(root / "hook"),
             "--age-key-file", str(root / "age.key"), "--operator-token-file",
             str(root / "operator"), "--repo-web-url", WEB],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        wait(lambda: healthy(self.url), "the controller")
        self.tokens = {}
        for n in (1, 2, 3):
            made = CliRunner().invoke(
                app, ["device", "token", f"pi-{n}", "--data-dir", str(self.data)]
            )
            self.tokens[f"pi-{n}"] = made.stdout.strip()

    def push(self, message: str, files: dict[str, str]) -> str:
        sha = commit(self.repo, message, files)
        body = json.dumps({"after": sha}).encode()
        headers = {"X-Hub-Signature-256": sign(HOOK, body)}
        assert httpx.post(f"{self.url}/v1/hooks/git", content=body, headers=headers).is_success
        return sha

    def report(
        self, device: str, release: str = "1.0.0", extra_releases: Sequence[Any] = (), **extra: Any
    ) -> None:
        """`device` runs `release` of web-lyon, Ready (and `extra_releases` besides)."""
        running = {
            "application": "web", "release": release, "deployment": "web-lyon", "running": True,
            "complete": True, "ready": True,
            "containers": [{"name": "server", "state": "running", "imagePresent": True,
                            "health": "healthy"}],
        }  # fmt: skip
        body = {
            "device": device,
            "releases": [*extra_releases, running],
            "facts": {"engine": "docker", "engineVersion": "20.10.24", "diskFreeBytes": 5 << 30},
            **extra,
        }
        answer = httpx.put(f"{self.url}/v1/devices/{device}/status", json=body,
                           headers={"Authorization": f"Bearer {self.tokens[device]}"})  # fmt: skip
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    started = Site(tmp_path)
    try:
        yield started
    finally:
        started.stop()
        print((tmp_path / "controller.log").read_text(errors="replace")[-3000:])


class Watched:
    """A page whose console errors are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def log_in(page: Page, url: str, token: str = OPERATOR) -> None:
    page.goto(f"{url}/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def shots(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HEDGEROW_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_log_in_see_every_page_without_console_errors_and_log_out(
    site: Site, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for device in ("pi-1", "pi-3"):
        site.report(device)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Watched(context.new_page())
    page = watched.page
    page.goto(f"{site.url}/")
    page.get_by_label("Token").fill("hdr_not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not a token this controller knows")
    watched.errors.clear()  # the refused login's 401
    log_in(page, site.url)
    cookie = next(c for c in context.cookies() if c["name"] == "hedgerow_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    folder = shots(request, tmp_path)
    pages = {
        "overview": "/",
        "devices": "/devices",
        "device": "/devices/pi-1",
        "deployment": "/deployments/web-lyon",
        "releases": "/releases",
        "events": "/events",
    }
    seen = ""
    for name, path in pages.items():
        page.goto(f"{site.url}{path}")
        expect(page.locator("main h1")).to_be_visible()
        page.screenshot(path=folder / f"{name}.png", full_page=True)
        seen += page.content()
    assert not watched.errors, watched.errors
    # what the pages say, and link to in git
    assert "pi-1" in seen and "registry.example:5000/web:1" in seen
    assert f'href="{WEB}/blob/' in seen and "/device.yaml#L" in seen
    assert "DB_PASSWORD" in seen and "Secret db/password, hidden" in seen
    # the planted registry password, Secret value and tokens: never in a page
    for secret in (PASSWORD, APP_SECRET, OPERATOR, *site.tokens.values()):
        assert secret not in seen
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.goto(f"{site.url}/devices")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    context.close()


def test_filters_narrow_the_devices_table(site: Site, browser: Browser) -> None:
    site.report("pi-1")
    page = browser.new_page()
    log_in(page, site.url)
    page.goto(f"{site.url}/devices")
    rows = page.locator("table.devices tbody th[scope=row]")
    expect(rows).to_have_count(4)
    page.get_by_label("Label").select_option("site=lyon")  # applies on change (script)
    expect(rows).to_have_text(["pi-1", "pi-3"])
    assert "label=site%3Dlyon" in page.url
    page.get_by_label("Name").fill("3")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_text(["pi-3"])
    page.goto(f"{site.url}/devices?condition=Offline&sort=-device")
    expect(rows).to_have_text(["pi-4", "pi-3", "pi-2"])
    page.close()


def test_a_commit_and_a_rejected_one_show_on_the_overview_without_a_reload(
    site: Site, browser: Browser
) -> None:
    page = browser.new_page()
    log_in(page, site.url)
    marker = page.evaluate("() => { window.stayed = true; return 1 }")
    assert marker == 1
    site.push("pi-5 joins lyon", {"device.yaml": devices_yaml(5)})
    expect(page.locator("main")).to_contain_text("pi-5 joins lyon", timeout=LIVE_MS)
    broken = (
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Device\n"
        "metadata: {name: Bad_Name}\nspec: {systemModel: rpi4}\n"
    )
    site.push("a broken device", {"broken.yaml": broken})
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("was rejected", timeout=LIVE_MS)
    expect(banner).to_contain_text("broken.yaml:3")
    assert page.evaluate("() => window.stayed") is True, "no reload"
    link = banner.locator("a").first
    assert (link.get_attribute("href") or "").startswith(f"{WEB}/blob/")
    page.close()


def test_a_device_report_shows_on_its_page_without_a_reload(site: Site, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, site.url)
    page.goto(f"{site.url}/devices/pi-3")
    expect(page.locator("main h1")).to_contain_text("Offline")
    site.report("pi-3", events=[{"seq": 1, "at": datetime.now(UTC).isoformat(),
                                 "kind": "started", "message": "server started",
                                 "deployment": "web-lyon"}], epoch="journal-1")  # fmt: skip
    expect(page.locator("main")).to_contain_text("server started", timeout=LIVE_MS)
    expect(page.locator("main")).to_contain_text("docker 20.10.24")
    page.close()


def test_the_pages_fit_a_phone(site: Site, browser: Browser, request: pytest.FixtureRequest,
                              tmp_path: Path) -> None:  # fmt: skip
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    log_in(page, site.url)
    for path in ("/", "/devices"):
        page.goto(f"{site.url}{path}")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways ({width}px)"
    page.screenshot(path=shots(request, tmp_path) / "devices-phone.png", full_page=True)
    context.close()


def test_chromium_is_debians(browser: Browser) -> None:
    assert shutil.which("chromium") == CHROMIUM and browser.version


AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"


def test_every_page_passes_axe_core(site: Site, browser: Browser) -> None:
    """Deque's axe-core (vendored) on every page, WCAG 2 A and AA rules (contrast included).
    The pages' CSP allows only their own scripts: this context bypasses it to inject axe."""
    for device in ("pi-1", "pi-3"):
        site.report(device)
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.goto(f"{site.url}/")
    found = {"login": _axe(page)}
    log_in(page, site.url)
    for path in ("/", "/devices", "/devices/pi-1", "/deployments/web-lyon", "/releases",
                 "/events", "/devices?label=site%3Dlyon"):  # fmt: skip
        page.goto(f"{site.url}{path}")
        found[path] = _axe(page)
    context.close()
    assert not any(found.values()), {page: v for page, v in found.items() if v}


def _axe(page: Page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
    ]


ROLLOUT = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Deployment
metadata: {name: web-lyon}
spec:
  application: web
  release: "RELEASE"
  selector: {matchLabels: {site: lyon}}
  state: Running
  readiness: {minReadySeconds: 0, progressDeadlineSeconds: 600}
  rollout:
    waves:
      - name: canary
        selector: {matchLabels: {ring: canary}}
      - name: rest
    maxInFlight: 1
"""


def start_rollout(site: Site) -> str:
    """web-lyon in two waves (canary: pi-1; rest: pi-3), both devices Ready on 1.0.0, then
    a commit of 1.1.0 that starts the rollout; that commit's sha."""
    labelled = "name: pi-1\n  labels: {site: lyon, ring: canary}"
    devices = devices_yaml(4).replace("name: pi-1\n  labels: {site: lyon}", labelled)
    first = ROLLOUT.replace("RELEASE", "1.0.0")
    site.push("waves for web-lyon", {"device.yaml": devices, "deployment.yaml": first})
    for device in ("pi-1", "pi-3"):
        site.report(device)
    release = Path(site.repo.working_dir, "releases/1.0.0.yaml").read_text()
    return site.push("web 1.1.0", {
        "releases/1.1.0.yaml": release.replace("1-0-0", "1-1-0").replace('"1.0.0"', '"1.1.0"'),
        "deployment.yaml": ROLLOUT.replace("RELEASE", "1.1.0"),
    })  # fmt: skip


def test_a_rollout_moves_on_its_page_as_devices_report(
    site: Site, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    start_rollout(site)
    context = browser.new_context(bypass_csp=True)  # for axe, injected below
    watched = Watched(context.new_page())
    page = watched.page
    log_in(page, site.url)
    page.goto(f"{site.url}/rollouts/web-lyon")
    waves = page.get_by_role("table", name="Waves")
    canary = waves.get_by_role("row", name="canary")
    expect(canary).to_contain_text("1 Progressing")
    expect(page.locator("main h1")).to_contain_text("1.0.0 → 1.1.0")
    site.report("pi-1", "1.1.0")  # the canary runs the new release, Ready
    expect(canary).to_contain_text("1 Succeeded", timeout=LIVE_MS)
    expect(waves.get_by_role("row", name="rest")).to_contain_text("1 Progressing")
    expect(canary).to_contain_text("pi-1 Succeeded")
    expect(waves.get_by_role("row", name="rest")).to_contain_text("pi-3 Progressing")
    page.screenshot(path=shots(request, tmp_path) / "rollout.png", full_page=True)
    for secret in (PASSWORD, APP_SECRET, OPERATOR, *site.tokens.values()):
        assert secret not in page.content()
    assert not watched.errors, watched.errors
    assert page.locator("progress").first.get_attribute("value") == "1"
    assert not _axe(page)
    context.close()


def test_a_failed_canary_halts_with_its_reason_and_log_lines(site: Site, browser: Browser) -> None:
    sha = start_rollout(site)
    page = browser.new_page()
    log_in(page, site.url)
    page.goto(f"{site.url}/rollouts/web-lyon")
    expect(page.locator("main h1")).to_contain_text("1.0.0 → 1.1.0")
    switched_back = {
        "application": "web", "release": "1.1.0", "deployment": "web-lyon", "running": False,
        "complete": True, "error": "not Ready within 600s: switched back",
        "degraded": {"reason": "server is unhealthy", "container": "server",
                     "health": "connection refused", "log": ["starting", "panic: no database"]},
    }  # fmt: skip
    site.report("pi-1", extra_releases=[switched_back])
    failed = page.get_by_role("table", name="Failed devices")
    expect(failed).to_contain_text("server is unhealthy", timeout=LIVE_MS)
    expect(failed).to_contain_text("panic: no database")
    expect(page.locator("main")).to_contain_text("Halted")
    expect(page.locator("main")).to_contain_text(sha[:12])
    page.close()


def test_a_live_update_never_takes_what_someone_is_typing(site: Site, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, site.url)
    page.goto(f"{site.url}/devices")
    name = page.get_by_label("Name")
    name.fill("pi-")
    site.report("pi-1")  # the fleet moves while they type: the page waits for them
    page.wait_for_timeout(1500)
    expect(name).to_have_value("pi-")
    expect(name).to_be_focused()
    page.locator("main h1").click()  # they leave the form: the page catches up
    expect(page.locator("table.devices")).to_contain_text("docker 20.10.24", timeout=LIVE_MS)
    page.close()


def test_the_keyboard_reaches_the_content_and_the_filters(site: Site, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, site.url)
    page.goto(f"{site.url}/devices")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("4")
    page.keyboard.press("Enter")  # the form submits from the keyboard
    expect(page.locator("table.devices tbody th[scope=row]")).to_have_text(["pi-4"])
    page.close()
