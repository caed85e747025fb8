"""The agent's side of the device API: fetch the desired document, send status reports.

Conditional and long-polling GETs keep an idle fleet cheap: a device that is up to date costs the
controller one 304 per poll. Errors are raised as `ControllerUnreachable`; the loop decides how
to back off. It uses requests, which the docker SDK already loads: one HTTP stack on the device.

Given several controller URLs (replicas on one database), a request that finds no answer (no
connection, a timeout, a 5xx) is sent again at once to the next URL (`agent.controllers`), and
the error reaches the loop only when every URL has failed in a row. A 4xx is an answer: every
replica would give it, so it is raised as it is.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import requests

from agent.controllers import Controllers
from reconciler.errors import HedgerowError
from reconciler.logs import get_logger
from reconciler.wire import DesiredDocument, Enrolled, EnrollRequest, StatusReport

log = get_logger("hedgerow.agent")
T = TypeVar("T")


class ControllerUnreachable(HedgerowError):
    """The controller could not be asked, or refused; the last desired state stays in force.

    `status` is the HTTP status it answered (None: no answer at all). Only no answer or a 5xx
    sends the request to another replica: a 4xx would be the same on every one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def elsewhere(self) -> bool:
        """Another replica may answer: this one could not be reached, or failed (5xx)."""
        return self.status is None or self.status >= 500


class EnrollmentRefused(ControllerUnreachable):
    """The controller refused an enrollment (4xx): `detail` says why, `retry_after` how long
    to wait when it was a rate limit (429)."""

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class ReportConflict(HedgerowError):
    """The controller holds other events under numbers of this report's journal (409)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    document: DesiredDocument | None  # None: not modified since `etag`
    etag: str | None


class ControllerClient:
    """The device API for one device, at one controller URL or several (replicas, in the order
    to try them). `verify` is the CA file to trust (True: the public CAs requests ships) and
    `proxy` an `http(s)://` proxy URL, used only when given: both apply to every URL."""

    def __init__(
        self,
        url: str | Sequence[str],
        device: str,
        token: str,
        *,
        verify: bool | str = True,
        proxy: str | None = None,
    ) -> None:
        self.device = device
        urls = [url] if isinstance(url, str) else list(url)
        self.controllers = Controllers([u.rstrip("/") for u in urls])
        self._lock = threading.Lock()  # the poll loop and a Docker event's report share it
        self._http = requests.Session()
        # Trust and routing are what the flags say: the environment's REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE would replace --ca-file, its HTTPS_PROXY would see every poll, and a
        # ~/.netrc entry would replace the token. Each request names its CA and proxy itself.
        self._http.trust_env = False
        self._http.headers["Authorization"] = f"Bearer {token}"
        self._verify = verify
        self._proxies = {"http": proxy, "https": proxy} if proxy else {}
        self._timeout = (10.0, 75.0)  # connect, read: a long poll holds up to 60 s

    @property
    def current(self) -> str:
        """The controller URL the next request goes to."""
        with self._lock:
            return self.controllers.current

    def close(self) -> None:
        self._http.close()

    def desired(self, etag: str | None, wait: float = 0) -> Fetched:
        """The document, or None when it is still `etag`: the same bytes on every replica, so
        the ETag stays good after a switch."""
        return self._failover(lambda base: self._desired(base, etag, wait))

    def report(self, report: StatusReport) -> int | None:
        """Send a report; the controller's highest stored event number, for trimming.

        Sent again to the next replica when one cannot answer: its events keep their numbers in
        their journal's epoch, so a report that did reach the first one is counted once."""
        return self._failover(lambda base: self._report(base, report))

    def enroll(self, request: EnrollRequest) -> Enrolled:
        """Enroll with the enrollment token this client was made with (`POST /v1/enroll`):
        the device's own token. EnrollmentRefused for a refusal (4xx)."""
        return self._failover(lambda base: self._enroll(base, request))

    def _enroll(self, base: str, request: EnrollRequest) -> Enrolled:
        response = self._send("POST", f"{base}/v1/enroll", json_body=msgspec.json.encode(request))
        if response.status_code == 201:
            return msgspec.json.decode(response.content, type=Enrolled)
        message = f"controller answered {response.status_code}: {_detail(response)}"
        if 400 <= response.status_code < 500:
            retry = response.headers.get("Retry-After", "")
            wait = float(retry) if retry.isdigit() else None
            raise EnrollmentRefused(message, response.status_code, wait)
        raise ControllerUnreachable(message, response.status_code)

    def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request with this client's CA, proxy and timeouts; ControllerUnreachable when
        no answer comes (the error's type only: its text may hold the URL's details)."""
        if json_body is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            return self._http.request(
                method,
                url,
                data=json_body,
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

    def _failover(self, request: Callable[[str], T]) -> T:
        """`request` on the current URL, then on the next ones while they cannot answer; the
        error is raised once every URL has failed in a row (the loop then backs off)."""
        error: ControllerUnreachable | None = None
        for _ in range(len(self.controllers.urls)):
            with self._lock:
                base = self.controllers.current
            try:
                result = request(base)
            except ReportConflict:
                with self._lock:
                    self.controllers.succeeded(base)  # it answered: the loop renumbers
                raise
            except ControllerUnreachable as exc:
                if not exc.elsewhere:
                    with self._lock:
                        self.controllers.succeeded(base)  # it answered, with a refusal
                    raise
                with self._lock:
                    failover = self.controllers.failed(base)
                if failover.switched:
                    log.warning(
                        "controller unreachable, trying the next",
                        **{"from": failover.url, "to": failover.current},
                        error=str(exc),
                    )
                if failover.wait:
                    raise
                error = exc
                continue
            with self._lock:
                self.controllers.succeeded(base)
            return result
        # Other requests moved the agent on as often as there are URLs: back off too.
        raise error or ControllerUnreachable("no controller URL to ask")

    def _desired(self, base: str, etag: str | None, wait: float) -> Fetched:
        headers = {"If-None-Match": etag} if etag else {}
        params = {"wait": str(int(wait))} if wait > 0 else {}
        url = f"{base}/v1/devices/{self.device}/desired"
        response = self._send("GET", url, headers=headers, params=params)
        if response.status_code == 304:
            return Fetched(None, etag)
        if response.status_code != 200:
            raise ControllerUnreachable(
                f"controller answered {response.status_code}", response.status_code
            )
        document = msgspec.json.decode(response.content, type=DesiredDocument)
        return Fetched(document, response.headers.get("etag"))

    def _report(self, base: str, report: StatusReport) -> int | None:
        url = f"{base}/v1/devices/{self.device}/status"
        response = self._send("PUT", url, json_body=msgspec.json.encode(report))
        if response.status_code == 409:
            raise ReportConflict(_detail(response))
        if response.status_code != 200:
            raise ControllerUnreachable(
                f"controller answered {response.status_code}: {_detail(response)}",
                response.status_code,
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
