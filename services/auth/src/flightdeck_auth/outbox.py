"""The auth service's outbox table and its ``audit`` helper (``auth.*`` events)."""

from flightdeck_auth.db import Base
from flightdeck_common.outbox import Auditor, OutboxEventMixin


class OutboxEvent(OutboxEventMixin, Base):
    __tablename__ = "outbox"


audit = Auditor(OutboxEvent, "auth")
