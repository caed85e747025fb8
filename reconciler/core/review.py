"""What merging a change would do, from two validated revisions alone (pure: no git, no I/O).

A reviewer sees, per device, the actions the controller would take once the change is merged:
the base revision stands in for what devices run (as if every device had converged on it), and
the plan from it to the head revision is exactly `reconciler.core.plan`'s. Releases, volumes,
networks and credentials are immutable once in git, so changing one in place is an error here
rather than a rejection by the controller after the merge. Secrets never appear in a review:
credentials are listed by name only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from reconciler.core.desired import desired_fleet, spec_digest, spec_json
from reconciler.core.immutable import (
    Resource,
    credential_changed,
    release_changed,
    resource_changed,
    secret_changed,
)
from reconciler.core.plan import Action, converged, plan_device
from reconciler.core.rollout import RolloutStart, Wave, limits, started
from reconciler.manifests.catalog import Catalog
from reconciler.manifests.check import Checked
from reconciler.manifests.model import ImageCredential, Release
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import Report

Change = Literal["added", "removed", "changed"]
# Keyed fingerprints of the decrypted credentials (name -> fingerprint), for base and head.
Fingerprints = tuple[Mapping[str, str], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field of a release spec: `containers[collector].image`, old and new (None: unset)."""

    field: str
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class ReleaseChange:
    application: str
    version: str
    release: str  # metadata.name: head's, or base's when removed
    change: Change
    fields: tuple[FieldChange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "version": self.version,
            "release": self.release,
            "change": self.change,
            "fields": [f.to_json() for f in self.fields],
        }


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """A volume or a network by name; `fields` say what a change in place touched."""

    name: str
    change: Change
    fields: tuple[FieldChange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "change": self.change,
            "fields": [f.to_json() for f in self.fields],
        }


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """A credential by name only: a review never carries a secret, even encrypted."""

    name: str
    change: Change

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "change": self.change}


@dataclass(frozen=True)
class Review:
    errors: list[Problem]  # head's errors and the immutability violations, located in head
    warnings: list[Problem]
    releases: list[ReleaseChange]
    volumes: list[ResourceChange]
    networks: list[ResourceChange]
    credentials: list[CredentialChange]
    devices: dict[str, list[Action]]  # only devices with at least one action, by name
    rollouts: list[RolloutStart] = field(default_factory=list)  # the devices' moves, in waves

    @property
    def valid(self) -> bool:
        """Whether the controller would accept the head revision."""
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [p.to_json() for p in self.errors],
            "warnings": [p.to_json() for p in self.warnings],
            "releases": [r.to_json() for r in self.releases],
            "volumes": [v.to_json() for v in self.volumes],
            "networks": [n.to_json() for n in self.networks],
            "credentials": [c.to_json() for c in self.credentials],
            "devices": {d: [a.to_json() for a in acts] for d, acts in self.devices.items()},
            "rollouts": [r.to_json() for r in self.rollouts],
        }


def review(base: Report, head: Report, fingerprints: Fingerprints | None = None) -> Review:
    """Compare two revisions as the controller would see them, base first.

    `fingerprints`, when given, decides whether a credential changed (keyed hashes of the
    decrypted values, so a mere re-encryption is not a change); a name missing from either
    mapping falls back to comparing the encrypted strings, which flags any re-encryption.
    """
    releases, release_errors = _releases(base.catalog, head.catalog)
    volumes, volume_errors = _resources(base.catalog.volumes, head.catalog.volumes)
    networks, network_errors = _resources(base.catalog.networks, head.catalog.networks)
    credentials, credential_errors = _credentials(base.catalog, head.catalog, fingerprints)
    secret_errors = _secrets_changed(base.catalog, head.catalog)
    errors = sorted(
        [
            *head.errors,
            *release_errors,
            *volume_errors,
            *network_errors,
            *credential_errors,
            *secret_errors,
        ],
        key=Problem.sort_key,
    )
    devices = _devices(base, head)
    rollouts = started(base.catalog, head.catalog) if head.valid else []
    return Review(
        errors, head.warnings, releases, volumes, networks, credentials, devices, rollouts
    )


