"""Every table of the admin service (imported by the migrations environment)."""

from flightdeck_admin.audit.models import AuditChainHead, AuditEventRow
from flightdeck_admin.outbox import OutboxEvent
from flightdeck_admin.registrations.models import RegistrationRequest

__all__ = ["AuditChainHead", "AuditEventRow", "OutboxEvent", "RegistrationRequest"]
