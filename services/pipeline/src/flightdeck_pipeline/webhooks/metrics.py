"""Prometheus metrics of webhook ingestion."""

from flightdeck_common.metrics import counter, histogram

DELIVERIES = counter(
    "flightdeck_webhook_deliveries_total",
    "Webhook deliveries by event and result (processed, ignored, failed, duplicate, rejected).",
    ("event", "result"),
)
SIGNATURE_FAILURES = counter(
    "flightdeck_webhook_signature_failures_total",
    "Deliveries refused because the signature was missing or wrong.",
)
INGEST_SECONDS = histogram(
    "flightdeck_webhook_ingest_seconds",
    "Time from receiving a delivery to answering it, by event.",
    ("event",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RUN_UPDATES = counter(
    "flightdeck_run_updates_total",
    "Run upserts applied, by the display status they carried.",
    ("display_status",),
)
