"""The operator API: what `hedgerow status`, `hedgerow events` and `hedgerow plan
--controller` read, behind the operator token. Read-only: changes go through git."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from reconciler import wire
from reconciler.core.rollout_status import decoded, rollout_json
from reconciler.server.auth import OperatorAuth, operator_access
from reconciler.server.backend import Backend
from reconciler.server.bodies import Out
from reconciler.server.dashboard.data import Pages
from reconciler.server.dashboard.model import DeviceQuery
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


def install(app: FastAPI, backend: Backend, auth: OperatorAuth, pages: Pages) -> None:
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
        before: Annotated[
            int | None, Query(ge=0, description="Newest first: events before this id.")
        ] = None,
        event: Annotated[str | None, Query(description="Only events of this kind.")] = None,
        order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest first.")] = "asc",
    ) -> list[EventOut]:
        """The event history, oldest first (page with `after` set to the last id seen), or
        newest first with `order=desc` (page with `before`), as the dashboard shows it."""
        if order == "desc" or before is not None or event is not None:
            found = await asyncio.to_thread(
                store.recent_events, device, deployment, event, before, limit
            )
        else:
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
        "/v1/overview",
        operation_id="getOverview",
        tags=["operator"],
        response_model=dict[str, Any],
        dependencies=operator,
        responses=refused,
    )
    async def overview() -> dict[str, Any]:
        """The dashboard's overview: the applied revision and its commit subject, the last
        rejected commit with every error (when newer), devices by condition, rollouts in
        progress with their waves, and the last events."""
        return await pages.overview()

    @app.get(
        "/v1/devices",
        operation_id="listDevices",
        tags=["operator"],
        response_model=dict[str, Any],
        dependencies=operator,
        responses={**refused, **described(_422="A filter, sort or page that cannot be.")},
    )
    async def devices(
        request: Request,
        label: Annotated[
            list[str] | None, Query(description="k=v; repeat for all of them.")
        ] = None,
        model: Annotated[str | None, Query(description="A system model.")] = None,
        condition: Annotated[
            str | None, Query(description="Ready, Progressing, Degraded, Offline or Pending.")
        ] = None,
        application: Annotated[str | None, Query(description="Devices that run it.")] = None,
        q: Annotated[str | None, Query(description="Part of the device's name.")] = None,
        sort: Annotated[
            str, Query(description="device, condition, lastSeen, freeDisk or model; -KEY descends.")
        ] = "device",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(alias="perPage", ge=1, le=500)] = 50,
        pending: Annotated[bool, Query(description="Only Pending (enrolled) devices.")] = False,
    ) -> dict[str, Any]:
        """The devices of the applied revision and every enrolled one, filtered, sorted and
        paged: what the dashboard's devices page shows, and `hedgerow device list`."""
        params: dict[str, str | list[str]] = {
            "label": label or [],
            "sort": sort,
            "page": str(page),
            "perPage": str(per_page),
        }
        for key, value in (("model", model), ("application", application), ("q", q),
                           ("condition", "Pending" if pending else condition)):  # fmt: skip
            if value is not None:
                params[key] = value
        try:
            query = DeviceQuery.parse(params)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return await pages.devices(query)

    @app.get(
        "/v1/devices/{name}",
        operation_id="getDevice",
        tags=["operator"],
        response_model=dict[str, Any],
        dependencies=operator,
        responses={**refused, **described(_404="No such device.")},
    )
    async def device(name: str) -> dict[str, Any]:
        """One device: labels, facts, each deployment's desired and observed release with its
        conditions, its containers, its last events."""
        return _found(await pages.device(name), "device", name)

    @app.get(
        "/v1/deployments/{name}",
        operation_id="getDeployment",
        tags=["operator"],
        response_model=dict[str, Any],
        dependencies=operator,
        responses={**refused, **described(_404="No such deployment in the applied revision.")},
    )
    async def deployment(name: str) -> dict[str, Any]:
        """One deployment: its release's runtime configuration (env names, a Secret's value
        never), network and volume bindings, each targeted device's containers and releases,
        and its events."""
        return _found(await pages.deployment(name), "deployment", name)

    @app.get(
        "/v1/rollouts/{name}",
        operation_id="getRollout",
        tags=["operator"],
        response_model=dict[str, Any],
        dependencies=operator,
        responses={**refused, **described(_404="No rollout in progress for that deployment.")},
    )
    async def rollout(name: str) -> dict[str, Any]:
        """One rollout in progress: its waves, each device's outcome, failed devices and why,
        and its events."""
        return _found(await pages.rollout(name), "rollout", name)

    @app.get(
        "/v1/releases",
        operation_id="listReleases",
        tags=["operator"],
        response_model=dict[str, Any],
        dependencies=operator,
        responses=refused,
    )
    async def releases() -> dict[str, Any]:
        """Per application, every release, its containers and images, and where it runs."""
        return await pages.releases()

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


def _found(body: dict[str, Any] | None, what: str, name: str) -> dict[str, Any]:
    if body is None:
        raise HTTPException(404, f"no {what} {name!r}")
    return body


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
