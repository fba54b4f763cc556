"""API shapes of the stats, history and DORA answers."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class RunStats(BaseModel):
    """Runs created in ``[since, until)`` (either bound optional) of the selected repositories."""

    since: datetime | None = Field(description="Inclusive lower bound on `created_at`, if any.")
    until: datetime | None = Field(description="Exclusive upper bound on `created_at`, if any.")
    repositories: list[str] = Field(description="Repositories counted; empty means all.")
    total: int = Field(description="Runs in the window.")
    queued: int = Field(description="Runs whose display status is `queued`.")
    running: int = Field(description="Runs whose display status is `running`.")
    successful: int = Field(description="Runs whose display status is `success`.")
    failed: int = Field(description="Runs whose display status is `failed`.")
    cancelled: int = Field(description="Runs whose display status is `cancelled`.")
    success_rate: float | None = Field(
        description="successful / (successful + failed); null when both are 0.",
        examples=[0.75],
    )
    durations_counted: int = Field(
        description="Completed runs with a duration: the population of the duration figures."
    )
    avg_duration_seconds: float | None = Field(
        description="Mean duration of completed runs, exact, in seconds (millisecond precision)."
    )
    p50_duration_seconds: float | None = Field(
        description=(
            "Median duration in seconds, estimated from the duration histogram: within 5 % "
            "of the exact percentile_cont(0.5)."
        )
    )
    p95_duration_seconds: float | None = Field(
        description=(
            "95th percentile duration in seconds, estimated from the duration histogram: "
            "within 5 % of the exact percentile_cont(0.95)."
        )
    )


class HistoryDay(BaseModel):
    """Runs created on one UTC day (of one repository in the per-repository variant)."""

    day: date = Field(description="UTC calendar day of `created_at`.")
    repository: str | None = Field(
        None, description="The repository (per-repository variant only; null otherwise)."
    )
    total: int = Field(description="Runs created that day, whatever their status.")
    successful: int = Field(description="Of those, runs whose display status is `success`.")
    failed: int = Field(description="Of those, runs whose display status is `failed`.")


class RunHistory(BaseModel):
    """One row per UTC day of the last ``days`` days including today, zero-filled."""

    days: int = Field(description="Number of days covered (today included).")
    per_repository: bool = Field(
        description="Rows per (day, repository) for every repository with runs in the range."
    )
    repositories: list[str] = Field(description="Repository filter; empty means all.")
    since: datetime = Field(description="Start of the first day (inclusive, UTC midnight).")
    until: datetime = Field(description="End of today (exclusive, next UTC midnight).")
    items: list[HistoryDay] = Field(description="Oldest day first; then by repository.")


class DoraBand(StrEnum):
    """Performance level of the 2023 Accelerate State of DevOps report."""

    ELITE = "elite"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class DeploymentFrequency(BaseModel):
    deployments: int = Field(
        description="Successful production deployments with `succeeded_at` in the window."
    )
    days_with_deployment: int = Field(
        description="Distinct UTC days with at least one of those deployments."
    )
    per_day: float = Field(description="deployments / window_days.")
    band: DoraBand | None = Field(
        description="elite >= 1/day, high >= 1/week, medium >= 1/month (30 days), low below;"
        " null without any deployment."
    )


class LeadTimeForChanges(BaseModel):
    commits: int = Field(description="Commits whose first production deployment is in the window.")
    median_hours: float | None = Field(
        description="Median (interpolated) of first deployment time - commit time, in hours."
    )
    band: DoraBand | None = Field(
        description="elite < 1 day, high < 1 week, medium < 30 days, low otherwise; null"
        " without commits."
    )


class ChangeFailureRate(BaseModel):
    failed_deployments: int = Field(
        description="Production deployments that failed (never succeeded), `failed_at` in the window."
    )
    deployments_with_incident: int = Field(
        description="Successful production deployments in the window with at least one"
        " incident attributed to them (each counted once)."
    )
    numerator: int = Field(description="failed_deployments + deployments_with_incident.")
    denominator: int = Field(
        description="All production deployments in the window: successful + failed."
    )
    rate: float | None = Field(description="numerator / denominator; null when it is 0.")
    band: DoraBand | None = Field(
        description="elite <= 5%, high <= 10%, medium <= 15%, low above; null when the"
        " denominator is 0."
    )


class FailedDeploymentRecoveryTime(BaseModel):
    incidents_opened: int = Field(description="Incidents with `opened_at` in the window.")
    incidents_resolved: int = Field(description="Of those, incidents that are resolved.")
    median_hours: float | None = Field(
        description="Median (interpolated) of resolved_at - opened_at, in hours."
    )
    band: DoraBand | None = Field(
        description="elite < 1 hour, high < 1 day, medium < 1 week, low otherwise; null"
        " without resolved incidents."
    )


class DoraReport(BaseModel):
    """The four DORA metrics over ``[since, until)`` with their inputs and 2023 bands."""

    window_days: int = Field(description="Length of the window in days.")
    since: datetime = Field(description="Window start (inclusive): until - window_days.")
    until: datetime = Field(description="Window end (exclusive): the time of the computation.")
    repositories: list[str] = Field(description="Repository filter; empty means all.")
    environments: list[str] = Field(
        description="Environment filter (case-insensitive); empty means every production one."
    )
    production_environments: list[str] = Field(
        description="Environment names counted as production besides GitHub's flag."
    )
    deployment_frequency: DeploymentFrequency
    lead_time_for_changes: LeadTimeForChanges
    change_failure_rate: ChangeFailureRate
    failed_deployment_recovery_time: FailedDeploymentRecoveryTime
