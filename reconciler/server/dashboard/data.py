"""Each page's data, as the operator API answers it (JSON-ready dicts): the pages render these
same dicts. Reads the store in a worker thread and the applied revision from memory; never a
Secret value, a registry password or a token (the catalog holds only their names)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from reconciler.core.rollout import waves as core_waves
from reconciler.core.rollout_status import decoded, rollout_json
from reconciler.core.status import ConditionType
from reconciler.manifests.check import Checked
from reconciler.manifests.model.base import Manifest
from reconciler.server.backend import Backend
from reconciler.server.dashboard.fleet import FleetRows
from reconciler.server.dashboard.model import DeviceQuery, counts, select, source_link
from reconciler.store import RevisionRecord

LAST_EVENTS = 10
PER_WAVE = 200  # devices listed by name in a wave; the rest are counted


@dataclass(frozen=True)
class Links:
    """Where the repository's files are on the web (`--repo-web-url`), for deep links."""

    base: str | None = None
    forge: str = "github"

    def to(self, sha: str | None, entry: Checked[Manifest] | None) -> str | None:
        if self.base is None or entry is None:
            return None
        line, _ = entry.document.locate(())
        return source_link(self.base, self.forge, sha, entry.file, line)

    def file(self, sha: str | None, file: str | None, line: int | None) -> str | None:
        return source_link(self.base, self.forge, sha, file, line)


