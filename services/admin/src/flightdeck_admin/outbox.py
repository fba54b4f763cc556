"""The admin service's outbox table and its ``audit`` helper (``admin.*`` events).

Admin's own events take the same path as everyone else's: written in the transaction of
the change, then appended to the chain by the relay (in process, no HTTP hop).
"""

from flightdeck_admin.db import Base
from flightdeck_common.outbox import Auditor, OutboxEventMixin


class OutboxEvent(OutboxEventMixin, Base):
    __tablename__ = "outbox"


audit = Auditor(OutboxEvent, "admin")