# -- devices ---------------------------------------------------------------------------------------


def _devices(base: Report, head: Report) -> dict[str, list[Action]]:
    """Plan every device from base's desired state, as if the fleet had converged on base."""
    before = desired_fleet(base.catalog)
    after = desired_fleet(head.catalog)
    devices: dict[str, list[Action]] = {}
    for device in sorted(set(before) | set(after)):
        observed = converged(before.get(device, {}))
        actions = plan_device(after.get(device, {}), observed)
        if actions:
            devices[device] = actions
    return devices


# -- releases --------------------------------------------------------------------------------------


def _by_version(catalog: Catalog) -> dict[tuple[str, str], Checked[Release]]:
    """Releases by (application, version); the first wins on duplicates, as in the catalog."""
    index: dict[tuple[str, str], Checked[Release]] = {}
    for entry in catalog.releases.values():
        spec = entry.manifest.spec
        index.setdefault((spec.application, spec.version), entry)
    return index


def _releases(base: Catalog, head: Catalog) -> tuple[list[ReleaseChange], list[Problem]]:
    old, new = _by_version(base), _by_version(head)
    changes: list[ReleaseChange] = []
    errors: list[Problem] = []
    for key in sorted(set(old) | set(new)):
        application, version = key
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            changes.append(ReleaseChange(application, version, after.name, "added"))
        elif after is None and before is not None:
            changes.append(ReleaseChange(application, version, before.name, "removed"))
        elif before is not None and after is not None:
            if spec_digest(before.manifest) == spec_digest(after.manifest):
                continue
            fields = tuple(diff(spec_json(before.manifest), spec_json(after.manifest)))
            changes.append(ReleaseChange(application, version, after.name, "changed", fields))
            errors.append(release_changed(after))
    return changes, errors


# -- volumes and networks --------------------------------------------------------------------------


def _resources(
    base: Mapping[str, Checked[Resource]], head: Mapping[str, Checked[Resource]]
) -> tuple[list[ResourceChange], list[Problem]]:
    """Volumes or networks by name; one changed in place is an error, as in the controller."""
    changes: list[ResourceChange] = []
    errors: list[Problem] = []
    for name in sorted(set(base) | set(head)):
        before, after = base.get(name), head.get(name)
        if before is None:
            changes.append(ResourceChange(name, "added"))
        elif after is None:
            changes.append(ResourceChange(name, "removed"))
        elif spec_digest(before.manifest) != spec_digest(after.manifest):
            fields = tuple(diff(spec_json(before.manifest), spec_json(after.manifest)))
            changes.append(ResourceChange(name, "changed", fields))
            errors.append(resource_changed(after))
    return changes, errors


def diff(old: Any, new: Any, path: str = "") -> Iterator[FieldChange]:
    """Field-by-field differences of two JSON values; lists of named items are keyed by name."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            yield from diff(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return
    old_items, new_items = _named(old), _named(new)
    if old_items is None or new_items is None:
        yield FieldChange(path, old, new)
        return
    for name in [*old_items, *(n for n in new_items if n not in old_items)]:
        yield from diff(old_items.get(name), new_items.get(name), f"{path}[{name}]")
    order = [n for n in old_items if n in new_items], [n for n in new_items if n in old_items]
    if order[0] != order[1]:
        yield FieldChange(f"{path} order", list(old_items), list(new_items))


def _named(value: Any) -> dict[str, Any] | None:
    """A list of mappings with unique string `name`s (containers), by name; else None."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in value):
        return None
    items = {item["name"]: item for item in value}
    return items if len(items) == len(value) else None


# -- credentials -----------------------------------------------------------------------------------


