"""The agent's side of the device API: fetch the desired document, send status reports.

Conditional and long-polling GETs keep an idle fleet cheap: a device that is up to date costs the
controller one 304 per poll. Errors are raised as `ControllerUnreachable`; the loop decides how
to back off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from reconciler.wire import DesiredDocument, StatusReport


class ControllerUnreachable(Exception):
    """The controller could not be asked; the last desired state stays in force."""


@dataclass(frozen=True, slots=True)
class Fetched:
    document: DesiredDocument | None  # None: not modified since `etag`
    etag: str | None


class ControllerClient:
    def __init__(
        self,
        url: str,
        device: str,
        token: str,
        *,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.device = device
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            transport=transport,
            timeout=httpx.Timeout(10.0, read=75.0),  # a long poll holds up to 60 s
        )

    def close(self) -> None:
        self._http.close()

    def desired(self, etag: str | None, wait: float = 0) -> Fetched:
        headers = {"If-None-Match": etag} if etag else {}
        params = {"wait": str(int(wait))} if wait > 0 else {}
        try:
            response = self._http.get(
                f"/v1/devices/{self.device}/desired", headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            raise ControllerUnreachable(
                f"cannot reach the controller: {type(exc).__name__}"
            ) from None
        if response.status_code == 304:
            return Fetched(None, etag)
        if response.status_code != 200:
            raise ControllerUnreachable(f"controller answered {response.status_code}")
        document = DesiredDocument.model_validate_json(response.content)
        return Fetched(document, response.headers.get("etag"))

    def report(self, report: StatusReport) -> int | None:
        """Send a report; the controller's highest stored event number, for trimming."""
        try:
            response = self._http.put(
                f"/v1/devices/{self.device}/status",
                content=report.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise ControllerUnreachable(
                f"cannot reach the controller: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise ControllerUnreachable(f"controller answered {response.status_code}")
        last = response.json().get("lastSeq")
        return int(last) if last is not None else None


def backoff(failures: int, interval: float, rng: random.Random, base: float = 1.0) -> float:
    """Exponential backoff capped at the poll interval, with full jitter against herds."""
    ceiling = min(interval, base * 2 ** min(failures, 30))
    return rng.uniform(ceiling / 2, ceiling)
