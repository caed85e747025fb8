"""Which controller replica the agent asks, and when it waits: a pure policy, no I/O.

Replicas share one database, so any of them answers a poll or a report the same way. The agent
sticks to the one that works (its long polls and reports go there), moves to the next URL round
robin when the current one cannot answer, and backs off only once every URL has failed in a
row: one replica down costs a device nothing but a retry, the whole fleet of replicas down
costs the controller no storm of reconnecting devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Failover:
    """What to do after `url` failed: ask `current` next, at once unless `wait`.

    `switched`: this failure moved the agent to another URL (never with a single one), worth one
    log line. `wait` is True when every URL has failed since the last success (a full round, or
    another one): the caller backs off, with `rounds` (full rounds failed in a row) as its
    failure count.
    """

    url: str
    current: str
    switched: bool
    wait: bool
    rounds: int


class Controllers:
    """The controller URLs, the one in use, and how many attempts failed in a row.

    Not thread-safe by itself: the client holds a lock around it. A failure or a success of a
    URL that is no longer current (another request moved on meanwhile) is not counted, so two
    requests failing on one replica at once move the agent one step, not two.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one controller URL is needed")
        if len(set(urls)) != len(urls):
            raise ValueError("a controller URL is listed twice")
        self.urls: tuple[str, ...] = tuple(urls)
        self._index = 0
        self._streak = 0  # attempts failed in a row, on any URL, since the last success

    @property
    def current(self) -> str:
        return self.urls[self._index]

    @property
    def streak(self) -> int:
        return self._streak

    def succeeded(self, url: str) -> None:
        """`url` answered (any answer, a 4xx too): stay on it, and forget the failures."""
        if url == self.current:
            self._streak = 0

    def failed(self, url: str) -> Failover:
        """`url` could not answer (no connection, a timeout, a 5xx): move to the next URL."""
        count = len(self.urls)
        if url != self.current:  # already moved on: ask the current one, at once
            return Failover(url, self.current, False, wait=False, rounds=self._streak // count)
        self._streak += 1
        self._index = (self._index + 1) % count
        return Failover(
            url,
            self.current,
            switched=count > 1,
            wait=self._streak % count == 0,
            rounds=self._streak // count,
        )


def parse_urls(values: Iterable[str]) -> list[str]:
    """Controller URLs from `--controller` values, each one URL or several separated by commas,
    in order; ValueError naming the first that is not an http(s) URL a request can be built on.

    Credentials in a URL are refused (the token file authenticates; requests would send them
    instead of the token) and never repeated in the error.
    """
    urls: list[str] = []
    for value in values:
        for item in value.split(","):
            url = item.strip()
            if not url:
                raise ValueError("an empty controller URL (two commas, or one at an end)")
            check_url(url)
            url = url.rstrip("/")
            if url in urls:
                raise ValueError(f"controller URL {url!r} is listed twice")
            urls.append(url)
    if not urls:
        raise ValueError("no controller URL given")
    return urls


def check_url(url: str) -> None:
    """ValueError when `url` is not `http(s)://HOST[:PORT][/PATH]`."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
        if any(c.isspace() or not c.isprintable() for c in url):
            raise ValueError(url)
    except ValueError:
        raise ValueError(f"controller URL {_shown(url)!r} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"controller URL {_shown(url)!r} is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(
            f"controller URL {_shown(url)!r} holds credentials: the token file authenticates"
        )
    if not parts.hostname or port == 0:
        raise ValueError(f"controller URL {url!r} names no host and port to connect to")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"controller URL {url!r} has a query or a fragment: give the base URL")


def _shown(url: str) -> str:
    """`url` with any user information before an `@` replaced, for an error message."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url if "@" not in url else "…@" + url.rpartition("@")[2]
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "…@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}"
