"""Prometheus metrics of webhook ingestion."""

from flightdeck_common.metrics import counter, gauge, histogram

DELIVERIES = counter(
    "flightdeck_webhook_deliveries_total",
    "Webhook deliveries answered, by event and result (accepted, ignored, duplicate, pong; "
    "rejected: bad signature; throttled: too many bad signatures from the source; forbidden: "
    "the secret may not write the repository; refused: the backlog bound).",
    ("event", "result"),
)
SIGNATURE_FAILURES = counter(
    "flightdeck_webhook_signature_failures_total",
    "Deliveries refused because the signature was missing or wrong.",
)
THROTTLED_SOURCES = counter(
    "flightdeck_webhook_throttled_total",
    "Webhook requests refused with 429 before their body was read: their source sent too "
    "many missing or wrong signatures.",
)
REPOSITORY_REFUSALS = counter(
    "flightdeck_webhook_repository_refusals_total",
    "Signed deliveries refused with 403 because their secret may not write the repository, "
    "by reason (repository_not_allowed; no_repository: a mapped event naming none).",
    ("reason",),
)
for _refusal in ("repository_not_allowed", "no_repository"):
    REPOSITORY_REFUSALS.labels(_refusal)
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

# -- the delivery queue: acceptance, backlog and mapping behind the acknowledgement -------

ACCEPT_BATCH_SIZE = histogram(
    "flightdeck_webhook_accept_batch_size",
    "Deliveries stored by one commit of the acceptance path (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
BACKLOG = gauge(
    "flightdeck_webhook_backlog",
    "Deliveries accepted and not mapped yet (pending), database-wide, as this process last "
    "counted them.",
)
BACKLOG_LIMIT = gauge(
    "flightdeck_webhook_backlog_limit",
    "Pending deliveries past which signed deliveries are refused with 503 (the hard bound).",
)
OLDEST_PENDING_AGE = gauge(
    "flightdeck_webhook_oldest_pending_age_seconds",
    "Age of the oldest pending delivery (0 when none is pending), database-wide.",
)
BACKLOG_REFUSALS = counter(
    "flightdeck_webhook_backlog_refusals_total",
    "Signed deliveries refused with 503 because the backlog was at its bound (lost unless "
    "redelivered).",
)
MAPPED = counter(
    "flightdeck_webhook_mapped_total",
    "Deliveries mapped by the workers, by event and result (processed, ignored, failed).",
    ("event", "result"),
)
MAPPING_RETRIES = counter(
    "flightdeck_webhook_mapping_retries_total",
    "Mapping attempts rolled back to be tried again, by reason (transient: the database; "
    "internal: an unexpected error in a mapper, logged with its traceback).",
    ("reason",),
)
MAPPING_LAG = histogram(
    "flightdeck_webhook_mapping_lag_seconds",
    "Time from accepting a delivery to committing its mapping.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

# Both reasons exist from the start, so a first retry is an increase() alerts can see.
for _reason in ("transient", "internal"):
    MAPPING_RETRIES.labels(_reason)