def _credentials(
    base: Catalog, head: Catalog, fingerprints: Fingerprints | None
) -> tuple[list[CredentialChange], list[Problem]]:
    changes: list[CredentialChange] = []
    errors: list[Problem] = []
    for name in sorted(set(base.credentials) | set(head.credentials)):
        before, after = base.credentials.get(name), head.credentials.get(name)
        if before is None:
            changes.append(CredentialChange(name, "added"))
        elif after is None:
            changes.append(CredentialChange(name, "removed"))
        elif _secret_changed(name, before, after, fingerprints):
            changes.append(CredentialChange(name, "changed"))
            errors.append(credential_changed(after))
    return changes, errors


def _secrets_changed(base: Catalog, head: Catalog) -> list[Problem]:
    """Secrets are immutable: one whose keys or encrypted values differ under the same name is
    an error (a mere re-encryption too: leave the file as it is, or create a new Secret)."""
    return [
        secret_changed(after)
        for name, after in sorted(head.secrets.items())
        if (before := base.secrets.get(name)) is not None
        and before.manifest.spec.data != after.manifest.spec.data
    ]


def _secret_changed(
    name: str,
    before: Checked[ImageCredential],
    after: Checked[ImageCredential],
    fingerprints: Fingerprints | None,
) -> bool:
    if fingerprints is not None:
        old, new = fingerprints[0].get(name), fingerprints[1].get(name)
        if old is not None and new is not None:
            return old != new
    a, b = before.manifest.spec, after.manifest.spec
    return (a.username, a.password) != (b.username, b.password)


# -- rendering -------------------------------------------------------------------------------------


