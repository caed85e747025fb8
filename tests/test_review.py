"""The review of a change, from two in-memory revisions: exact actions per device, immutability
errors located in head, credentials by name only, and renderings a PR comment can carry."""

from __future__ import annotations

import json
from textwrap import dedent

from reconciler.core.plan import Action
from reconciler.core.review import (
    CredentialChange,
    FieldChange,
    Format,
    ReleaseChange,
    ResourceChange,
    Review,
    diff,
    render,
    review,
)
from reconciler.manifests.problems import Problem, Severity
from reconciler.manifests.validate import Report, validate_files
from tests.support.repos import BASE, resources

HEADER = "apiVersion: hedgerow.dev/v1alpha1\n"
USERNAME = (
    "ENC[AES256_GCM,data:0TqnWg==,iv:9j7TeIyJ+3uqXepTVVNMJYl0XLxwT+XNprRM38O9fkY=,"
    "tag:fuu5s0FFyFhQem/ZAzMNZQ==,type:str]"
)
PASSWORD = (
    "ENC[AES256_GCM,data:sJAhMdrAUsQ2aOjRNnLz7rRG0UpYDow=,"
    "iv:hd1f60NHMRGBs+yHmXU70rkQrbflVjnJ2V3ty/vgvyQ=,tag:actkRkiW7cuoAPVIhoraMg==,type:str]"
)
# The same secret encrypted again: a new data/iv/tag, as `sops` writes on every encryption.
PASSWORD_AGAIN = (
    "ENC[AES256_GCM,data:q8YbV0xE3wTl2cGkqvUoKcVvE3k=,"
    "iv:Jd5n0Tz3cVnS4ZqXq1yXQm3zKxqB8b1PpW2Qv9ZcY1o=,tag:Qm9yZSB0aGFuIGEgdGFnIQ==,type:str]"
)


def report(changes: dict[str, str | None] | None = None) -> Report:
    """BASE with some files replaced, added or (None) removed, validated from memory."""
    files = {**BASE, **(changes or {})}
    return validate_files(
        (rel, dedent(text).encode()) for rel, text in sorted(files.items()) if text is not None
    )


def release(version: str, image_tag: str | None = None, extra: str = "") -> str:
    tag = image_tag or version
    return (
        f"{HEADER}kind: Release\nmetadata: {{name: web-{version.replace('.', '-')}}}\n"
        f'spec:\n  application: web\n  version: "{version}"\n  supportedSystemModels: [rpi4]\n'
        f"  containers:\n    - name: server\n      image: registry.example:5000/web/server:{tag}\n"
        f"      networks: [front]\n      volumes:\n        - {{volume: data, target: /data}}\n"
        f"{extra}"
    )


def deployment(name: str, target: str, version: str = "1.0.0", more: str = "") -> str:
    return (
        f"{HEADER}kind: Deployment\nmetadata: {{name: {name}}}\n"
        f'spec:\n  application: web\n  release: "{version}"\n  {target}\n{more}'
    )


def devices(*entries: tuple[str, str]) -> str:
    return "---\n".join(
        f"{HEADER}kind: Device\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"
        "spec: {systemModel: rpi4}\n"
        for name, labels in entries
    )


def credential(name: str, password: str = PASSWORD) -> str:
    return (
        f"{HEADER}kind: ImageCredential\nmetadata: {{name: {name}}}\nspec:\n"
        f"  registry: registry.example:5000\n  username: {USERNAME}\n  password: {password}\n"
        "sops: {version: 3.11.0}\n"
    )


LYON = "selector: {matchLabels: {site: lyon}}"
THREE_DEVICES = devices(("pi-1", "site: lyon"), ("pi-2", "site: nantes"), ("pi-3", "site: lyon"))


def start(deployment: str, version: str = "1.0.0") -> list[Action]:
    return [
        Action("deploy", deployment, "web", None, version, "new deployment"),
        Action("start", deployment, "web", None, version, "desired state is Running"),
    ]