class Pages:
    def __init__(self, backend: Backend, rows: FleetRows, links: Links) -> None:
        self.backend = backend
        self.store = backend.store
        self.rows = rows
        self.links = links

    def _revision_json(self, record: RevisionRecord | None) -> dict[str, Any] | None:
        if record is None:
            return None
        return {
            "revision": record.sha,
            "message": record.message,
            "at": (record.applied_at or record.at).isoformat(),
            "errors": [
                {**error, "link": self.links.file(record.sha, error.get("file"), error.get("line"))}
                for error in record.errors
            ],
        }

    async def overview(self) -> dict[str, Any]:
        rows = await self.rows.rows()

        def read() -> tuple[Any, ...]:
            applied = self.store.applied_revision()
            record = self.store.revision(applied) if applied else None
            last = self.store.last_attempt()
            rollouts = [rollout_json(r) for r in decoded(self.store.rollouts())]
            return record, last, rollouts, self.store.recent_events(limit=LAST_EVENTS)

        record, last, rollouts, events = await asyncio.to_thread(read)
        rejected = None
        if last is not None and not last.valid and (record is None or last.at >= record.at):
            rejected = self._revision_json(last)
        return {
            "applied": self._revision_json(record),
            "rejected": rejected,
            "devices": counts(rows),
            "total": len(rows),
            "rollouts": rollouts,
            "events": [e.to_json() for e in events],
        }

    async def devices(self, query: DeviceQuery) -> dict[str, Any]:
        rows = await self.rows.rows()
        page = select(rows, query)
        body = page.to_json()
        body["filters"] = {
            "labels": sorted({f"{k}={v}" for row in rows for k, v in row.labels.items()}),
            "models": sorted({row.system_model for row in rows if row.system_model}),
            "applications": sorted({a for row in rows for a in row.applications}),
        }
        return body

    async def device(self, name: str) -> dict[str, Any] | None:
        row = await self.rows.row(name)
        if row is None:
            return None
        sha = self.backend.revision()
        catalog = self.backend.catalog()
        wanted = (self.backend.fleet() or {}).get(name, {})

        def read() -> tuple[Any, ...]:
            info = next(iter(self.store.inventory([name])), None)
            statuses = [s.status for s in self.store.statuses(device=name)]
            observed = self.store.get_observed(name)
            return info, statuses, observed, self.store.recent_events(device=name, limit=20)

        info, statuses, observed, events = await asyncio.to_thread(read)
        report = observed[0] if observed else None
        deployments = []
        for application, want in sorted(wanted.items()):
            status = next((s for s in statuses if s.deployment == want.deployment), None)
            deployments.append(
                {
                    "deployment": want.deployment,
                    "application": application,
                    "desiredRelease": want.release,
                    "desiredState": want.state,
                    "observedRelease": status.observed_release if status else None,
                    "observedState": status.observed_state if status else None,
                    "conditions": [msgspec.to_builtins(c) for c in status.conditions]
                    if status
                    else [],
                }
            )
        containers = []
        for release in report.releases if report else []:
            images = _images(catalog, release.application, release.release)
            for c in release.containers:
                containers.append(
                    {
                        "deployment": release.deployment,
                        "release": release.release,
                        "container": c.name,
                        "state": c.state,
                        "health": c.health,
                        "image": images.get(c.name),
                        "restarts": c.restarts,
                        "error": c.error,
                    }
                )
        declared = catalog.devices.get(name) if catalog else None
        return {
            **row.to_json(),
            "link": self.links.to(sha, declared),
            "enrollment": info.enrollment if info else None,
            "facts": msgspec.to_builtins(info.facts) if info and info.facts else None,
            "deployments": deployments,
            "containers": containers,
            "events": [e.to_json() for e in events],
        }

    async def deployment(self, name: str) -> dict[str, Any] | None:
        catalog = self.backend.catalog()
        entry = catalog.deployments.get(name) if catalog else None
        if catalog is None or entry is None:
            return None
        sha = self.backend.revision()
        fleet = self.backend.fleet() or {}
        spec = entry.manifest.spec
        targets = sorted(d for d, wanted in fleet.items()
                         if any(w.deployment == name for w in wanted.values()))  # fmt: skip

        def read() -> tuple[Any, ...]:
            statuses = {s.device: s.status for s in self.store.statuses(deployment=name)}
            observed = self.store.observed_of(targets)
            events = self.store.recent_events(deployment=name, limit=30)
            return statuses, observed, events

        statuses, observed, events = await asyncio.to_thread(read)
        devices = []
        for device in targets:
            want = fleet[device][spec.application]
            status = statuses.get(device)
            report = observed.get(device)
            mine = [
                r for r in (report.releases if report else []) if r.application == spec.application
            ]
            devices.append(
                {
                    "device": device,
                    "desiredRelease": want.release,
                    "desiredState": want.state,
                    "observedRelease": status.observed_release if status else None,
                    "conditions": [msgspec.to_builtins(c) for c in status.conditions]
                    if status
                    else [],
                    "containers": [
                        {
                            "release": r.release,
                            "container": c.name,
                            "state": c.state,
                            "health": c.health,
                            "restarts": c.restarts,
                            "error": c.error,
                        }
                        for r in mine
                        if r.release == want.release
                        for c in r.containers
                    ],
                    "history": [
                        {
                            "release": r.release,
                            "running": r.running,
                            "ready": r.ready,
                            "error": r.error,
                        }
                        for r in mine
                    ],
                }
            )
        release = catalog.release(spec.application, spec.release)
        return {
            "deployment": name,
            "application": spec.application,
            "release": spec.release,
            "state": spec.state,
            "link": self.links.to(sha, entry),
            "releaseLink": self.links.to(sha, release),
            "containers": _runtime(catalog, release) if release else [],
            "devices": devices,
            "events": [e.to_json() for e in events],
        }

    async def rollout(self, name: str) -> dict[str, Any] | None:
        """One rollout: its record, each device's outcome in its wave (as far as the device
        reported: Failed as the rollout judged, Succeeded once Ready on the new release,
        Progressing once moved, else Pending), and each failed device's reason and last log
        lines, from its report."""
        found = await asyncio.to_thread(self.store.rollouts)
        record = next((r for r in decoded(found) if r.deployment == name), None)
        catalog = self.backend.catalog()
        if record is None or catalog is None or name not in catalog.deployments:
            return None
        entry = catalog.deployments[name]
        targets = {d.name: d.manifest.metadata.labels for d in catalog.targets(entry.manifest)}
        plan = core_waves(entry.manifest.spec.rollout, targets)
        devices = [d for wave in plan for d in wave.devices]

        def read() -> tuple[Any, ...]:
            statuses = {s.device: s.status for s in self.store.statuses(deployment=name)}
            observed = self.store.observed_of(sorted(record.state.failed))
            return statuses, observed, self.store.recent_events(None, name, None, None, 20)

        statuses, observed, events = await asyncio.to_thread(read)
        rows = {row.device: row for row in await self.rows.rows() if row.device in targets}

        def outcome(device: str) -> str:
            if device in record.state.failed:
                return "Failed"
            if device not in record.state.moved:
                row = rows.get(device)
                return "Offline" if row is not None and row.condition == "Offline" else "Pending"
            status = statuses.get(device)
            if (
                status is not None
                and status.observed_release == record.target.release
                and status.condition(ConditionType.READY).true
            ):
                return "Succeeded"
            return "Progressing"

        body = rollout_json(record)
        body["waves"] = [
            {
                **summary,
                "outcomes": {d: outcome(d) for d in wave.devices[:PER_WAVE]},
                "more": max(0, len(wave.devices) - PER_WAVE),
            }
            for summary, wave in zip(body["waves"], plan, strict=False)
        ]
        failed = []
        for item in body["failed"]:
            report = observed.get(item["device"])
            degraded = next(
                (r.degraded for r in (report.releases if report else [])
                 if r.application == record.application and r.degraded is not None),
                None,
            )  # fmt: skip
            failed.append({**item, "health": degraded.health if degraded else None,
                           "log": list(degraded.log) if degraded else []})  # fmt: skip
        body["failed"] = failed
        body["targeted"] = len(devices)
        body["log"] = [e.to_json() for e in events]
        body["link"] = self.links.to(self.backend.revision(), entry)
        return body

    async def releases(self) -> dict[str, Any]:
        catalog = self.backend.catalog()
        if catalog is None:
            return {"applications": []}
        sha = self.backend.revision()
        fleet = self.backend.fleet() or {}
        where: dict[tuple[str, str], list[str]] = {}
        for device, wanted in fleet.items():
            for application, want in wanted.items():
                where.setdefault((application, want.release), []).append(device)
        applications = []
        for app_name in sorted(catalog.applications):
            releases = []
            for version in catalog.versions(app_name):
                release = catalog.release(app_name, version)
                if release is None:
                    continue
                releases.append(
                    {
                        "version": version,
                        "link": self.links.to(sha, release),
                        "containers": [
                            {"name": c.name, "image": c.image}
                            for c in release.manifest.spec.containers
                        ],
                        "devices": sorted(where.get((app_name, version), [])),
                    }
                )
            applications.append({"application": app_name, "releases": releases})
        return {"applications": applications}

    async def events(
        self,
        device: str | None = None,
        deployment: str | None = None,
        kind: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        found = await asyncio.to_thread(
            self.store.recent_events, device, deployment, kind, before, limit
        )
        return {
            "events": [e.to_json() for e in found],
            "next": found[-1].id if len(found) == limit else None,
        }


def _images(catalog: Any, application: str, version: str) -> dict[str, str]:
    release = catalog.release(application, version) if catalog else None
    if release is None:
        return {}
    return {c.name: c.image for c in release.manifest.spec.containers}


def _runtime(catalog: Any, release: Checked[Any]) -> list[dict[str, Any]]:
    """Each container's runtime configuration as declared: env names (a Secret's value is
    never here: only which Secret and key), ports, mounts, networks and resources."""
    out = []
    for c in release.manifest.spec.containers:
        env: list[dict[str, Any]] = []
        for key, value in sorted(c.env.items()):
            if isinstance(value, str):
                env.append({"name": key, "value": value})
            else:
                ref = value.secret_key_ref
                env.append({"name": key, "secret": f"{ref.secret}/{ref.key}"})
        networks = [n if isinstance(n, str) else n.network for n in c.networks]
        out.append(
            {
                "name": c.name,
                "image": c.image,
                "env": env,
                "ports": list(c.port_bindings),
                "volumes": [
                    {
                        "volume": m.volume,
                        "target": m.target,
                        "readOnly": m.read_only,
                        "driver": _driver(catalog.volumes, m.volume),
                    }
                    for m in c.volumes
                ],
                "binds": list(c.binds),
                "networks": [
                    {"network": n, "driver": _driver(catalog.networks, n)} for n in networks
                ],
                "memory": c.memory,
                "cpus": round(c.cpu.quota / (c.cpu.period or 100_000), 3)
                if c.cpu is not None and c.cpu.quota is not None
                else None,
                "devices": [d.path_on_host for d in c.device_mappings],
                "tmpfs": [t.path for t in c.tmpfs],
                "restartPolicy": c.restart_policy,
            }
        )
    return out


def _driver(manifests: Mapping[str, Checked[Any]], name: str) -> str | None:
    entry = manifests.get(name)
    return entry.manifest.spec.driver if entry else None
