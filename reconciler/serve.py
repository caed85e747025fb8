"""Run the controller: poll and watch the branch, take webhooks, and work the device queue.

All controller calls (git, database) run in one worker thread, so the store sees one writer and
the event loop never blocks; the loop only waits, schedules and serves HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reconciler import api
from reconciler.controller import Controller
from reconciler.queue import WorkQueue, resync_delay, run_workers
from reconciler.webhook import verify_signature

T = TypeVar("T")
log = structlog.get_logger("hedgerow.controller")


class Runner:
    """The loops around one Controller. `wake()` asks for a fetch now (webhook, watch)."""

    def __init__(
        self,
        controller: Controller,
        *,
        interval: float = 30.0,
        resync: float = 300.0,
        workers: int = 2,
        rng: random.Random | None = None,
    ) -> None:
        self.controller = controller
        self.interval = interval
        self.resync = resync
        self.workers = workers
        self.rng = rng or random.Random()
        self.queue = WorkQueue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedgerow")
        self._wake = asyncio.Event()
        self.synced = asyncio.Event()  # set after each completed sync, for tests and health
        self.reconciled: list[Callable[[float], None]] = []  # told each reconcile's seconds

    def wake(self) -> None:
        self._wake.set()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def poll(self) -> None:
        """Fetch on every wake-up, or every interval (jittered by 10% against herds)."""
        while not self.queue.shutting_down:
            try:
                outcome = await self.call(self.controller.sync)
            except Exception as exc:  # a fetch that fails is retried at the next interval
                log.warning("sync failed", error=str(exc))
            else:
                if outcome is not None:
                    log.info(
                        "revision applied" if outcome.applied else "revision rejected",
                        revision=outcome.sha,
                        errors=len(outcome.errors),
                        devices=len(outcome.devices),
                    )
                    for device in outcome.devices:
                        self.queue.add(device)
                self.synced.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), resync_delay(self.interval, self.rng))
            self._wake.clear()

    async def resync_all(self) -> None:
        """Level-triggered safety net: every device is reconciled again now and then."""
        while not self.queue.shutting_down:
            await asyncio.sleep(resync_delay(self.resync, self.rng))
            for device in self.controller.devices():
                self.queue.add(device)

    async def run(self, *extra: Awaitable[None]) -> None:
        await self.call(self.controller.resume)
        for device in self.controller.devices():
            self.queue.add(device)

        async def reconcile(device: str) -> None:
            started = time.perf_counter()
            try:
                await self.call(self.controller.reconcile, device)
            finally:
                for observe in self.reconciled:
                    observe(time.perf_counter() - started)

        def failed(device: str, exc: Exception) -> None:
            log.warning("reconcile failed", device=device, error=str(exc))

        try:
            await asyncio.gather(
                self.poll(),
                self.resync_all(),
                run_workers(self.queue, reconcile, self.workers, on_error=failed),
                *extra,
            )
        finally:
            self.queue.shutdown()
            self._executor.shutdown(wait=False, cancel_futures=True)


def create_app(
    runner: Runner, webhook_secret: bytes | None, *, operator_token: str | None = None
) -> FastAPI:
    """The controller's HTTP API; the operator endpoints answer 401 without `operator_token`."""
    app = FastAPI(title="Hedgerow controller", version="v1")

    @app.get("/healthz")
    async def healthz() -> dict[str, str | None]:
        applied = runner.controller.applied
        return {"status": "ok", "revision": applied.sha if applied else None}

    @app.post("/v1/hooks/git", status_code=202)
    async def git_hook(request: Request) -> Response:
        """GitHub-style push webhook: `X-Hub-Signature-256` over the body, then fetch at once."""
        if webhook_secret is None:
            return JSONResponse({"error": "webhook is not configured"}, status_code=404)
        body = await request.body()
        if not verify_signature(webhook_secret, body, request.headers.get("x-hub-signature-256")):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        runner.wake()
        return JSONResponse({"status": "fetching"}, status_code=202)

    api.install(app, runner, operator_token=operator_token)
    return app


def fingerprint_key(data_dir: Path) -> bytes:
    """The controller's HMAC key for credential fingerprints, made once and kept private."""
    path = data_dir / "fingerprint.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as fh:
            path.chmod(0o600)
            fh.write(random.SystemRandom().randbytes(32))
    return path.read_bytes()