# -- actions per device ----------------------------------------------------------------------------


def test_identical_revisions_change_nothing() -> None:
    result = review(report(), report())
    assert result == Review([], [], [], [], [], [], {})
    assert result.valid


def test_new_deployment_deploys_and_starts_on_its_device_only() -> None:
    head = report({"nantes.yaml": deployment("web-nantes", "device: pi-2")})
    result = review(report(), head)
    assert result.devices == {"pi-2": start("web-nantes")}
    assert result.valid


def test_state_change_stops_and_starts() -> None:
    stopped = report({"deployment.yaml": deployment("web-lyon", LYON, more="  state: Stopped\n")})
    assert review(report(), stopped).devices == {
        "pi-1": [Action("stop", "web-lyon", "web", "1.0.0", "1.0.0", "desired state is Stopped")]
    }
    assert review(stopped, report()).devices == {
        "pi-1": [Action("start", "web-lyon", "web", "1.0.0", "1.0.0", "desired state is Running")]
    }


def test_upgrade_through_a_selector_lists_only_matching_devices() -> None:
    base = report({"devices.yaml": THREE_DEVICES, "release-1.1.0.yaml": release("1.1.0")})
    head = report(
        {
            "devices.yaml": THREE_DEVICES,
            "release-1.1.0.yaml": release("1.1.0"),
            "deployment.yaml": deployment("web-lyon", LYON, "1.1.0"),
        }
    )
    upgrade = Action(
        "upgrade", "web-lyon", "web", "1.0.0", "1.1.0", "release changed from 1.0.0 to 1.1.0"
    )
    result = review(base, head)
    assert result.devices == {"pi-1": [upgrade], "pi-3": [upgrade]}
    assert result.releases == []  # 1.1.0 was already published in base


def test_publishing_a_release_and_upgrading_in_one_change() -> None:
    head = report(
        {
            "release-1.1.0.yaml": release("1.1.0"),
            "deployment.yaml": deployment("web-lyon", LYON, "1.1.0"),
        }
    )
    result = review(report(), head)
    assert result.releases == [ReleaseChange("web", "1.1.0", "web-1-1-0", "added")]
    assert result.devices == {
        "pi-1": [
            Action(
                "upgrade",
                "web-lyon",
                "web",
                "1.0.0",
                "1.1.0",
                "release changed from 1.0.0 to 1.1.0",
            )
        ]
    }
    assert result.valid


def test_removed_deployment_deletes() -> None:
    result = review(report(), report({"deployment.yaml": None}))
    assert result.devices == {
        "pi-1": [Action("delete", "web-lyon", "web", "1.0.0", None, "deployment removed from git")]
    }
    assert result.valid


def test_redeploy_token_change_redeploys() -> None:
    head = report({"deployment.yaml": deployment("web-lyon", LYON, more='  redeploy: "2"\n')})
    assert review(report(), head).devices == {
        "pi-1": [Action("redeploy", "web-lyon", "web", "1.0.0", "1.0.0", "redeploy requested")]
    }


def test_device_gaining_a_label_gets_the_deployment_on_that_device_only() -> None:
    canary = {"deployment.yaml": deployment("web-canary", "selector: {matchLabels: {ring: a}}")}
    base = report(
        {**canary, "devices.yaml": devices(("pi-1", "ring: a"), ("pi-2", "site: nantes"))}
    )
    head = report(
        {**canary, "devices.yaml": devices(("pi-1", "ring: a"), ("pi-2", "site: nantes, ring: a"))}
    )
    assert review(base, head).devices == {"pi-2": start("web-canary")}


def test_device_removed_from_git_gets_its_deployments_deleted() -> None:
    head = report({"devices.yaml": devices(("pi-2", "site: nantes"))})
    result = review(report(), head)
    assert result.devices == {
        "pi-1": [Action("delete", "web-lyon", "web", "1.0.0", None, "deployment removed from git")]
    }
    assert result.valid  # the selector matching nothing is only a warning
    assert [w.severity for w in result.warnings] == [Severity.WARNING]


