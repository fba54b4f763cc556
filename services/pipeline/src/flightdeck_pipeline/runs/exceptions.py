"""Errors of runs."""

from flightdeck_common.errors import Conflict, NotFound


class RunNotFound(NotFound):
    code = "run_not_found"
    title = "Run not found"


class IllegalTransition(Conflict):
    code = "illegal_transition"
    title = "This status change is not allowed"
