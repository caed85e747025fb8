"""A large fleet with no connection: the controller's memory, and how fast it is back after a
restart.

The real `hedgerow controller` on the layout of `bench/plan.py` (three deployments a device),
with a token issued for every device. It prints, for N devices:
- the first start: until the first revision is applied, then until every device is planned
  (the controller's CPU settles);
- RSS with the fleet and no connection, against the same controller with a fleet of
  `--baseline` devices, and per 1,000 devices above it;
- a restart: until a device's stored document is served (200 with its token), then until the
  controller settles (what it plans again after a start: the devices waiting in `replans`).

It needs no connection per device, so it runs at 100,000 devices on one process, where a held
poll each would pass the open-file limit. Run from the repository's root:
`python -m bench.startup --devices 100000` (`--postgres` for a throwaway PostgreSQL).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import make_repo, revision, settle, wait
from bench.fleet import Controller, answered, files, issue_tokens
from bench.plan import GROUP
from reconciler.store import sqlite_url
from tests.support.postgres import new_server


def started(devices: int, postgres: bool, stack: contextlib.ExitStack) -> dict[str, float]:
    """One controller on a fleet of `devices`: its first start, memory and restart."""
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hb-start-")))
    db = None
    if postgres:
        server = new_server(stack.callback)
        db = server.url(server.create_database())
    repo = make_repo(work / "repo", files(devices))
    names = [f"dev-{d}" for d in range(devices)]
    issued = issue_tokens(db or sqlite_url(work / "data-controller"), names)
    controller = Controller(repo, work, db)
    stack.callback(controller.stop)
    begun = time.monotonic()
    controller.start()
    wait(lambda: revision(controller.url) is not None, 3600, "the first apply", 0.2)
    applied = time.monotonic() - begun
    planned = settle([controller.pid()], 3600)
    rss = controller.rss_mib()
    controller.stop()
    holder = "dev-0"
    begun = time.monotonic()
    controller.start()
    wait(lambda: answered(controller.url, holder, issued[holder]), 600, "a restart", 0.05)
    served = time.monotonic() - begun
    replanned = settle([controller.pid()], 3600)
    return {"applied": applied, "planned": planned, "rss": rss, "served": served,
            "replanned": replanned}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=GROUP, help="devices of the baseline")
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL")
    args = parser.parse_args()
    if args.baseline >= args.devices:
        parser.error("--baseline must be fewer devices than --devices")
    with contextlib.ExitStack() as stack:
        base = started(args.baseline, args.postgres, stack)
    with contextlib.ExitStack() as stack:
        fleet = started(args.devices, args.postgres, stack)
    per_1k = (fleet["rss"] - base["rss"]) / ((args.devices - args.baseline) / 1000)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"devices:                  {args.devices} ({backend}; baseline {args.baseline})")
    print(f"first start → applied:    {fleet['applied']:8.1f} s, then {fleet['planned']:.1f} s")
    print(f"RSS, no connection:       {fleet['rss']:8.1f} MiB (baseline {base['rss']:.1f} MiB, "
          f"{per_1k:.2f} MiB per 1,000 devices)")  # fmt: skip
    print(f"restart → first document: {fleet['served']:8.2f} s")
    print(f"restart → settled:        {fleet['replanned']:8.1f} s after the first document")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
