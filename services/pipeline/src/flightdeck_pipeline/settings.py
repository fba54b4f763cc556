"""Settings of the pipeline service (env prefix `FLIGHTDECK_PIPELINE_`)."""

from functools import lru_cache
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import CommaSeparated, CommonSettings
from flightdeck_pipeline.webhooks.secret_scopes import WebhookSecrets


class Settings(CommonSettings):
    # hide_input_in_errors: a malformed secrets entry is named by position, never echoed.
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_PIPELINE_", hide_input_in_errors=True)

    service_name: ClassVar[str] = "pipeline"
    public_prefix: ClassVar[str] = "/pipelines"
    required_secrets: ClassVar[tuple[str, ...]] = (
        "github_webhook_secrets",
        "service_client_secret",
    )

    # Comma-separated; any of them may sign a delivery, the first is the current one. An
    # entry `secret@owner/repo|owner/*` may write only those repositories (a delivery for
    # another is refused with 403); a secret alone may write any (webhooks/secret_scopes.py).
    github_webhook_secrets: WebhookSecrets = Field(default_factory=list)
    # Webhook requests refused for their signature (missing, wrong, or a body past the
    # read deadline), per source (IPv4 address, IPv6 /64): past this the source's next
    # requests get 429 with Retry-After before their body is read, until the window ends
    # (GitHub signs correctly and never gets there).
    rate_limit_webhook_signature_failures: str = "20/minute"
    # A webhook body must have arrived this long after the receiver started reading it
    # (past it: 408, the connection closed, counted as a rejection of the source). GitHub
    # gives up on a delivery after 10 s, upload included, so nothing it sends takes longer.
    webhook_body_read_deadline_seconds: float = Field(15.0, gt=0, le=600)
    # Rejected signatures reach the audit chain aggregated: one audit event per source per
    # this many seconds (how many, why, which events, the first delivery ids), and the
    # rest when the service stops.
    webhook_rejection_audit_interval_seconds: float = Field(60.0, ge=1, le=3600)

    # Environments counted as production for DORA (besides GitHub's production_environment flag).
    production_environments: CommaSeparated = Field(default_factory=lambda: ["production", "prod"])
    # Issues with this label are incidents (opened/closed).
    incident_label: str = "incident"
    # Live events: heartbeat interval and how many past events a reconnect can replay.
    sse_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    sse_replay_limit: int = Field(1000, ge=1, le=100_000)
    # Stats/history/DORA answers are cached this long (and dropped when what they read is
    # written: runs for stats and history; deployments, commits, incidents for DORA).
    metrics_cache_ttl_seconds: int = Field(60, ge=0, le=3600)
    # Stats/history/DORA answers one process computes at once; more requests wait their
    # turn (and then find the answer cached): PostgreSQL is not swamped by a burst.
    metrics_max_concurrent_computations: int = Field(4, ge=1, le=64)
    # Webhook deliveries one process answers at once (their own group, apart from the API's
    # max_concurrent_requests): a memory backstop far above bursts (1,000 concurrent
    # deliveries per replica are accepted), not a shed point; 0: no cap.
    webhook_max_concurrent_deliveries: int = Field(2048, ge=0, le=100_000)
    # The hard bound: with this many deliveries pending (accepted, not mapped yet) a signed
    # delivery is refused with 503 and Retry-After (GitHub does not redeliver it by
    # itself). 500,000 is over an hour of 100 deliveries/s with no mapping at all, about
    # 10 GB of bodies at GitHub's typical 20 KB.
    webhook_backlog_limit: int = Field(500_000, ge=1, le=100_000_000)
    # Retry-After of that refusal.
    webhook_backlog_retry_after_seconds: int = Field(60, ge=1, le=3600)
    # The mapping worker of this process: on or off (off: this process only accepts;
    # another replica maps), deliveries per transaction, and how often it looks for
    # deliveries other replicas accepted (its own wake it at once). On SQLite a batch is at
    # most 25 deliveries (it holds the only write lock; acceptance waits for it).
    webhook_mapping_enabled: bool = True
    webhook_mapping_batch_size: int = Field(100, ge=1, le=1000)
    webhook_mapping_poll_seconds: float = Field(1.0, gt=0, le=60)
    # Deliveries stored by one commit of the acceptance path at most (group commit).
    webhook_accept_batch_size: int = Field(500, ge=1, le=5000)
    # JSON nesting accepted in a webhook payload (GitHub's are about 10 deep), checked once
    # the signature is verified; deeper ones get 400 `json_too_deep`.
    webhook_max_json_depth: int = Field(128, ge=16, le=512)
    # Finished deliveries are kept (for dedupe and reprocessing) at least this long;
    # pending ones until they are mapped.
    delivery_retention_days: int = Field(7, ge=7, le=365)


@lru_cache
def get_settings() -> Settings:
    return Settings()