# -- immutability ----------------------------------------------------------------------------------


IN_PLACE = "release web 1.0.0 was changed in place; releases are immutable once applied: "
IN_PLACE += "publish a new version instead"


def test_release_changed_in_place_is_an_error_at_its_version() -> None:
    head = report({"release.yaml": release("1.0.0", image_tag="1.0.1")})
    result = review(report(), head)
    assert not result.valid
    assert result.errors == [
        Problem("release.yaml", 6, 12, "Release", "web-1-0-0", "spec.version", IN_PLACE)
    ]
    assert result.releases == [
        ReleaseChange(
            "web",
            "1.0.0",
            "web-1-0-0",
            "changed",
            (
                FieldChange(
                    "containers[server].image",
                    "registry.example:5000/web/server:1.0.0",
                    "registry.example:5000/web/server:1.0.1",
                ),
            ),
        )
    ]
    # the devices still show what the merge would do to them
    assert result.devices == {
        "pi-1": [
            Action(
                "redeploy",
                "web-lyon",
                "web",
                "1.0.0",
                "1.0.0",
                "release content differs from the device",
            )
        ]
    }


def test_a_new_metadata_name_for_the_same_content_is_not_a_change() -> None:
    renamed = BASE["release.yaml"].replace("web-1-0-0", "web-one")
    result = review(report(), report({"release.yaml": renamed}))
    assert result == Review([], [], [], [], [], [], {})


CRED_CHANGED = (
    "ImageCredential registry changed: credentials are immutable; create a new credential and "
    "switch releases to it"
)


def test_credential_reencrypted_or_changed_is_an_error_at_its_spec() -> None:
    base = report({"credentials.yaml": credential("registry")})
    head = report({"credentials.yaml": credential("registry", PASSWORD_AGAIN)})
    result = review(base, head)
    assert not result.valid
    assert result.errors == [
        Problem("credentials.yaml", 5, 3, "ImageCredential", "registry", "spec", CRED_CHANGED)
    ]
    assert result.credentials == [CredentialChange("registry", "changed")]
    assert result.devices == {}


def test_fingerprints_decide_instead_of_the_encrypted_strings() -> None:
    base = report({"credentials.yaml": credential("registry")})
    head = report({"credentials.yaml": credential("registry", PASSWORD_AGAIN)})
    same = review(base, head, ({"registry": "f1"}, {"registry": "f1"}))
    assert same.valid and same.credentials == []
    other = review(base, base, ({"registry": "f1"}, {"registry": "f2"}))
    assert [p.message for p in other.errors] == [CRED_CHANGED]
    # a credential no fingerprint is known for falls back to the encrypted strings
    assert not review(base, head, ({}, {"registry": "f1"})).valid


def test_new_and_removed_credentials_are_listed_by_name_and_never_show_a_secret() -> None:
    base = report({"old.yaml": credential("old-registry")})
    head = report({"new.yaml": credential("new-registry", PASSWORD_AGAIN)})
    result = review(base, head)
    assert result.valid
    assert result.credentials == [
        CredentialChange("new-registry", "added"),
        CredentialChange("old-registry", "removed"),
    ]
    for fmt in Format:
        shown = render(result, fmt)
        assert "new-registry" in shown
        for secret in (USERNAME, PASSWORD, PASSWORD_AGAIN, "ENC[", "AES256"):
            assert secret not in shown


def volume(name: str, spec: str = "") -> str:
    return f"---\n{HEADER}kind: Volume\nmetadata: {{name: {name}}}\n{spec}"


VOLUME_IN_PLACE = (
    "Volume data was changed in place; volumes are immutable once applied: create one under a "
    "new name and switch releases to it"
)
NETWORK_IN_PLACE = (
    "Network front was changed in place; networks are immutable once applied: create one under "
    "a new name and switch releases to it"
)
SIZED = resources("spec: {options: {o: size=1g}}\n")


