"""What an agent reported, as the planner sees it (pure)."""

from __future__ import annotations

from reconciler import wire
from reconciler.core.plan import ObservedRelease


def observed_releases(
    report: wire.StatusReport,
) -> tuple[dict[str, list[ObservedRelease]], dict[str, str]]:
    """An agent's report → observed releases by application, and errors by deployment."""
    releases: dict[str, list[ObservedRelease]] = {}
    errors: dict[str, str] = {}
    for item in report.releases:
        release = ObservedRelease(
            application=item.application,
            release=item.release,
            deployment=item.deployment,
            running=item.running,
            complete=item.complete,
            redeploy=item.redeploy,
            digest=item.digest,
        )
        releases.setdefault(release.application, []).append(release)
        if item.error:
            errors[release.deployment] = item.error
    return releases, errors
