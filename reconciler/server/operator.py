"""The operator API: what `hedgerow status`, `hedgerow events` and `hedgerow plan
--controller` read, behind the operator token. Read-only: changes go through git."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field

from reconciler import wire
from reconciler.core.rollout_status import decoded, rollout_json
from reconciler.server.auth import OperatorAuth, operator_access
from reconciler.server.backend import Backend
from reconciler.server.bodies import Out
from reconciler.server.errors import described
from reconciler.store import EventRecord


class Rejected(Out):
    revision: str
    at: datetime
    errors: list[dict[str, Any]]


class ControllerStatus(Out):
    revision: str | None = Field(description="The applied revision; None before the first.")
    rejected: list[Rejected] = Field(description="The last rejected commits, newest first.")
    deployments: list[dict[str, Any]] = Field(description="Status of each deployment on a device.")


class EventOut(BaseModel):
    id: int
    at: datetime
    device: str | None
    deployment: str | None
    event: str
    message: str
    revision: str | None


class DesiredOut(Out):
    deployment: str
    application: str
    release: str
    state: Literal["Running", "Stopped"]
    redeploy: str | None
    digest: str


class Deployments(Out):
    revision: str | None
    devices: dict[str, list[DesiredOut]] = Field(description="What each device should run.")


def install(app: FastAPI, backend: Backend, auth: OperatorAuth) -> None:
    store = backend.store
    operator = [Depends(operator_access(auth))]
    refused = described(_401="Neither the operator token nor a viewer token.")

    @app.get(
        "/v1/status",
        operation_id="getStatus",
        tags=["operator"],
        response_model=ControllerStatus,
        dependencies=operator,
        responses=refused,
    )
    async def status() -> ControllerStatus:
        """The applied revision, the last rejected commits with their findings, and every
        deployment's status on every device."""

        def read() -> ControllerStatus:
            return ControllerStatus(
                revision=store.applied_revision(),
                rejected=[
                    Rejected(revision=r.sha, at=r.at, errors=r.errors)
                    for r in store.rejected(limit=10)
                ],
                deployments=[s.status.to_json() for s in store.statuses()],
            )

        return await asyncio.to_thread(read)

    @app.get(
        "/v1/events",
        operation_id="listEvents",
        tags=["operator"],
        response_model=list[EventOut],
        dependencies=operator,
        responses=refused,
    )
    async def events(
        device: str | None = None,
        deployment: str | None = None,
        after: Annotated[int | None, Query(ge=0, description="Events after this id.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[EventOut]:
        """The event history, oldest first; page with `after` set to the last id seen."""
        found = await asyncio.to_thread(store.events, device, deployment, after, limit)
        return [_event(e) for e in found]

    @app.get(
        "/v1/deployments",
        operation_id="getDeployments",
        tags=["operator"],
        response_model=Deployments,
        dependencies=operator,
        responses=refused,
    )
    async def deployments() -> Deployments:
        """What each device should run at the applied revision."""
        fleet = backend.fleet()
        if fleet is None:
            return Deployments(revision=None, devices={})
        return Deployments(
            revision=backend.revision(),
            devices={
                device: [
                    DesiredOut.model_validate(want, from_attributes=True)
                    for want in sorted(wanted.values(), key=lambda w: w.deployment)
                ]
                for device, wanted in sorted(fleet.items())
            },
        )

    @app.get(
        "/v1/rollouts",
        operation_id="getRollouts",
        tags=["operator"],
        response_model=list[dict[str, Any]],
        dependencies=operator,
        responses=refused,
    )
    async def rollouts() -> list[dict[str, Any]]:
        """Every rollout in progress: its waves, devices by outcome, failed devices and why
        (what `hedgerow rollout status -o json` prints)."""
        found = decoded(await asyncio.to_thread(store.rollouts))
        return [rollout_json(r) for r in found]

    @app.get(
        "/v1/devices",
        operation_id="listDevices",
        tags=["operator"],
        response_model=list[dict[str, Any]],
        dependencies=operator,
        responses=refused,
    )
    async def devices(
        pending: Annotated[
            bool, Query(description="Only devices enrolled and not admitted yet.")
        ] = False,
    ) -> list[dict[str, Any]]:
        """The devices of the applied revision and every enrolled one: admitted or Pending,
        their facts, and when each last reported and polled (what `hedgerow device list`
        prints)."""
        rows = await asyncio.to_thread(store.inventory)
        return [row.to_json() for row in rows if row.pending or not pending]

    @app.get(
        "/v1/observed",
        operation_id="getObserved",
        tags=["operator"],
        response_model=dict[str, dict[str, Any]],
        dependencies=operator,
        responses=refused,
    )
    async def observed() -> dict[str, dict[str, Any]]:
        """Each device's last status report (without its events), by device."""
        reports = await asyncio.to_thread(store.observed_all)
        return {device: _without_events(report) for device, report in reports.items()}


def _without_events(report: wire.StatusReport) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(report)
    document.pop("events", None)  # a report's events are in /v1/events
    return document


def _event(record: EventRecord) -> EventOut:
    return EventOut(
        id=record.id,
        at=record.at,
        device=record.device,
        deployment=record.deployment,
        event=record.kind,
        message=record.message,
        revision=record.revision,
    )