def test_volume_changed_in_place_is_an_error_at_its_name() -> None:
    """Docker cannot change a volume in place: the agent would silently keep the old one."""
    result = review(report(), report({"resources.yaml": SIZED}))
    assert not result.valid
    assert result.errors == [
        Problem("resources.yaml", 7, 18, "Volume", "data", "metadata.name", VOLUME_IN_PLACE)
    ]
    assert result.volumes == [
        ResourceChange("data", "changed", (FieldChange("options.o", None, "size=1g"),))
    ]
    assert result.networks == [] and result.devices == {}


def test_network_changed_in_place_is_an_error_at_its_name() -> None:
    head = report({"resources.yaml": resources(network="spec: {internal: true}\n")})
    result = review(report(), head)
    assert result.errors == [
        Problem("resources.yaml", 3, 18, "Network", "front", "metadata.name", NETWORK_IN_PLACE)
    ]
    assert result.networks == [
        ResourceChange("front", "changed", (FieldChange("internal", False, True),))
    ]
    assert result.volumes == []


def test_a_new_volume_and_a_release_switched_to_it_are_valid() -> None:
    """The way to change a volume: a new one, a new release using it, the deployment moved."""
    new = release("1.1.0").replace("volume: data,", "volume: data-v2,")
    head = report(
        {
            "resources.yaml": resources(extra=volume("data-v2", "spec: {options: {o: size=1g}}\n")),
            "release-1.1.0.yaml": new,
            "deployment.yaml": deployment("web-lyon", LYON, "1.1.0"),
        }
    )
    result = review(report(), head)
    assert result.valid, result.errors
    assert result.volumes == [ResourceChange("data-v2", "added")]
    assert result.releases == [ReleaseChange("web", "1.1.0", "web-1-1-0", "added")]
    assert [a.action for a in result.devices["pi-1"]] == ["upgrade"]


def test_an_unused_volume_removed_is_valid() -> None:
    base = report({"resources.yaml": resources(extra=volume("cache"))})
    result = review(base, report())
    assert result.valid
    assert result.volumes == [ResourceChange("cache", "removed")]


def test_volume_changes_render_like_release_changes() -> None:
    result = review(report(), report({"resources.yaml": SIZED}))
    assert render(result, Format.text) == (
        f"resources.yaml:7:18: error: Volume/data: metadata.name: {VOLUME_IN_PLACE}\n"
        "volume data: changed\n"
        '  options.o: null -> "size=1g"\n'
        "rejected: 0 devices would change (0 actions); 1 error, 0 warnings\n"
    )
    shown = render(result, Format.markdown)
    assert f"\n- `resources.yaml:7` Volume/data `metadata.name`: {VOLUME_IN_PLACE}\n" in shown
    assert (
        "\n### Volumes\n\n- **changed in place**: `data`\n\n| field | old | new |\n"
        "|---|---|---|\n| `options.o` | — | `size=1g` |\n"
    ) in shown
    assert json.loads(render(result, Format.json))["volumes"] == [
        {
            "name": "data",
            "change": "changed",
            "fields": [{"field": "options.o", "old": None, "new": "size=1g"}],
        }
    ]


def test_head_errors_are_reported_with_the_review() -> None:
    head = report({"deployment.yaml": deployment("web-lyon", LYON, "9.9.9")})
    result = review(report(), head)
    assert not result.valid
    assert [(p.file, p.field) for p in result.errors] == [("deployment.yaml", "spec.release")]
    # the deployment's release is unknown: head wants nothing on pi-1, so the plan deletes
    assert [a.action for a in result.devices["pi-1"]] == ["delete"]


# -- field diff ------------------------------------------------------------------------------------


