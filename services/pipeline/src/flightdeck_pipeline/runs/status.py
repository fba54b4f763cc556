"""Run statuses: GitHub's status/conclusion pair and the display status derived from it."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class Conclusion(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    NEUTRAL = "neutral"
    ACTION_REQUIRED = "action_required"
    STALE = "stale"


class DisplayStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


# GitHub also sends requested/waiting/pending before a run starts: all "queued" here.
GITHUB_QUEUED = frozenset({"queued", "requested", "waiting", "pending"})

SUCCESSFUL = frozenset({Conclusion.SUCCESS, Conclusion.NEUTRAL})
FAILED = frozenset({Conclusion.FAILURE, Conclusion.TIMED_OUT, Conclusion.ACTION_REQUIRED})
CANCELLED = frozenset({Conclusion.CANCELLED, Conclusion.SKIPPED, Conclusion.STALE})

# Order of progress: a run never moves back to an earlier status.
STATUS_RANK = {RunStatus.QUEUED: 0, RunStatus.IN_PROGRESS: 1, RunStatus.COMPLETED: 2}


def normalize_status(raw: str) -> RunStatus:
    """GitHub's status string as one of ours (unknown values raise ValueError)."""
    if raw in GITHUB_QUEUED:
        return RunStatus.QUEUED
    return RunStatus(raw)


def display_status(status: RunStatus, conclusion: Conclusion | None) -> DisplayStatus:
    """queued/running while not completed; then success, failed or cancelled by conclusion.

    success = success or neutral; failed = failure, timed_out or action_required;
    cancelled = cancelled, skipped or stale (a completed run without conclusion counts
    as failed).
    """
    if status is RunStatus.QUEUED:
        return DisplayStatus.QUEUED
    if status is RunStatus.IN_PROGRESS:
        return DisplayStatus.RUNNING
    if conclusion in SUCCESSFUL:
        return DisplayStatus.SUCCESS
    if conclusion in CANCELLED:
        return DisplayStatus.CANCELLED
    return DisplayStatus.FAILED
