"""What the HTTP API needs from the controller, and nothing more.

The routes depend on this Protocol, never on the runner or the controller: reads come from
memory (the revision in force, each device's document) or from the store, a report goes to the
controller's worker, and a webhook asks for a fetch. `reconciler.controller.runner.Runner`
implements it; `reconciler.server.openapi` describes the app over a backend that never runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from reconciler import wire
from reconciler.core.document import Fleet
from reconciler.manifests.catalog import Catalog
from reconciler.store import Store

# Told which devices' documents may have changed (None: all); called from any thread.
ChangeListener = Callable[[Sequence[str] | None], None]


class Backend(Protocol):
    @property
    def store(self) -> Store: ...

    def revision(self) -> str | None:
        """The applied revision; None before the first."""
        ...

    def role(self) -> str:
        """`leader` (alone, or elected among replicas) or `follower`."""
        ...

    def fleet(self) -> Fleet | None:
        """What each device should run at the applied revision; None before the first."""
        ...

    def catalog(self) -> Catalog | None:
        """The applied revision's manifests (where each is declared); None before the first."""
        ...

    def document_key(self, device: str) -> Hashable | None:
        """A value that changes whenever `device`'s document may; None when the applied
        revision has no such device. Cheap: called on every poll."""
        ...

    async def document(self, device: str) -> bytes | None:
        """The device's document as served (canonical JSON); None when the applied revision
        has no such device. Raises DocumentUnavailable when it cannot be served yet."""
        ...

    async def report(self, report: wire.StatusReport) -> int:
        """Store a device's report and re-plan it; the highest event number stored for the
        report's journal (epoch). Raises, storing nothing, ValueError for a report that cannot
        be stored and `reconciler.core.reports.SequenceConflict` for an event number that names
        another event."""
        ...

    def wake(self) -> None:
        """Fetch the branch now."""
        ...

    def queue_depth(self) -> int: ...

    def source_status(self) -> tuple[bool, str]:
        """Whether the git source answered at its last fetch, and a reason for people."""
        ...

    def on_change(self, listener: ChangeListener) -> None: ...

    def on_reconciled(self, observer: Callable[[float], None]) -> None:
        """`observer` is told the seconds each device's reconcile took."""
        ...
