"""What the dashboard shows, as plain data: each device's row and condition, the filters and
pages of the devices table, and links to the file and line in git that declares a thing.

Pure: the operator API answers with these rows as JSON and the pages render the same rows, so
the dashboard is a client of the same data, never a second source of truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import quote

from reconciler.core.inventory import iso
from reconciler.core.status import ConditionType, DeploymentStatus

Condition = Literal["Ready", "Progressing", "Degraded", "Offline", "Pending"]
CONDITIONS: tuple[str, ...] = get_args(Condition)
SORTS = ("device", "condition", "lastSeen", "freeDisk", "model")
PER_PAGE = 50
MAX_PER_PAGE = 500


def device_condition(
    pending: bool,
    statuses: Iterable[DeploymentStatus],
    last_seen: datetime | None,
    now: datetime,
    offline_after: float,
) -> Condition:
    """One word per device: Pending (enrolled, not admitted), Offline (no report for
    `offline_after` seconds, or never), Degraded (a deployment reports an error), Progressing
    (a deployment is not Ready yet), else Ready."""
    if pending:
        return "Pending"
    if last_seen is None or (now - last_seen).total_seconds() > offline_after:
        return "Offline"
    found = list(statuses)
    if any(s.condition(ConditionType.DEGRADED).true for s in found):
        return "Degraded"
    if any(not s.condition(ConditionType.READY).true for s in found):
        return "Progressing"
    return "Ready"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: str
    condition: Condition
    labels: Mapping[str, str] = field(default_factory=dict)
    system_model: str | None = None
    applications: tuple[str, ...] = ()
    engine: str | None = None
    disk_free: int | None = None
    last_seen: datetime | None = None
    last_poll: datetime | None = None
    file: str | None = None  # the Device manifest's file in git

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "condition": self.condition,
            "labels": dict(self.labels),
            "systemModel": self.system_model,
            "applications": list(self.applications),
            "engine": self.engine,
            "diskFreeBytes": self.disk_free,
            "lastSeen": iso(self.last_seen),
            "lastPoll": iso(self.last_poll),
            "file": self.file,
        }


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """The devices table's filters, sort and page, as a URL's query says them."""

    labels: tuple[tuple[str, str], ...] = ()
    model: str | None = None
    condition: str | None = None
    application: str | None = None
    search: str | None = None
    sort: str = "device"
    descending: bool = False
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str | list[str]]) -> DeviceQuery:
        """From query parameters (`label=k=v` repeatable, `model`, `condition`,
        `application`, `q`, `sort` with `-` for descending, `page`, `perPage`); ValueError
        naming the bad one."""

        def one(name: str) -> str | None:
            value = params.get(name)
            if isinstance(value, list):
                value = value[-1] if value else None
            return value.strip() or None if value is not None else None

        raw_labels = params.get("label") or []
        labels = []
        for item in [raw_labels] if isinstance(raw_labels, str) else raw_labels:
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"label: {item!r} is not key=value")
            labels.append((key.strip(), value.strip()))
        condition = one("condition")
        if condition is not None and condition not in CONDITIONS:
            raise ValueError(f"condition: one of {', '.join(CONDITIONS)}")
        sort = one("sort") or "device"
        descending = sort.startswith("-")
        if sort.lstrip("-") not in SORTS:
            raise ValueError(f"sort: one of {', '.join(SORTS)} (with - for descending)")
        page = _number(one("page"), "page", 1, 1_000_000)
        per_page = _number(one("perPage"), "perPage", PER_PAGE, MAX_PER_PAGE)
        return cls(tuple(labels), one("model"), condition, one("application"), one("q"),
                   sort.lstrip("-"), descending, page, per_page)  # fmt: skip

    def matches(self, row: DeviceRow) -> bool:
        if any(row.labels.get(key) != value for key, value in self.labels):
            return False
        if self.model is not None and row.system_model != self.model:
            return False
        if self.condition is not None and row.condition != self.condition:
            return False
        if self.application is not None and self.application not in row.applications:
            return False
        return self.search is None or self.search.lower() in row.device

    def to_params(self, **changes: Any) -> list[tuple[str, str]]:
        """This query as URL parameters, with `changes` (another page, another sort)."""
        values = {
            "model": self.model,
            "condition": self.condition,
            "application": self.application,
            "q": self.search,
            "sort": ("-" if self.descending else "") + self.sort,
            "page": str(self.page),
        }
        values.update(changes)
        params = [("label", f"{k}={v}") for k, v in self.labels]
        params += [(k, str(v)) for k, v in values.items() if v not in (None, "", "device", "1")]
        return params


def _number(text: str | None, name: str, default: int, most: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise ValueError(f"{name}: a whole number from 1 to {most}")
    return int(text)


_ORDER = {name: i for i, name in enumerate(("Degraded", "Offline", "Progressing", "Pending",
                                            "Ready"))}  # fmt: skip


def _key(sort: str) -> Any:
    if sort == "condition":
        return lambda r: (_ORDER[r.condition], r.device)
    if sort == "lastSeen":
        return lambda r: (r.last_seen is None, r.last_seen or datetime.min, r.device)
    if sort == "freeDisk":
        return lambda r: (r.disk_free is None, r.disk_free or 0, r.device)
    if sort == "model":
        return lambda r: (r.system_model or "", r.device)
    return lambda r: r.device


@dataclass(frozen=True, slots=True)
class DevicePage:
    rows: list[DeviceRow]
    total: int  # matching the filters
    query: DeviceQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "page": self.query.page,
            "pages": self.pages,
            "perPage": self.query.per_page,
            "devices": [row.to_json() for row in self.rows],
        }


def select(rows: Sequence[DeviceRow], query: DeviceQuery) -> DevicePage:
    """The page of `rows` the query asks for (rows come sorted by name)."""
    found = [row for row in rows if query.matches(row)]
    if query.sort != "device" or query.descending:
        found.sort(key=_key(query.sort), reverse=query.descending)
    start = (query.page - 1) * query.per_page
    return DevicePage(found[start : start + query.per_page], len(found), query)


def counts(rows: Iterable[DeviceRow]) -> dict[str, int]:
    """Devices by condition, every condition named (0 included)."""
    found = dict.fromkeys(CONDITIONS, 0)
    for row in rows:
        found[row.condition] += 1
    return found


# -- links to git --------------------------------------------------------------------------------

_PATTERNS = {
    "github": "{base}/blob/{sha}/{file}#L{line}",
    "gitlab": "{base}/-/blob/{sha}/{file}#L{line}",
    "gitea": "{base}/src/commit/{sha}/{file}#L{line}",
}
FORGES = tuple(_PATTERNS)


def forge_of(url: str) -> str:
    """The URL pattern of a repository's web page: GitLab's and Gitea's (Forgejo, Codeberg)
    by their host names, else GitHub's (GitHub Enterprise included)."""
    host = url.split("://", 1)[-1].split("/", 1)[0].lower()
    if "gitlab" in host:
        return "gitlab"
    if any(name in host for name in ("gitea", "forgejo", "codeberg")):
        return "gitea"
    return "github"


def source_link(
    base: str | None, forge: str, sha: str | None, file: str | None, line: int | None = None
) -> str | None:
    """The web page of `file` at `line` in commit `sha`; None without a base URL or a file."""
    if base is None or sha is None or not file:
        return None
    return _PATTERNS[forge].format(base=base.rstrip("/"), sha=sha, file=quote(file), line=line or 1)
