"""Re-planning only what a commit touched gives exactly what planning everything gives."""

from __future__ import annotations

from textwrap import dedent

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.desired import affected_devices, changed_files, desired_fleet, refresh_fleet
from reconciler.manifests.catalog import Catalog
from reconciler.manifests.validate import validate_files
from tests.support.properties import examples
from tests.support.repos import BASE

DEVICES = ["pi-1", "pi-2", "pi-3", "pi-4"]
SITES = ["lyon", "nantes"]


def _repository(labels: dict[str, str], versions: dict[str, str]) -> Catalog:
    """Devices (absent when their site is "gone"), and one selector deployment per site."""
    files = {name: dedent(text) for name, text in BASE.items() if name != "deployment.yaml"}
    files["release-2.yaml"] = (
        files["release.yaml"].replace("1-0-0", "1-1-0").replace('"1.0.0"', '"1.1.0"')
    )
    files["devices.yaml"] = "---\n".join(
        f"apiVersion: hedgerow.dev/v1alpha1\nkind: Device\n"
        f"metadata: {{name: {d}, labels: {{site: {labels[d]}}}}}\nspec: {{systemModel: rpi4}}\n"
        for d in DEVICES
        if labels[d] != "gone"
    )
    for site in SITES:
        files[f"by-site-{site}.yaml"] = (
            f"apiVersion: hedgerow.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: web-{site}}}\n"
            f'spec: {{application: web, release: "{versions[site]}", '
            f"selector: {{matchLabels: {{site: {site}}}}}}}\n"
        )
    report = validate_files((n, t.encode()) for n, t in files.items())
    assert report.valid, report.errors
    return report.catalog


states = st.fixed_dictionaries(
    {
        "labels": st.fixed_dictionaries({d: st.sampled_from([*SITES, "gone"]) for d in DEVICES}),
        "versions": st.fixed_dictionaries({s: st.sampled_from(["1.0.0", "1.1.0"]) for s in SITES}),
    }
)


@settings(max_examples=examples(40), deadline=None)
@given(states, states)
def test_refresh_equals_full_recomputation(
    before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]
) -> None:
    old = _repository(before["labels"], before["versions"])
    new = _repository(after["labels"], after["versions"])
    fleet = desired_fleet(old)
    scope = affected_devices(old, new, changed_files(old, new))
    assert refresh_fleet(fleet, new, scope) == desired_fleet(new)
    for device in set(desired_fleet(new)) - scope:
        assert fleet[device] == desired_fleet(new)[device]


def test_an_untouched_commit_affects_no_device() -> None:
    labels = dict.fromkeys(DEVICES, "lyon")
    versions = dict.fromkeys(SITES, "1.0.0")
    old, new = _repository(labels, versions), _repository(labels, versions)
    assert changed_files(old, new) == set()
    assert affected_devices(old, new, changed_files(old, new)) == set()
