"""The followed branch's history, as the controller records it and `hedgerow status` shows it:
rewritten (force-pushed, or moved back) or deleted upstream. Event kinds and their messages."""

from __future__ import annotations

HISTORY_REWRITTEN = "history-rewritten"  # applied a commit that does not descend from the last
BRANCH_DELETED = "branch-deleted"
BRANCH_RESTORED = "branch-restored"
BRANCH_EVENTS = (BRANCH_DELETED, BRANCH_RESTORED)  # the newest says whether the branch is gone


def rewrite(sha: str, applied: str, *, backwards: bool) -> str:
    """How commit `sha` leaves the history of the `applied` revision (`backwards`: it is one
    of its ancestors)."""
    if backwards:
        return f"the branch moved back from {applied[:12]} to its ancestor {sha[:12]}"
    return f"{sha[:12]} does not descend from the applied revision {applied[:12]} (a force-push)"


def rewritten(what: str, sha: str) -> str:
    """The warning of a rewrite applied: every device goes back to what `sha` holds."""
    return f"history rewritten: {what}; devices are rolled back to what {sha[:12]} holds"


def refused(what: str) -> str:
    """The error of a rewrite rejected (--no-allow-history-rewrite)."""
    return (
        f"history rewritten: {what}; refused by --no-allow-history-rewrite: the applied revision "
        "stays until a commit descends from it (or the controller allows the rewrite)"
    )


def restored(sha: str) -> str:
    return f"the followed branch is back upstream, at {sha[:12]}"
