"""Prometheus metrics: reconcile durations, queue depth, deployments by condition, polls."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from reconciler.core.rollout import PHASES
from reconciler.core.rollout_status import counts as rollout_counts
from reconciler.core.rollout_status import decoded
from reconciler.server.backend import Backend


class Metrics:
    """One registry per app, so that several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "hedgerow_reconcile_seconds", "Time to reconcile one device.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "hedgerow_queue_depth",
            "Devices ready and waiting for a worker.",
            registry=self.registry,
        )
        self.deployments = Gauge(
            "hedgerow_deployments",
            "Deployments on devices, by condition type and status.",
            ["condition", "status"],
            registry=self.registry,
        )
        self.rollout_devices = Gauge(
            "hedgerow_rollout_devices",
            "Devices of each rollout in progress, by outcome.",
            ["deployment", "outcome"],
            registry=self.registry,
        )
        self.rollout_state = Gauge(
            "hedgerow_rollout_state",
            "1 for the state each rollout in progress is in, 0 for the others.",
            ["deployment", "state"],
            registry=self.registry,
        )
        self.polls = Counter(
            "hedgerow_polls_total",
            "Desired-state polls by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self._poll_codes: dict[int, Any] = {}

    def poll(self, code: int) -> None:
        """Count a poll; the labelled child is looked up once per code (a poll is hot)."""
        child = self._poll_codes.get(code)
        if child is None:
            child = self._poll_codes[code] = self.polls.labels(code=str(code))
        child.inc()


def install(app: FastAPI, backend: Backend, metrics: Metrics) -> None:
    backend.on_reconciled(metrics.reconcile_seconds.observe)

    @app.get(
        "/metrics",
        operation_id="getMetrics",
        tags=["metrics"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus text format: reconcile time, queue depth, conditions, polls. The
        Content-Type's `version` is the installed prometheus-client's text format."""
        counts = await asyncio.to_thread(backend.store.condition_counts)
        metrics.deployments.clear()
        for (condition, value), n in sorted(counts.items()):
            metrics.deployments.labels(condition=condition, status=value).set(n)
        metrics.rollout_devices.clear()
        metrics.rollout_state.clear()
        for record in decoded(await asyncio.to_thread(backend.store.rollouts)):
            for outcome, n in rollout_counts(record).items():
                metrics.rollout_devices.labels(record.deployment, outcome).set(n)
            for phase in PHASES:
                current = 1 if record.state.phase == phase else 0
                metrics.rollout_state.labels(record.deployment, phase).set(current)
        metrics.queue_depth.set(backend.queue_depth())
        # The format and its content type come from the same library version, which the
        # OpenAPI document does not name (`text/plain`): 0.20 writes 0.0.4, newer 1.0.0.
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
