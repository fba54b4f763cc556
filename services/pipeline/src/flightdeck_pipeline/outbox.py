"""The pipeline service's outbox table and its ``audit`` helper (``pipeline.*`` events)."""

from flightdeck_common.outbox import Auditor, OutboxEventMixin
from flightdeck_pipeline.db import Base


class OutboxEvent(OutboxEventMixin, Base):
    __tablename__ = "outbox"


audit = Auditor(OutboxEvent, "pipeline")
