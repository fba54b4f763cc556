"""Errors of the metrics endpoints."""

from __future__ import annotations

from flightdeck_common.errors import FlightdeckError


class InvalidTimeWindow(FlightdeckError):
    status_code = 422
    code = "invalid_time_window"
    title = "Invalid time window"
