"""The manifest fields of rollouts: a container's healthcheck, a deployment's readiness and
rollout, their value types (durations, amounts), and the digests they leave unchanged."""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from reconciler.core.desired import spec_digest
from reconciler.manifests.model.deployment import Rollout
from reconciler.manifests.model.fields import Amount, amount_of
from reconciler.manifests.validate import Report, validate_files
from reconciler.wire import duration_ns

Validate = Callable[..., Report]

# -- durations and amounts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("1m30s", 90), ("2h", 7200), ("500ms", 0.5), ("1h1m1s", 3661), ("0s", 0)],
)
def test_durations_are_read_as_compose_writes_them(value: str, seconds: float) -> None:
    assert duration_ns(value) == seconds * 10**9


@pytest.mark.parametrize("value", ["30", "1.5s", "s", "1 m", "-1s", "1d", "30S", ""])
def test_what_is_not_a_duration_is_refused_with_the_way_to_write_one(value: str) -> None:
    with pytest.raises(ValueError, match="such as '30s' or '1m30s'"):
        duration_ns(value)


def test_a_duration_docker_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than Docker accepts"):
        duration_ns("3000000h")


@pytest.mark.parametrize("value", [0, 3, "0%", "10%", "100%"])
def test_amounts_are_counts_or_percentages(value: int | str) -> None:
    assert TypeAdapter(Amount).validate_python(value) == value


@pytest.mark.parametrize("value", [-1, "101%", "10", "ten", "10 %", 1.5, True, None])
def test_other_amounts_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Amount).validate_python(value)


@given(st.integers(0, 100), st.integers(0, 10_000))
def test_a_percentage_of_a_whole_rounds_up_and_never_exceeds_it(percent: int, whole: int) -> None:
    taken = amount_of(f"{percent}%", whole)
    assert taken * 100 >= percent * whole > (taken - 1) * 100 or taken == 0 == percent * whole
    assert 0 <= taken <= whole


# -- through a repository: each refusal names its line and field ----------------------------------


def _release(healthcheck: str) -> dict[str, str]:
    text = dedent(
        """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Release
        metadata: {name: web-1-0-0}
        spec:
          application: web
          version: "1.0.0"
          supportedSystemModels: [rpi4]
          containers:
            - name: server
              image: registry.example:5000/web/server:1.0.0
              networks: [front]
              volumes:
                - {volume: data, target: /data}
        """
    )
    return {"release.yaml": text + "".join(f"      {line}\n" for line in healthcheck.splitlines())}


def _deployment(extra: str) -> dict[str, str]:
    text = dedent(
        """\
        apiVersion: hedgerow.dev/v1alpha1
        kind: Deployment
        metadata: {name: web-lyon}
        spec:
          application: web
          release: "1.0.0"
          selector: {matchLabels: {site: lyon}}
        """
    )
    return {"deployment.yaml": text + "".join(f"  {line}\n" for line in extra.splitlines())}


def _line(files: dict[str, str], needle: str) -> int:
    (text,) = files.values()
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _only(report: Report) -> tuple[int, str | None, str]:
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    return problem.line, problem.field, problem.message


@pytest.mark.parametrize(
    "healthcheck",
    [
        'healthcheck: {test: ["CMD", "curl", "-f", "http://localhost/"]}',
        'healthcheck: {test: ["CMD-SHELL", "pg_isready -U postgres"], interval: 10s}',
        'healthcheck: {test: ["NONE"]}',
        "healthcheck:\n  test: [CMD, wget, -q, localhost]\n  interval: 1m30s\n  timeout: 5s\n"
        "  retries: 3\n  startPeriod: 2m",
    ],
)
def test_healthchecks_as_compose_writes_them_are_valid(
    validate_repo: Validate, healthcheck: str
) -> None:
    assert validate_repo(_release(healthcheck)).problems == []


@pytest.mark.parametrize(
    ("healthcheck", "needle", "field", "message"),
    [
        ('healthcheck: {test: ["CMD"]}', "test", "test", '"CMD" test needs the command'),
        (
            'healthcheck: {test: ["CMD-SHELL", "a", "b"]}',
            "test",
            "test",
            '"CMD-SHELL" test takes one shell command',
        ),
        ('healthcheck: {test: ["NONE", "x"]}', "test", "test", '"NONE" test takes nothing'),
        ('healthcheck: {test: ["RUN", "x"]}', "test", "test[0]", "'RUN' is not \"CMD\""),
        ("healthcheck: {test: []}", "test", "test", "at least 1 item"),
        ('healthcheck:\n  test: ["NONE"]\n  interval: 1.5s', "interval", "interval", "30s"),
        ('healthcheck:\n  test: ["NONE"]\n  timeout: 0s', "timeout", "timeout", "longer than 0s"),
        ('healthcheck:\n  test: ["NONE"]\n  retries: -1', "retries", "retries", "0"),
        ('healthcheck:\n  test: ["NONE"]\n  startPeriod: 1', "startPeriod", "startPeriod", "str"),
    ],
)
def test_a_wrong_healthcheck_names_its_line_and_field(
    validate_repo: Validate, healthcheck: str, needle: str, field: str, message: str
) -> None:
    files = _release(healthcheck)
    line, found, text = _only(validate_repo(files))
    assert (line, found) == (_line(files, needle), f"spec.containers[0].healthcheck.{field}")
    assert message in text