class Format(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def render(result: Review, fmt: Format) -> str:
    """The review as text lines, a pull-request comment, or JSON; always ends with a newline."""
    if fmt is Format.json:
        return json.dumps(result.to_json(), indent=2) + "\n"
    if fmt is Format.markdown:
        return markdown(result)
    return text(result)


def text(result: Review) -> str:
    """Compact lines, like `hedgerow validate`: findings first, the verdict last."""
    lines = [p.render() for p in (*result.errors, *result.warnings)]
    for release in result.releases:
        lines.append(
            f"release {release.application} {release.version} ({release.release}): {release.change}"
        )
        lines.extend(_field_lines(release.fields))
    for kind, resources in (("volume", result.volumes), ("network", result.networks)):
        for resource in resources:
            lines.append(f"{kind} {resource.name}: {resource.change}")
            lines.extend(_field_lines(resource.fields))
    lines.extend(f"credential {c.name}: {c.change}" for c in result.credentials)
    for device, actions in result.devices.items():
        for a in actions:
            lines.append(
                f"{device}: {a.action} {a.application} {a.from_release or '-'} -> "
                f"{a.to_release or '-'} [{a.deployment}]: {a.reason}"
            )
    for rollout in result.rollouts:
        lines.append(f"rollout {rollout.deployment}: {_rollout_line(rollout)}")
        lines.extend(f"  wave {w.name}: {_wave_devices(w)}" for w in rollout.waves)
    verdict = "valid" if result.valid else "rejected"
    lines.append(f"{verdict}: {_summary(result)}")
    return "\n".join(lines) + "\n"


def _rollout_line(rollout: RolloutStart) -> str:
    spec = rollout.rollout
    total = sum(len(w.devices) for w in rollout.waves)
    in_flight, failures = limits(spec, total)
    return (
        f"{rollout.application} {rollout.from_release} -> {rollout.to_release} in "
        f"{_count(len(rollout.waves), 'wave')}; maxInFlight {spec.max_in_flight} "
        f"({_count(in_flight, 'device')}), maxFailures {spec.max_failures} "
        f"({_count(failures, 'device')}), onFailure {spec.on_failure}"
        + ("; paused" if spec.paused else "")
    )


SHOWN = 5  # devices named per wave; the rest are counted


def _wave_devices(wave: Wave) -> str:
    named = ", ".join(wave.devices[:SHOWN])
    more = f" and {len(wave.devices) - SHOWN} more" if len(wave.devices) > SHOWN else ""
    return f"{_count(len(wave.devices), 'device')}" + (f" ({named}{more})" if named else "")


def _field_lines(fields: tuple[FieldChange, ...]) -> list[str]:
    return [f"  {f.field}: {_json(f.old)} -> {_json(f.new)}" for f in fields]


def markdown(result: Review) -> str:
    """GitHub-flavoured markdown to post on the pull request; user text cannot break out."""
    if result.valid:
        out = ["## ✅ Hedgerow plan: ready to merge"]
    else:
        out = ["## ❌ Hedgerow plan: this merge would be rejected"]
    out += ["", _escape(_summary(result)) + "."]
    for title, problems in (("Errors", result.errors), ("Warnings", result.warnings)):
        if problems:
            out += ["", f"### {title}", ""]
            out += [_problem_item(p) for p in problems]
    if result.releases:
        out += ["", "### Releases"]
        for release in result.releases:
            label = f"{_code(release.application)} {_code(release.version)}"
            out += _change_item(
                f"{label} ({_code(release.release)})", release.change, release.fields
            )
    for title, resources in (("Volumes", result.volumes), ("Networks", result.networks)):
        if resources:
            out += ["", f"### {title}"]
            for resource in resources:
                out += _change_item(_code(resource.name), resource.change, resource.fields)
    if result.credentials:
        out += ["", "### Credentials", ""]
        out += [f"- **{c.change}**: {_code(c.name)}" for c in result.credentials]
    if result.rollouts:
        out += ["", "### Rollouts"]
        for rollout in result.rollouts:
            out += ["", f"- {_code(rollout.deployment)}: {_escape(_rollout_line(rollout))}", ""]
            out += ["| wave | devices |", "|---|---|"]
            out += [_row(_code(w.name), _escape(_wave_devices(w))) for w in rollout.waves]
    out += ["", "### Devices", ""]
    if result.devices:
        out += ["| device | action | application | from | to | reason |", "|---" * 6 + "|"]
        for device, actions in result.devices.items():
            out += [
                _row(
                    _code(device),
                    a.action,
                    _code(a.application),
                    _value(a.from_release),
                    _value(a.to_release),
                    _escape(f"{a.reason} ({a.deployment})"),
                )
                for a in actions
            ]
    else:
        out.append("No device changes.")
    return "\n".join(out) + "\n"


def _change_item(label: str, change: Change, fields: tuple[FieldChange, ...]) -> list[str]:
    """One release, volume or network change: a list item, then its fields as a table."""
    out = ["", f"- **{'changed in place' if change == 'changed' else change}**: {label}"]
    if fields:
        out += ["", "| field | old | new |", "|---|---|---|"]
        out += [_row(_code(f.field), _value(f.old), _value(f.new)) for f in fields]
    return out


def _summary(result: Review) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    devices, actions = len(result.devices), sum(map(len, result.devices.values()))
    return (
        f"{_count(devices, 'device')} would change ({_count(actions, 'action')}); "
        f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _problem_item(problem: Problem) -> str:
    where = f"{problem.file}:{problem.line}" if problem.line else problem.file
    subject = "/".join(p for p in (problem.kind, problem.name) if p)
    parts = [_code(where)]
    if subject:
        parts.append(_escape(subject))
    if problem.field:
        parts.append(_code(problem.field))
    return f"- {' '.join(parts)}: {_escape(problem.message)}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _value(value: Any) -> str:
    """A value for a table cell: `—` when unset, strings verbatim, the rest as compact JSON."""
    if value is None:
        return "—"
    return _code(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _row(*cells: str) -> str:
    """A table row; `|` is escaped everywhere in a cell, code spans included (GFM rule)."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _code(value: str) -> str:
    """A code span that no backtick in `value` can close early; newlines become spaces."""
    value = " ".join(value.splitlines())
    longest = run = 0
    for char in value:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") or not value.strip() else ""
    return f"{fence}{pad}{value}{pad}{fence}"


_SPECIAL = set("\\`*_{}[]<>#|~!")


def _escape(value: str) -> str:
    """Plain text with markdown disarmed; `@` gets a zero-width space so nobody is pinged."""
    value = " ".join(value.splitlines())
    out = "".join(f"\\{c}" if c in _SPECIAL else c for c in value)
    return out.replace("@", "@\u200b")
