"""How many examples a property test draws: its own count in a full run (`make test`, CI), and a
third of it in the quick loop (`pytest -m "not e2e"`, see tests/conftest.py), so that the loop a
developer runs between edits stays under a minute while CI keeps every example."""

from __future__ import annotations

from hypothesis import settings

FULL = 100  # hypothesis' default max_examples, which the quick profile lowers
QUICK = 33


def examples(count: int) -> int:
    """`count` scaled to the active hypothesis profile (set before test modules are imported)."""
    return max(1, count * settings().max_examples // FULL)