def test_a_deployment_takes_readiness_and_a_rollout(validate_repo: Validate) -> None:
    files = _deployment(
        dedent(
            """\
            readiness: {minReadySeconds: 30, progressDeadlineSeconds: 600}
            rollout:
              waves:
                - name: canary
                  selector: {matchLabels: {ring: canary}}
                - {name: early, percent: 10}
                - name: rest
              maxInFlight: 5%
              maxFailures: 2
              bakeSeconds: 600
              onFailure: Rollback
              paused: true
            """
        )
    )
    report = validate_repo(files)
    assert report.errors == []
    # BASE has no device labelled ring: canary, which is said before the merge
    assert [p.field for p in report.warnings] == ["spec.rollout.waves[0].selector.matchLabels"]
    (deployment,) = report.catalog.deployments.values()
    spec = deployment.manifest.spec
    assert (spec.readiness.min_ready_seconds, spec.readiness.progress_deadline_seconds) == (30, 600)
    assert spec.rollout is not None
    assert [w.name for w in spec.rollout.waves] == ["canary", "early", "rest"]
    assert (spec.rollout.max_in_flight, spec.rollout.max_failures) == ("5%", 2)
    assert (spec.rollout.on_failure, spec.rollout.paused) == ("Rollback", True)


def test_the_defaults_are_the_issues() -> None:
    rollout = Rollout.model_validate({})
    assert (rollout.waves, rollout.max_in_flight, rollout.max_failures) == ([], "10%", 0)
    assert (rollout.bake_seconds, rollout.on_failure, rollout.paused) == (0, "Halt", False)


@pytest.mark.parametrize(
    ("rollout", "needle", "field", "message"),
    [
        (
            "rollout:\n  waves:\n    - {name: a, percent: 10}\n    - {name: a, percent: 20}",
            "percent: 20",
            "rollout.waves[1].name",
            "wave 'a' is waves[0] too",
        ),
        (
            "rollout:\n  waves:\n    - {name: a, percent: 10, selector: {matchLabels: {x: y}}}",
            "name: a",
            "rollout.waves[0].percent",
            "a selector or a percent, not both",
        ),
        (
            "rollout:\n  waves:\n    - {name: rest}\n    - {name: late, percent: 10}",
            "name: rest",
            "rollout.waves[0]",
            "so it must be the last",
        ),
        (
            "rollout:\n  waves:\n    - {name: a, percent: 0}",
            "percent",
            "rollout.waves[0].percent",
            "1",
        ),
        (
            "rollout:\n  waves:\n    - {name: a, percent: 101}",
            "percent",
            "rollout.waves[0].percent",
            "100",
        ),
        ("rollout:\n  maxInFlight: 150%", "maxInFlight", "rollout.maxInFlight", "'150%'"),
        ("rollout:\n  maxFailures: -1", "maxFailures", "rollout.maxFailures", "0 or more"),
        ("rollout:\n  onFailure: Retry", "onFailure", "rollout.onFailure", "Halt"),
        ("rollout:\n  bakeSeconds: -5", "bakeSeconds", "rollout.bakeSeconds", "0"),
        ("readiness: {minReadySeconds: -1}", "minReadySeconds", "readiness.minReadySeconds", "0"),
        (
            "readiness: {progressDeadlineSeconds: 0}",
            "progressDeadlineSeconds",
            "readiness.progressDeadlineSeconds",
            "1",
        ),
    ],
)
def test_a_wrong_rollout_names_its_line_and_field(
    validate_repo: Validate, rollout: str, needle: str, field: str, message: str
) -> None:
    files = _deployment(rollout)
    line, found, text = _only(validate_repo(files))
    assert (line, found) == (_line(files, needle), f"spec.{field}")
    assert message in text


# -- digests -------------------------------------------------------------------------------------

GOLDEN = """\
apiVersion: hedgerow.dev/v1alpha1
kind: Application
metadata: {name: web}
spec: {description: web}
---
apiVersion: hedgerow.dev/v1alpha1
kind: Release
metadata: {name: web-1-0-0}
spec:
  application: web
  version: "1.0.0"
  containers:
    - name: web
      image: registry.example/web:1.0.0
      env: {MODE: edge}
      portBindings: ["8080:80"]
      memory: 64Mi
      dependsOn: [db]
    - name: db
      image: postgres:16
      tmpfs: [{path: /run}]
"""
# This release's digest before healthchecks existed (computed by the code of commit 193b2f7).
# Devices' containers carry their release's digest: were it to change when the controller is
# upgraded, every device would redeploy every release.
GOLDEN_DIGEST = "69e8e422d1ed3cda9494c91f59e174aaa1bfbc9b3a11be5a11b8087f1a43273c"


def _digest(text: str) -> str:
    report = validate_files([("release.yaml", text.encode())])
    assert report.valid, report.errors
    (release,) = report.catalog.releases.values()
    return spec_digest(release.manifest)


def test_a_release_without_the_new_fields_keeps_the_digest_it_had_before_them() -> None:
    assert _digest(GOLDEN) == GOLDEN_DIGEST


def test_a_healthcheck_changes_the_digest_it_is_added_to() -> None:
    checked = GOLDEN.replace(
        "      dependsOn: [db]\n", "      dependsOn: [db]\n      healthcheck: {test: [NONE]}\n"
    )
    assert _digest(checked) != GOLDEN_DIGEST
