"""The one exception tree: every error Hedgerow raises on purpose is a `HedgerowError`.

Its message is for people and never holds a secret (a password, a token, a key), so an edge
(a command, an HTTP handler, the agent's loop) may print it as it is. Findings about manifests
are values (`reconciler.manifests.problems.Problem`), not exceptions. The agent imports this
module too: its engine and controller errors are HedgerowErrors as well.
"""

from __future__ import annotations


class HedgerowError(Exception):
    """Something Hedgerow cannot do; the message says what and why."""
