"""Validating a commit of a 10,000-device repository whole, and incrementally from the previous
commit's validation, after a commit that changes one release file; measured in the same run.

Both read the commit from a git repository as the controller does: whole, every blob is read
(`tree_files`); incrementally, blobs are keyed by their ids and only the changed one is read,
parsed and checked (`tree_blobs`), and the rules across documents run again from the kept
results. The two reports must be equal. Target: the incremental validation under 20% of the
whole one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.common import commit, make_repo
from bench.plan import GROUP, repository
from reconciler.controller.source import open_repo, tree_blobs, tree_files
from reconciler.manifests.incremental import validate_changes
from reconciler.manifests.validate import Report, validate_files

T = TypeVar("T")
TARGET = 0.20
RELEASE = "releases/a0-2-0-0.yaml"


def _release(image: str) -> str:
    return (
        "apiVersion: hedgerow.dev/v1alpha1\nkind: Release\n"
        "metadata: {name: a0-2-0-0}\nspec:\n"
        '  application: a0\n  version: "2.0.0"\n  containers:\n'
        f"    - {{name: main, image: '{image}'}}\n"
    )


def files(devices: int) -> dict[str, str]:
    """bench/plan.py's repository, with a release in a file of its own."""
    out = {path: content.decode() for path, content in repository(devices, None)}
    out[RELEASE] = _release("registry.example/a0:2.0.0")
    return out


def best(fn: Callable[[], T], rounds: int) -> tuple[float, T]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.devices % GROUP:
        parser.error(f"--devices must be a multiple of {GROUP}")
    with tempfile.TemporaryDirectory(prefix="hb-incremental-") as tmp:
        root = make_repo(Path(tmp) / "repo", files(args.devices))
        repo = open_repo(root)
        try:
            before = repo.head.commit.hexsha
            after = commit(root, "one release", {RELEASE: _release("registry.example/a0:2.0.1")})
            previous = validate_changes(None, tree_blobs(repo, before), [])
            kept = {path: found.key for path, found in previous.files.items()}
            changed = [f.path for f in tree_blobs(repo, after) if kept.get(f.path) != f.key]
            assert changed == [RELEASE], changed  # the only file read, parsed and checked

            def incremental() -> Report:
                return validate_changes(previous, tree_blobs(repo, after), []).report

            full_time, full = best(lambda: validate_files(tree_files(repo, after), []), args.rounds)
            incremental_time, report = best(incremental, args.rounds)
        finally:
            repo.close()
    assert full == report, "the incremental report must be the full one"
    assert full.valid, full.errors[:3]
    ratio = incremental_time / full_time
    print(f"devices: {args.devices}, documents: {full.documents}, changed file: {RELEASE}")
    print(f"full validation:         {full_time * 1000:8.1f} ms")
    print(f"incremental validation:  {incremental_time * 1000:8.1f} ms")
    print(f"ratio:                   {ratio * 100:8.2f} %  (target < {TARGET * 100:.0f}%)")
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
