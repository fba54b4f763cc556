"""Errors of the audit log routes."""

from __future__ import annotations

from flightdeck_common.errors import BadRequest, Forbidden


class ServiceNotOwnEvent(Forbidden):
    """An event names another service than the account that submits it."""

    code = "audit_service_mismatch"


class InvalidPublishedHead(BadRequest):
    """A published head given to verify is incomplete or its signature is not ours."""

    status_code = 422
    code = "invalid_published_head"
