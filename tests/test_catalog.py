"""Rules between documents, the catalog's lookups, and "one mistake gives one finding"."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler.manifests.catalog import Catalog
from reconciler.manifests.model import Deployment
from reconciler.manifests.problems import Problem, Severity
from reconciler.manifests.validate import Report

Validate = Callable[..., Report]

HEADER = "apiVersion: hedgerow.dev/v1alpha1\n"
USERNAME = (
    "ENC[AES256_GCM,data:0TqnWg==,iv:9j7TeIyJ+3uqXepTVVNMJYl0XLxwT+XNprRM38O9fkY=,"
    "tag:fuu5s0FFyFhQem/ZAzMNZQ==,type:str]"
)
PASSWORD = (
    "ENC[AES256_GCM,data:sJAhMdrAUsQ2aOjRNnLz7rRG0UpYDow=,"
    "iv:hd1f60NHMRGBs+yHmXU70rkQrbflVjnJ2V3ty/vgvyQ=,tag:actkRkiW7cuoAPVIhoraMg==,type:str]"
)


def _device(name: str, model: str = "rpi4", **labels: str) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return (
        f"{HEADER}kind: Device\nmetadata: {{name: {name}, labels: {{{shown}}}}}\n"
        f"spec: {{systemModel: {model}}}\n"
    )


def _deployment(name: str, target: str, release: str = "1.0.0", app: str = "web") -> str:
    return (
        f"{HEADER}kind: Deployment\nmetadata: {{name: {name}}}\n"
        f'spec:\n  application: {app}\n  release: "{release}"\n  {target}\n'
    )


def _release(
    name: str, version: str, image: str, app: str = "web", extra: str = "", models: str = "[]"
) -> str:
    return (
        f"{HEADER}kind: Release\nmetadata: {{name: {name}}}\n"
        f'spec:\n  application: {app}\n  version: "{version}"\n'
        f"  supportedSystemModels: {models}\n"
        f"  containers:\n    - name: main\n      image: {image}\n{extra}"
    )


def _credential(name: str, registry: str | None) -> str:
    where = f"  registry: {registry}\n" if registry else ""
    return (
        f"{HEADER}kind: ImageCredential\nmetadata: {{name: {name}}}\nspec:\n{where}"
        f"  username: {USERNAME}\n  password: {PASSWORD}\nsops: {{version: 3.11.0}}\n"
    )


def _docs(*documents: str) -> str:
    return "---\n".join(documents)


def _findings(report: Report) -> list[tuple[str, str, int, str | None, str]]:
    return [(p.severity, p.file, p.line, p.field, p.message) for p in report.problems]


def _only(report: Report) -> Problem:
    assert len(report.problems) == 1, _findings(report)
    return report.problems[0]


# -- Catalog lookups ---------------------------------------------------------------------------


def _catalog(validate_repo: Validate, files: dict[str, str]) -> Catalog:
    report = validate_repo(files)
    assert report.errors == [], _findings(report)
    return report.catalog


def _targets(catalog: Catalog, deployment: str) -> list[str]:
    manifest: Deployment = catalog.deployments[deployment].manifest
    return [d.name for d in catalog.targets(manifest)]


def test_selector_targets_devices_with_all_labels_in_name_order(validate_repo: Validate) -> None:
    devices = _docs(
        _device("z-canary", site="paris", ring="canary"),
        _device("a-canary", site="paris", ring="canary", extra="more"),
        _device("stable", site="paris", ring="stable"),
        _device("other-site", site="rome", ring="canary"),
    )
    deployments = _docs(
        _deployment("paris-canary", "selector: {matchLabels: {site: paris, ring: canary}}"),
        _deployment("rome", "selector: {matchLabels: {site: rome}}", app="api"),
    )
    catalog = _catalog(
        validate_repo,
        {
            "paris.yaml": devices,
            "deploy.yaml": deployments,
            "api.yaml": _docs(
                f"{HEADER}kind: Application\nmetadata: {{name: api}}\n",
                _release("api-1-0-0", "1.0.0", "api:1.0.0", app="api"),
            ),
        },
    )
    assert _targets(catalog, "paris-canary") == ["a-canary", "z-canary"]
    assert _targets(catalog, "rome") == ["other-site"]
    assert _targets(catalog, "web-lyon") == ["pi-1"]


def test_device_target_is_that_device_only(validate_repo: Validate) -> None:
    catalog = _catalog(validate_repo, {"d.yaml": _deployment("web-pi-2", "device: pi-2")})
    assert _targets(catalog, "web-pi-2") == ["pi-2"]


def test_selector_matching_nothing_targets_nothing_with_a_warning(validate_repo: Validate) -> None:
    report = validate_repo({"d.yaml": _deployment("none", "selector: {matchLabels: {site: x}}")})
    assert report.valid
    assert _targets(report.catalog, "none") == []
    problem = _only(report)
    assert (problem.severity, problem.file, problem.line, problem.field) == (
        Severity.WARNING,
        "d.yaml",
        7,
        "spec.selector.matchLabels",
    )


def test_release_lookup_by_application_and_version(validate_repo: Validate) -> None:
    catalog = _catalog(
        validate_repo,
        {
            "more.yaml": _docs(
                _release("web-1-10-0", "1.10.0", "web:1.10.0"),
                _release("web-1-2-0", "1.2.0", "web:1.2.0"),
            )
        },
    )
    found = catalog.release("web", "1.2.0")
    assert found is not None
    assert (found.name, found.document.file) == ("web-1-2-0", "more.yaml")
    base = catalog.release("web", "1.0.0")
    assert base is not None and base.name == "web-1-0-0"
    assert catalog.release("web", "1.3.0") is None
    assert catalog.release("api", "1.0.0") is None
    assert set(catalog.versions("web")) == {"1.0.0", "1.2.0", "1.10.0"}
    assert catalog.versions("api") == []


# -- references --------------------------------------------------------------------------------


def test_missing_reference_lists_what_is_defined_when_nothing_is_close(
    validate_repo: Validate,
) -> None:
    report = validate_repo({"d.yaml": _deployment("web-x", "device: xyzzy")})
    problem = _only(report)
    assert (problem.line, problem.field) == (7, "spec.device")
    assert problem.message == "Device 'xyzzy' is not defined; defined: pi-1, pi-2"


def test_missing_reference_says_none_is_defined(validate_repo: Validate) -> None:
    extra = "      imageCredential: registry\n"
    report = validate_repo({"r.yaml": _release("web-2-0-0", "2.0.0", "web:2.0.0", extra=extra)})
    problem = _only(report)
    assert (problem.line, problem.field) == (11, "spec.containers[0].imageCredential")
    assert (
        problem.message
        == "ImageCredential 'registry' is not defined; no ImageCredential is defined"
    )


def test_deployment_of_unknown_application_does_not_also_complain_about_release(
    validate_repo: Validate,
) -> None:
    problem = _only(validate_repo({"d.yaml": _deployment("api-pi-2", "device: pi-2", app="api")}))
    assert (problem.field, problem.message) == (
        "spec.application",
        "Application 'api' is not defined; defined: web",
    )


def test_unknown_release_lists_released_versions_in_order(validate_repo: Validate) -> None:
    report = validate_repo(
        {
            "r.yaml": _release("web-1-1-0", "1.1.0", "web:1.1.0"),
            "d.yaml": _deployment("web-pi-2", "device: pi-2", release="2.0.0"),
        }
    )
    problem = _only(report)
    assert (problem.file, problem.line, problem.field) == ("d.yaml", 6, "spec.release")
    assert problem.message == "'web' has no release 2.0.0; released versions: 1.0.0, 1.1.0"


def test_release_with_empty_supported_models_runs_anywhere(validate_repo: Validate) -> None:
    files = {
        "r.yaml": _release("web-2-0-0", "2.0.0", "web:2.0.0"),
        "orin.yaml": _device("orin-1", "jetson-orin", site="paris"),
        "d.yaml": _deployment("web-orin-1", "device: orin-1", release="2.0.0"),
    }
    assert validate_repo(files).problems == []


def test_different_applications_may_share_a_device(validate_repo: Validate) -> None:
    api = _docs(
        f"{HEADER}kind: Application\nmetadata: {{name: api}}\n",
        _release("api-1-0-0", "1.0.0", "api:1.0.0", app="api"),
        _deployment("api-pi-1", "device: pi-1", app="api"),
    )
    assert validate_repo({"api.yaml": api}).problems == []


def test_device_and_selector_overlap_is_reported_once_per_device(validate_repo: Validate) -> None:
    # web-lyon (BASE) selects pi-1; web-all selects pi-1 and pi-2 and pi-2 is free.
    devices = _docs(_device("pi-1", site="lyon", tier="edge"), _device("pi-2", tier="edge"))
    web_all = _deployment("web-all", "selector: {matchLabels: {tier: edge}}")
    report = validate_repo({"devices.yaml": devices, "z.yaml": web_all})
    problem = _only(report)
    assert (problem.file, problem.line, problem.field) == ("z.yaml", 7, "spec.selector")
    assert problem.message.startswith(
        "device 'pi-1' already runs 'web' through Deployment 'web-lyon' at deployment.yaml:1"
    )


def test_duplicate_name_keeps_the_first_definition(validate_repo: Validate) -> None:
    report = validate_repo({"z.yaml": _device("pi-1", "jetson-orin", site="rome")})
    problem = _only(report)
    assert (problem.file, problem.line, problem.field) == ("z.yaml", 3, "metadata.name")
    assert problem.message == (
        "Device 'pi-1' is already defined at devices.yaml:1; names are unique per kind"
    )
    assert report.catalog.devices["pi-1"].manifest.spec.system_model == "rpi4"


def test_duplicate_version_names_the_first_release(validate_repo: Validate) -> None:
    report = validate_repo({"z.yaml": _release("web-again", "1.0.0", "web:1.0.0")})
    problem = _only(report)
    assert (problem.file, problem.line, problem.field) == ("z.yaml", 6, "spec.version")
    assert problem.message == (
        "version 1.0.0 of 'web' is already released by 'web-1-0-0' at release.yaml:1; "
        "publish a new version instead"
    )


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "image"),
    [
        ("registry.example:5000", "registry.example:5000/web/server:2.0.0"),
        (None, "registry.example:5000/web/server:2.0.0"),
        ("docker.io", "nginx:1.27"),
        ("docker.io", "library/nginx:1.27"),
        ("index.docker.io", "docker.io/library/nginx:1.27"),
    ],
    ids=["same-host", "any-registry", "hub-short", "hub-path", "hub-alias"],
)
def test_credential_for_the_image_registry_is_silent(
    validate_repo: Validate, registry: str | None, image: str
) -> None:
    files = {
        "cred.yaml": _credential("pull", registry),
        "r.yaml": _release("web-2-0-0", "2.0.0", image, extra="      imageCredential: pull\n"),
    }
    assert validate_repo(files).problems == []


@pytest.mark.parametrize(
    ("registry", "image"),
    [
        ("docker.io", "registry.example:5000/web/server:2.0.0"),
        ("registry.example:5000", "nginx:1.27"),
        ("registry.example", "registry.example:5000/web/server:2.0.0"),
    ],
    ids=["hub-credential", "hub-image", "port-differs"],
)
def test_credential_for_another_registry_is_a_warning(
    validate_repo: Validate, registry: str, image: str
) -> None:
    files = {
        "cred.yaml": _credential("pull", registry),
        "r.yaml": _release("web-2-0-0", "2.0.0", image, extra="      imageCredential: pull\n"),
    }
    report = validate_repo(files)
    assert report.valid
    problem = _only(report)
    assert (problem.severity, problem.file, problem.line, problem.field) == (
        Severity.WARNING,
        "r.yaml",
        11,
        "spec.containers[0].imageCredential",
    )
    assert problem.message == (
        f"ImageCredential 'pull' is for registry {registry!r}, not this image's registry"
    )


# -- one mistake, one finding -------------------------------------------------------------------


def test_broken_release_does_not_make_its_deployment_fail(validate_repo: Validate) -> None:
    report = validate_repo(
        {
            "r.yaml": _release("web-2-0-0", "2.0.0", "registry.example:5000/Web:2.0.0"),
            "d.yaml": _deployment("web-pi-2", "device: pi-2", release="2.0.0"),
        }
    )
    problem = _only(report)
    assert (problem.file, problem.line, problem.field) == ("r.yaml", 10, "spec.containers[0].image")
    assert "must be lower-case" in problem.message
    assert report.catalog.release("web", "2.0.0") is None  # broken documents are not indexed
    assert "web-pi-2" in report.catalog.deployments


def test_broken_device_does_not_make_its_deployment_fail(validate_repo: Validate) -> None:
    report = validate_repo(
        {
            "orin.yaml": _device("orin-1", "''", site="paris"),
            "d.yaml": _deployment("web-orin-1", "device: orin-1"),
        }
    )
    problem = _only(report)
    assert (problem.file, problem.line, problem.field) == ("orin.yaml", 4, "spec.systemModel")


def test_broken_application_does_not_make_its_release_and_deployment_fail(
    validate_repo: Validate,
) -> None:
    api = _docs(
        f"{HEADER}kind: Application\nmetadata: {{name: api}}\nspec: {{descripton: typo}}\n",
        _release("api-1-0-0", "1.0.0", "api:1.0.0", app="api"),
        _deployment("api-pi-1", "device: pi-1", app="api"),
    )
    problem = _only(validate_repo({"api.yaml": api}))
    assert (problem.line, problem.field) == (4, "spec.descripton")
    assert problem.message.startswith("unknown field 'descripton' (did you mean 'description'?)")


def test_broken_resources_do_not_make_the_release_fail(validate_repo: Validate) -> None:
    resources = _docs(
        f"{HEADER}kind: Network\nmetadata: {{name: front}}\nspec: {{driver: ''}}\n",
        f"{HEADER}kind: Volume\nmetadata: {{name: data}}\nspec: {{deletionPolicy: Keep}}\n",
        _credential("pull", "registry example"),
    )
    extra = "      imageCredential: pull\n"
    report = validate_repo(
        {
            "resources.yaml": resources,
            "r.yaml": _release(
                "web-2-0-0", "2.0.0", "registry.example:5000/web:2.0.0", extra=extra
            ),
        }
    )
    assert [(p.file, p.field) for p in report.problems] == [
        ("resources.yaml", "spec.driver"),
        ("resources.yaml", "spec.deletionPolicy"),
        ("resources.yaml", "spec.registry"),
    ]


def test_device_refused_by_the_loader_does_not_make_its_deployment_fail(
    validate_repo: Validate,
) -> None:
    orin = _device("orin-1", site="paris") + "spec: {systemModel: rpi4}\n"  # duplicate key spec
    report = validate_repo(
        {"orin.yaml": orin, "d.yaml": _deployment("web-orin-1", "device: orin-1")}
    )
    assert [(p.file, p.kind, p.name) for p in report.problems] == [
        ("orin.yaml", "Device", "orin-1")
    ]