def test_diff_keys_containers_by_name_and_reports_order() -> None:
    old = {"containers": [{"name": "a", "image": "x", "env": {"K": "1"}}, {"name": "b"}]}
    new = {"containers": [{"name": "b"}, {"name": "a", "image": "y", "env": {"K": "1", "L": "2"}}]}
    assert list(diff(old, new)) == [
        FieldChange("containers[a].image", "x", "y"),
        FieldChange("containers[a].env.L", None, "2"),
        FieldChange("containers order", ["a", "b"], ["b", "a"]),
    ]


def test_diff_added_container_and_plain_lists() -> None:
    old = {"containers": [{"name": "a", "capDrop": []}]}
    new = {"containers": [{"name": "a", "capDrop": ["NET_RAW"]}, {"name": "b", "image": "z"}]}
    assert list(diff(old, new)) == [
        FieldChange("containers[a].capDrop", [], ["NET_RAW"]),
        FieldChange("containers[b]", None, {"name": "b", "image": "z"}),
    ]


# -- renderings ------------------------------------------------------------------------------------


def _upgrade() -> Review:
    return review(
        report({"release-1.1.0.yaml": release("1.1.0")}),
        report(
            {
                "release-1.1.0.yaml": release("1.1.0"),
                "deployment.yaml": deployment("web-lyon", LYON, "1.1.0"),
            }
        ),
    )


def test_json_is_exact() -> None:
    assert json.loads(render(_upgrade(), Format.json)) == {
        "valid": True,
        "errors": [],
        "warnings": [],
        "releases": [],
        "volumes": [],
        "networks": [],
        "credentials": [],
        "devices": {
            "pi-1": [
                {
                    "action": "upgrade",
                    "deployment": "web-lyon",
                    "application": "web",
                    "from": "1.0.0",
                    "to": "1.1.0",
                    "reason": "release changed from 1.0.0 to 1.1.0",
                }
            ]
        },
        "rollouts": [],
    }


def test_text_is_compact_lines() -> None:
    assert render(_upgrade(), Format.text) == (
        "pi-1: upgrade web 1.0.0 -> 1.1.0 [web-lyon]: release changed from 1.0.0 to 1.1.0\n"
        "valid: 1 device would change (1 action); 0 errors, 0 warnings\n"
    )


def test_markdown_is_a_pull_request_comment() -> None:
    assert render(_upgrade(), Format.markdown) == (
        "## ✅ Hedgerow plan: ready to merge\n"
        "\n"
        "1 device would change (1 action); 0 errors, 0 warnings.\n"
        "\n"
        "### Devices\n"
        "\n"
        "| device | action | application | from | to | reason |\n"
        "|---|---|---|---|---|---|\n"
        "| `pi-1` | upgrade | `web` | `1.0.0` | `1.1.0` "
        "| release changed from 1.0.0 to 1.1.0 (web-lyon) |\n"
    )


def test_markdown_of_a_rejected_change_escapes_table_cells() -> None:
    head = report({"release.yaml": release("1.0.0", extra='      env: {A: "x|`y` @team"}\n')})
    shown = render(review(report(), head), Format.markdown)
    assert shown.startswith("## ❌ Hedgerow plan: this merge would be rejected\n")
    assert f"\n- `release.yaml:6` Release/web-1-0-0 `spec.version`: {IN_PLACE}\n" in shown
    assert "| `containers[server].env.A` | — | ``x\\|`y` @team`` |\n" in shown
    assert "\n| device | action | application | from | to | reason |\n" in shown
    assert "No device changes." not in shown


def test_markdown_without_device_changes_says_so() -> None:
    shown = render(review(report(), report()), Format.markdown)
    assert shown.endswith("### Devices\n\nNo device changes.\n")


# -- rollouts ----------------------------------------------------------------------------------

FLEET = devices(
    *[(f"pi-{i}", "site: lyon, ring: canary" if i < 2 else "site: lyon") for i in range(12)]
)
WAVES = """\
  rollout:
    waves:
      - {name: canary, selector: {matchLabels: {ring: canary}}}
      - {name: early, percent: 25}
    maxInFlight: 2
    onFailure: Rollback
"""


