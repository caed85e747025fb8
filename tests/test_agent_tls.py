"""The agent trusts what its flags say: `--ca-file`, never a CA bundle or a proxy named by the
environment. Real HTTPS servers on 127.0.0.1 with two unrelated self-signed certificates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.client import ControllerClient, ControllerUnreachable
from agent.main import parser
from reconciler.cli.app import app
from reconciler.wire import StatusReport
from tests.support.tls import connect_proxy, https_server, self_signed

TOKEN = "hdr_agent-tls-test-token"
# The variables requests (and curl) read a CA bundle from; unset, one, the other, both.
ENVIRONMENTS = [(), ("REQUESTS_CA_BUNDLE",), ("CURL_CA_BUNDLE",),
                ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")]  # fmt: skip


@dataclass
class Servers:
    ca_file: Path  # certificate A: what --ca-file names
    good: str  # presents A
    good_seen: list[tuple[str, str, str]]
    other: str  # presents B, which the environment names
    other_seen: list[tuple[str, str, str]]


@pytest.fixture(params=ENVIRONMENTS, ids=lambda names: "+".join(names) or "no-env")
def servers(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Servers]:
    cert_a, key_a = self_signed(tmp_path, "a")
    cert_b, key_b = self_signed(tmp_path, "b")
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in request.param:
        monkeypatch.setenv(name, str(cert_b))
    with (
        https_server(cert_a, key_a) as (good, good_seen),
        https_server(cert_b, key_b) as (
            other,
            other_seen,
        ),
    ):
        yield Servers(cert_a, good, good_seen, other, other_seen)


def client(url: str | list[str], ca_file: Path, proxy: str | None = None) -> ControllerClient:
    """The agent's client, built as `hedgerow-agent --ca-file` builds it."""
    return ControllerClient(url, "pi-1", TOKEN, verify=str(ca_file), proxy=proxy)


def test_a_server_the_ca_file_does_not_name_gets_nothing(servers: Servers) -> None:
    refused = client(servers.other, servers.ca_file)
    try:
        with pytest.raises(ControllerUnreachable, match="SSLError"):
            refused.desired(None)
        with pytest.raises(ControllerUnreachable, match="SSLError"):
            refused.report(StatusReport(device="pi-1"))
    finally:
        refused.close()
    assert servers.other_seen == []  # no request, so no token, ever reached it


def test_the_server_the_ca_file_names_is_trusted(servers: Servers) -> None:
    trusted = client(servers.good, servers.ca_file)
    try:
        fetched = trusted.desired("etag-1")
        trusted.report(StatusReport(device="pi-1"))
    finally:
        trusted.close()
    assert fetched.document is None and fetched.etag == "etag-1"  # 304
    assert [(method, auth) for method, _, auth in servers.good_seen] == [
        ("GET", f"Bearer {TOKEN}"),
        ("PUT", f"Bearer {TOKEN}"),
    ]


def test_a_proxy_from_the_environment_is_not_used(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    with connect_proxy() as (proxy, targets):
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.setenv("https_proxy", proxy)
        trusted = client(servers.good, servers.ca_file)
        try:
            trusted.desired(None)
        finally:
            trusted.close()
    assert targets == [] and len(servers.good_seen) == 1


def test_an_explicit_proxy_tunnels_and_the_ca_file_still_decides(servers: Servers) -> None:
    with connect_proxy() as (proxy, targets):
        through = client(servers.good, servers.ca_file, proxy=proxy)
        refused = client(servers.other, servers.ca_file, proxy=proxy)
        try:
            through.desired(None)
            with pytest.raises(ControllerUnreachable, match="SSLError"):
                refused.desired(None)
        finally:
            through.close()
            refused.close()
    hosts = [url.removeprefix("https://") for url in (servers.good, servers.other)]
    assert targets == [f"CONNECT {host}" for host in hosts]
    assert len(servers.good_seen) == 1 and servers.other_seen == []


def test_the_ca_file_and_the_proxy_apply_to_every_controller_url(servers: Servers) -> None:
    """Replicas: the first is refused by the CA file (before any token is sent), the agent
    moves to the next, through the same proxy, trusting the same CA."""
    with connect_proxy() as (proxy, targets):
        replicas = client([servers.other, servers.good], servers.ca_file, proxy=proxy)
        try:
            fetched = replicas.desired("etag-1")
            replicas.report(StatusReport(device="pi-1"))
        finally:
            replicas.close()
    assert fetched.document is None and replicas.current == servers.good
    other, good = (
        f"CONNECT {url.removeprefix('https://')}" for url in (servers.other, servers.good)
    )
    assert targets[0] == other and set(targets[1:]) == {good}  # a tunnel a request: HTTP/1.0
    assert servers.other_seen == [] and [m for m, _, _ in servers.good_seen] == ["GET", "PUT"]


def test_the_agent_takes_a_proxy_url_and_refuses_other_schemes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    required = ["--controller", "https://c:8080", "--device", "pi-1", "--token-file", "t"]
    args = parser().parse_args([*required, "--proxy", "http://proxy.example:3128"])
    assert args.proxy == "http://proxy.example:3128"
    assert parser().parse_args(required).proxy is None
    with pytest.raises(SystemExit) as exited:
        parser().parse_args([*required, "--proxy", "socks5://user:s3cret@proxy.example"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "http:// or https://" in error and "s3cret" not in error


def test_hedgerow_agent_refuses_a_proxy_that_is_no_http_url(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    result = CliRunner().invoke(
        app,
        ["agent", "--controller", "https://c:8080", "--device", "pi-1",
         "--token-file", str(token), "--proxy", "ftp://user:s3cret@proxy.example"],
    )  # fmt: skip
    assert result.exit_code == 2 and "http:// or https://" in result.stderr
    assert "s3cret" not in result.output
