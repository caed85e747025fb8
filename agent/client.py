"""The agent's side of the device API: fetch the desired document, send status reports.

Conditional and long-polling GETs keep an idle fleet cheap: a device that is up to date costs the
controller one 304 per poll. Errors are raised as `ControllerUnreachable`; the loop decides how
to back off. It uses requests, which the docker SDK already loads: one HTTP stack on the device.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec
import requests

from reconciler.errors import HedgerowError
from reconciler.wire import DesiredDocument, StatusReport


class ControllerUnreachable(HedgerowError):
    """The controller could not be asked; the last desired state stays in force."""


class ReportConflict(HedgerowError):
    """The controller holds other events under numbers of this report's journal (409)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    document: DesiredDocument | None  # None: not modified since `etag`
    etag: str | None


class ControllerClient:
    """The device API for one device. `verify` is the CA file to trust (True: the public CAs
    requests ships); `proxy` an `http(s)://` proxy URL, used only when given."""

    def __init__(
        self,
        url: str,
        device: str,
        token: str,
        *,
        verify: bool | str = True,
        proxy: str | None = None,
    ) -> None:
        self.device = device
        self._base = url.rstrip("/")
        self._http = requests.Session()
        # Trust and routing are what the flags say: the environment's REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE would replace --ca-file, its HTTPS_PROXY would see every poll, and a
        # ~/.netrc entry would replace the token. Each request names its CA and proxy itself.
        self._http.trust_env = False
        self._http.headers["Authorization"] = f"Bearer {token}"
        self._verify = verify
        self._proxies = {"http": proxy, "https": proxy} if proxy else {}
        self._timeout = (10.0, 75.0)  # connect, read: a long poll holds up to 60 s

    def close(self) -> None:
        self._http.close()

    def desired(self, etag: str | None, wait: float = 0) -> Fetched:
        headers = {"If-None-Match": etag} if etag else {}
        params = {"wait": str(int(wait))} if wait > 0 else {}
        try:
            response = self._http.get(
                f"{self._base}/v1/devices/{self.device}/desired",
                headers=headers,
                params=params,
                timeout=self._timeout,
                verify=self._verify,
                proxies=self._proxies,
            )
        except requests.RequestException as exc:
            raise ControllerUnreachable(
                f"cannot reach the controller: {type(exc).__name__}"
            ) from None
        if response.status_code == 304:
            return Fetched(None, etag)
        if response.status_code != 200:
            raise ControllerUnreachable(f"controller answered {response.status_code}")
        document = msgspec.json.decode(response.content, type=DesiredDocument)
        return Fetched(document, response.headers.get("etag"))

    def report(self, report: StatusReport) -> int | None:
        """Send a report; the controller's highest stored event number, for trimming."""
        try:
            response = self._http.put(
                f"{self._base}/v1/devices/{self.device}/status",
                data=msgspec.json.encode(report),
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
                verify=self._verify,
                proxies=self._proxies,
            )
        except requests.RequestException as exc:
            raise ControllerUnreachable(
                f"cannot reach the controller: {type(exc).__name__}"
            ) from None
        if response.status_code == 409:
            raise ReportConflict(_detail(response))
        if response.status_code != 200:
            raise ControllerUnreachable(
                f"controller answered {response.status_code}: {_detail(response)}"
            )
        last = response.json().get("lastSeq")
        return int(last) if last is not None else None


def _detail(response: requests.Response) -> str:
    """The controller's reason (`{"detail": ...}`), clipped; it never holds a secret."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:500] if detail else response.reason or "no reason given"


def backoff(failures: int, interval: float, rng: random.Random, base: float = 1.0) -> float:
    """Exponential backoff capped at the poll interval, with full jitter against herds."""
    ceiling = min(interval, base * 2 ** min(failures, 30))
    return rng.uniform(ceiling / 2, ceiling)