def _staged(version: str, more: str = WAVES) -> Report:
    return report(
        {
            "devices.yaml": FLEET,
            "release-1.1.0.yaml": release("1.1.0"),
            "deployment.yaml": deployment("web-lyon", LYON, version, more),
        }
    )


def test_a_new_release_with_a_rollout_shows_its_waves() -> None:
    result = review(_staged("1.0.0"), _staged("1.1.0"))
    (rollout,) = result.rollouts
    assert (rollout.deployment, rollout.from_release, rollout.to_release) == (
        "web-lyon",
        "1.0.0",
        "1.1.0",
    )
    canary, early, rest = rollout.waves
    assert sorted(canary.devices) == ["pi-0", "pi-1"]
    assert len(early.devices) == 3  # 25% of 12, rounded up, from the 10 the canary left
    assert (rest.name, len(rest.devices)) == ("(rest)", 7)
    assert len(result.devices) == 12  # every device is still listed with its upgrade


def test_a_rollout_in_json_text_and_markdown() -> None:
    result = review(_staged("1.0.0"), _staged("1.1.0"))
    (rollout,) = result.rollouts
    canary, early, rest = rollout.waves
    assert json.loads(render(result, Format.json))["rollouts"] == [
        {
            "deployment": "web-lyon",
            "application": "web",
            "from": "1.0.0",
            "to": "1.1.0",
            "waves": [
                {"name": "canary", "devices": list(canary.devices)},
                {"name": "early", "devices": list(early.devices)},
                {"name": "(rest)", "devices": list(rest.devices)},
            ],
            "maxInFlight": 2,
            "maxFailures": 0,
            "onFailure": "Rollback",
            "paused": False,
        }
    ]
    text = render(result, Format.text).splitlines()
    at = text.index(
        "rollout web-lyon: web 1.0.0 -> 1.1.0 in 3 waves; maxInFlight 2 (2 devices), "
        "maxFailures 0 (0 devices), onFailure Rollback"
    )
    assert text[at + 1] == f"  wave canary: 2 devices ({', '.join(canary.devices)})"
    assert text[at + 3] == (f"  wave (rest): 7 devices ({', '.join(rest.devices[:5])} and 2 more)")
    markdown = render(result, Format.markdown)
    assert "### Rollouts\n\n- `web-lyon`: web 1.0.0 -\\> 1.1.0 in 3 waves;" in markdown
    assert "| `(rest)` | 7 devices (" in markdown


def test_state_changes_new_deployments_and_unchanged_releases_start_no_rollout() -> None:
    base = _staged("1.0.0")
    assert review(base, base).rollouts == []
    stopped = _staged("1.0.0", WAVES + "  state: Stopped\n")
    assert review(base, stopped).rollouts == []
    fresh = report({"devices.yaml": FLEET, "release-1.1.0.yaml": release("1.1.0")})
    fresh_deployment = {"deployment.yaml": None}
    assert review(report({**fresh_deployment, "devices.yaml": FLEET}), base).rollouts == []
    assert fresh.valid


def test_a_new_redeploy_token_rolls_out_the_same_release() -> None:
    redeployed = _staged("1.0.0", WAVES + "  redeploy: again\n")
    (rollout,) = review(_staged("1.0.0"), redeployed).rollouts
    assert (rollout.from_release, rollout.to_release) == ("1.0.0", "1.0.0")


def test_a_wave_whose_selector_matches_no_targeted_device_is_a_warning() -> None:
    typo = WAVES.replace("ring: canary}}}", "ring: canry}}}")
    result = _staged("1.0.0", typo)
    (warning,) = result.warnings
    assert warning.field == "spec.rollout.waves[0].selector.matchLabels"
    assert "wave 'canary' matches none of the 12 device(s)" in warning.message
    assert warning.line == 10  # the canary wave's line in deployment.yaml
