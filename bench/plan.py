"""Planning a fleet of 10,000 devices with 3 deployments each: the full plan, and the re-plan
after a commit that upgrades a release used by 1% of the devices, measured in the same run.

Targets: the re-plan under 5% of the full plan and under 100 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from reconciler.core.desired import affected_devices, changed_files, desired_fleet, refresh_fleet
from reconciler.core.plan import Action, converged, plan_device
from reconciler.manifests.catalog import Catalog
from reconciler.manifests.validate import validate_files

T = TypeVar("T")
GROUP = 100  # devices per label group; one group is 1% of 10,000


def _doc(kind: str, name: str, spec: str, labels: str = "{}") -> str:
    return (
        f"apiVersion: hedgerow.dev/v1alpha1\nkind: {kind}\n"
        f"metadata: {{name: {name}, labels: {labels}}}\nspec:\n{spec}"
    )


def repository(devices: int, upgraded_group: int | None) -> Iterator[tuple[str, bytes]]:
    """Apps a0 and a1 deployed per device, a2 per label group by selector."""
    apps = []
    for app in ("a0", "a1", "a2"):
        apps.append(_doc("Application", app, "  description: bench\n"))
        for version in ("1.0.0", "1.1.0"):
            apps.append(
                _doc(
                    "Release",
                    f"{app}-{version.replace('.', '-')}",
                    f'  application: {app}\n  version: "{version}"\n  containers:\n'
                    f"    - {{name: main, image: 'registry.example/{app}:{version}'}}\n",
                )
            )
    yield "applications.yaml", "---\n".join(apps).encode()
    for group in range(devices // GROUP):
        members = range(group * GROUP, (group + 1) * GROUP)
        yield (
            f"devices/g{group}.yaml",
            "---\n".join(
                _doc("Device", f"dev-{d}", "  systemModel: rpi4\n", f"{{group: g{group}}}")
                for d in members
            ).encode(),
        )
        for app in ("a0", "a1"):
            yield (
                f"deployments/{app}/g{group}.yaml",
                "---\n".join(
                    _doc(
                        "Deployment",
                        f"{app}-dev-{d}",
                        f'  application: {app}\n  release: "1.0.0"\n  device: dev-{d}\n',
                    )
                    for d in members
                ).encode(),
            )
        version = "1.1.0" if group == upgraded_group else "1.0.0"
        yield (
            f"deployments/a2/g{group}.yaml",
            _doc(
                "Deployment",
                f"a2-g{group}",
                f'  application: a2\n  release: "{version}"\n'
                f"  selector: {{matchLabels: {{group: g{group}}}}}\n",
            ).encode(),
        )


def catalog(devices: int, upgraded_group: int | None) -> Catalog:
    report = validate_files(repository(devices, upgraded_group))
    assert report.valid, report.errors[:3]
    return report.catalog


def best(fn: Callable[[], T], rounds: int) -> tuple[float, T]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    group = 7
    old, new = catalog(args.devices, None), catalog(args.devices, group)
    fleet = desired_fleet(old)
    observed = {device: converged(desired) for device, desired in fleet.items()}

    def full() -> dict[str, list[Action]]:
        after = desired_fleet(new)
        return {d: plan_device(after[d], observed.get(d, {})) for d in after}

    def replan() -> dict[str, list[Action]]:
        devices = affected_devices(old, new, changed_files(old, new))
        after = refresh_fleet(fleet, new, devices)
        return {d: plan_device(after[d], observed.get(d, {})) for d in devices if d in after}

    full_time, everything = best(full, args.rounds)
    replan_time, changed = best(replan, args.rounds)
    touched = {d: a for d, a in everything.items() if a}
    assert touched == changed, "the re-plan must find exactly the full plan's actions"
    assert len(changed) == GROUP and all(a[0].action == "upgrade" for a in changed.values())
    ratio = replan_time / full_time
    deployments = sum(len(d) for d in fleet.values())
    print(f"devices: {len(fleet)}, deployments: {deployments}, upgraded devices: {len(changed)}")
    print(f"full plan:  {full_time * 1000:8.1f} ms")
    print(f"re-plan:    {replan_time * 1000:8.1f} ms")
    print(f"ratio:      {ratio * 100:8.2f} %  (targets: < 5% and < 100 ms)")
    return 0 if ratio < 0.05 and replan_time < 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
