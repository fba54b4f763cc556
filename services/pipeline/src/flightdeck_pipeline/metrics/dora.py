"""The four DORA metrics, computed in SQL, with their 2023 performance bands.

Definitions (all timestamps UTC; the window is ``[now - window_days, now)``):

- **Production deployment**: a ``Deployment`` whose ``production`` flag is true (GitHub's
  ``production_environment``, or a production environment name when it was recorded)
  or whose ``environment``, compared case-insensitively, is one of the configured
  production environment names. With an ``environments`` filter, only deployments to
  those environments (case-insensitive) count. With a ``repositories`` filter, only
  deployments, changes and incidents of those repositories count.
- **Successful** deployment: ``succeeded_at`` is set (a success status was recorded,
  whatever came later, e.g. ``inactive``); it is *in the window* when ``succeeded_at`` is.
- **Failed** deployment: a failure/error status was recorded (``failed_at`` set) and it
  never succeeded (``succeeded_at`` null); it is *in the window* when ``failed_at`` is.
- **Deployment frequency** = successful production deployments in the window /
  ``window_days`` (per day), with their count and the number of distinct UTC days on
  which one succeeded.
- **Lead time for changes**, per commit (a ``Change`` row): first deployment time -
  commit time, where commit time = ``committed_at``, else ``authored_at``, else
  ``pushed_at``. A successful production deployment ``d`` deploys every commit of its
  repository pushed no later than the push that introduced ``d.sha`` (``change.pushed_at
  <= pushed_at`` of the change with ``sha = d.sha``; a deployment of a sha never seen in
  a push deploys nothing). A commit's first deployment time is the earliest
  ``succeeded_at`` of the deployments that deploy it. Only commits whose first
  deployment is in the window count. Reported: their number and the median (interpolated)
  in hours.
- **Change failure rate** = (failed production deployments in the window + successful
  production deployments in the window with at least one incident attributed to them
  through ``Incident.deployment_pk``) / (successful + failed production deployments in
  the window). Counted per deployment: several incidents on one deployment count once.
  None when the denominator is 0.
- **Failed-deployment recovery time**: for incidents opened (``opened_at``) in the window
  that are resolved, ``resolved_at - opened_at``; the median (interpolated) in hours,
  with the numbers opened and resolved. Incidents carry no environment: the
  ``environments`` filter does not apply to them, only ``repositories``.
- An incident is attributed (:func:`attribute_incident`) to the latest successful
  production deployment of its repository with ``succeeded_at <= opened_at``.

Medians are interpolated: the mean of the two middle values for an even count
(PostgreSQL ``percentile_cont(0.5)``; the same arithmetic in SQL on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from sqlalchemy import (
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from flightdeck_common.db import utcnow
from flightdeck_pipeline.deployments.models import Change, Deployment, Incident
from flightdeck_pipeline.metrics.schemas import (
    ChangeFailureRate,
    DeploymentFrequency,
    DoraBand,
    DoraReport,
    FailedDeploymentRecoveryTime,
    LeadTimeForChanges,
)
from flightdeck_pipeline.metrics.sql import (
    Summary,
    dialect_of,
    seconds_between,
    summarize,
    utc_day,
)

HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY
HOURS_DIGITS = 4

# Bands of the 2023 Accelerate State of DevOps report (DORA, Google Cloud), table
# "Software delivery performance levels". The report gives each cluster's typical value;
# these are the boundaries between them:
#   deployment frequency: elite "on demand (multiple deploys per day)", high "between once
#     per day and once per week", medium "between once per week and once per month",
#     low "between once per week and once per month" (sic) -> per day: elite >= 1,
#     high >= 1/7, medium >= 1/30, low below;
#   lead time for changes: elite "less than one day", high "between one day and one
#     week", medium "between one week and one month", low "between one week and one
#     month" (sic) -> elite < 1 day, high < 1 week, medium < 30 days, low otherwise;
#   change failure rate: elite 5%, high 10%, medium 15%, low 64% -> elite <= 5%,
#     high <= 10%, medium <= 15%, low above;
#   failed deployment recovery time: elite "less than one hour", high "less than one
#     day", medium "between one day and one week", low "between one month and six
#     months" -> elite < 1 hour, high < 1 day, medium < 1 week, low otherwise.
DEPLOYMENT_FREQUENCY_BANDS = (
    (Fraction(1), DoraBand.ELITE),
    (Fraction(1, 7), DoraBand.HIGH),
    (Fraction(1, 30), DoraBand.MEDIUM),
)
LEAD_TIME_BANDS = ((DAY, DoraBand.ELITE), (WEEK, DoraBand.HIGH), (MONTH, DoraBand.MEDIUM))
CHANGE_FAILURE_RATE_BANDS = (
    (Fraction(5, 100), DoraBand.ELITE),
    (Fraction(10, 100), DoraBand.HIGH),
    (Fraction(15, 100), DoraBand.MEDIUM),
)
RECOVERY_TIME_BANDS = ((HOUR, DoraBand.ELITE), (DAY, DoraBand.HIGH), (WEEK, DoraBand.MEDIUM))


def deployment_frequency_band(deployments: int, window_days: int) -> DoraBand | None:
    """Band of ``deployments`` per ``window_days`` days; None without any deployment."""
    if deployments <= 0:
        return None
    per_day = Fraction(deployments, window_days)
    for at_least, band in DEPLOYMENT_FREQUENCY_BANDS:
        if per_day >= at_least:
            return band
    return DoraBand.LOW


def lead_time_band(median_seconds: float | None) -> DoraBand | None:
    return _duration_band(median_seconds, LEAD_TIME_BANDS)


def recovery_time_band(median_seconds: float | None) -> DoraBand | None:
    return _duration_band(median_seconds, RECOVERY_TIME_BANDS)


def change_failure_rate_band(numerator: int, denominator: int) -> DoraBand | None:
    """Band of ``numerator / denominator`` (compared exactly); None when it is 0/0."""
    if denominator <= 0:
        return None
    rate = Fraction(numerator, denominator)
    for at_most, band in CHANGE_FAILURE_RATE_BANDS:
        if rate <= at_most:
            return band
    return DoraBand.LOW


def _duration_band(
    seconds: float | None, bands: tuple[tuple[int, DoraBand], ...]
) -> DoraBand | None:
    if seconds is None:
        return None
    for below, band in bands:
        if seconds < below:
            return band
    return DoraBand.LOW


def is_production(production_environments: Sequence[str]) -> ColumnElement[bool]:
    """A deployment flagged production or to one of the named environments (any case)."""
    names = sorted({name.lower() for name in production_environments})
    if not names:
        return Deployment.production.is_(True)
    return or_(Deployment.production.is_(True), func.lower(Deployment.environment).in_(names))


def deployment_filters(
    repositories: list[str] | None,
    environments: list[str] | None,
    production_environments: Sequence[str],
) -> list[ColumnElement[bool]]:
    filters = [is_production(production_environments)]
    if repositories:
        filters.append(Deployment.repository.in_(repositories))
    if environments:
        names = sorted({name.lower() for name in environments})
        filters.append(func.lower(Deployment.environment).in_(names))
    return filters


async def dora_metrics(
    session: AsyncSession,
    *,
    window_days: int,
    repositories: list[str] | None,
    environments: list[str] | None,
    production_environments: Sequence[str],
    now: datetime | None = None,
) -> DoraReport:
    """The four DORA metrics over ``[now - window_days, now)`` (definitions: module docstring).

    Four aggregate queries: deployments (frequency and change failure rate), lead time,
    incident count, recovery time.
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    until = (now or utcnow()).astimezone(UTC)
    since = until - timedelta(days=window_days)
    dialect = dialect_of(session)
    filters = deployment_filters(repositories, environments, production_environments)

    # Deployment frequency and change failure rate: one pass over the window's deployments.
    succeeded = and_(Deployment.succeeded_at >= since, Deployment.succeeded_at < until)
    failed = and_(
        Deployment.succeeded_at.is_(None),
        Deployment.failed_at >= since,
        Deployment.failed_at < until,
    )
    attributed = (
        select(Incident.deployment_pk.label("deployment_pk"))
        .where(Incident.deployment_pk.is_not(None))
        .distinct()
        .subquery("attributed")
    )
    success_day = case((succeeded, utc_day(Deployment.succeeded_at, dialect)))
    deployments_row = (
        await session.execute(
            select(
                func.count().filter(succeeded),
                func.count(distinct(success_day)),
                func.count().filter(failed),
                func.count().filter(and_(succeeded, attributed.c.deployment_pk.is_not(None))),
            )
            .select_from(Deployment)
            .outerjoin(attributed, attributed.c.deployment_pk == Deployment.id)
            .where(*filters, or_(succeeded, failed))
        )
    ).one()
    successful_count, days_with_deployment, failed_count, with_incident = (
        int(value or 0) for value in deployments_row
    )

    lead_seconds = await _lead_time_seconds(session, filters, since, until, dialect)

    incident_filters = [Incident.opened_at >= since, Incident.opened_at < until]
    if repositories:
        incident_filters.append(Incident.repository.in_(repositories))
    opened = int(
        await session.scalar(select(func.count()).select_from(Incident).where(*incident_filters))
        or 0
    )
    recovery = await summarize(
        session,
        select(seconds_between(Incident.resolved_at, Incident.opened_at, dialect)).where(
            *incident_filters, Incident.resolved_at.is_not(None)
        ),
        (0.5,),
    )
    lead_median = lead_seconds.percentiles[0]
    recovery_median = recovery.percentiles[0]
    numerator = failed_count + with_incident
    denominator = successful_count + failed_count
    return DoraReport(
        window_days=window_days,
        since=since,
        until=until,
        repositories=sorted(set(repositories or [])),
        environments=sorted({e.lower() for e in environments or []}),
        production_environments=sorted({e.lower() for e in production_environments}),
        deployment_frequency=DeploymentFrequency(
            deployments=successful_count,
            days_with_deployment=days_with_deployment,
            per_day=successful_count / window_days,
            band=deployment_frequency_band(successful_count, window_days),
        ),
        lead_time_for_changes=LeadTimeForChanges(
            commits=lead_seconds.count,
            median_hours=_hours(lead_median),
            band=lead_time_band(lead_median),
        ),
        change_failure_rate=ChangeFailureRate(
            failed_deployments=failed_count,
            deployments_with_incident=with_incident,
            numerator=numerator,
            denominator=denominator,
            rate=numerator / denominator if denominator else None,
            band=change_failure_rate_band(numerator, denominator),
        ),
        failed_deployment_recovery_time=FailedDeploymentRecoveryTime(
            incidents_opened=opened,
            incidents_resolved=recovery.count,
            median_hours=_hours(recovery_median),
            band=recovery_time_band(recovery_median),
        ),
    )


async def _lead_time_seconds(
    session: AsyncSession,
    filters: list[ColumnElement[bool]],
    since: datetime,
    until: datetime,
    dialect: str,
) -> Summary:
    """Count and median of the lead times (seconds) of commits first deployed in the window.

    Equivalent to "earliest deploying deployment in the window", computed without pairing
    every commit with every deployment of its history: a commit is already deployed before
    the window iff it was pushed no later than the latest push deployed before it
    (``before_push``); it is deployed within the window iff pushed no later than the
    latest push deployed in it (``window_push``). The commits between the two and the
    window's deployments are then merged per repository, newest push first, and a running
    minimum of ``succeeded_at`` gives each commit the earliest deployment of a push at or
    after its own: one sort, not commits x deployments.
    """
    deployed = (
        select(
            Deployment.repository.label("repository"),
            Deployment.succeeded_at.label("succeeded_at"),
            Change.pushed_at.label("deployed_push_at"),
        )
        .join(
            Change,
            and_(Change.repository == Deployment.repository, Change.sha == Deployment.sha),
        )
        .where(*filters, Deployment.succeeded_at.is_not(None), Deployment.succeeded_at < until)
        .cte("deployed")
    )
    in_window = deployed.c.succeeded_at >= since
    bounds = (
        select(
            deployed.c.repository.label("repository"),
            func.max(deployed.c.deployed_push_at).filter(~in_window).label("before_push"),
            func.max(deployed.c.deployed_push_at).filter(in_window).label("window_push"),
        )
        .group_by(deployed.c.repository)
        .cte("bounds")
    )
    commit = aliased(Change, name="commit")
    commit_time = func.coalesce(commit.committed_at, commit.authored_at, commit.pushed_at)
    # kind 0 (deployment) sorts before kind 1 (commit) at an equal push time: a deployment
    # of the very push deploys the commit.
    window_deployments = select(
        deployed.c.repository.label("repository"),
        deployed.c.deployed_push_at.label("pushed_at"),
        literal(0).label("kind"),
        deployed.c.succeeded_at.label("succeeded_at"),
        cast(null(), Change.pushed_at.type).label("committed"),
    ).where(in_window)
    pending_commits = (
        select(
            commit.repository,
            commit.pushed_at,
            literal(1),
            cast(null(), Deployment.succeeded_at.type),
            commit_time,
        )
        .join(bounds, bounds.c.repository == commit.repository)
        .where(
            commit.pushed_at <= bounds.c.window_push,
            or_(bounds.c.before_push.is_(None), commit.pushed_at > bounds.c.before_push),
        )
    )
    merged = union_all(window_deployments, pending_commits).subquery("merged")
    first_deployed_at = func.min(merged.c.succeeded_at).over(
        partition_by=merged.c.repository,
        order_by=(merged.c.pushed_at.desc(), merged.c.kind),
        rows=(None, 0),
    )
    first_deployments = select(
        merged.c.kind.label("kind"),
        merged.c.committed.label("committed"),
        first_deployed_at.label("first_deployed_at"),
    ).subquery("first_deployments")
    lead = seconds_between(
        first_deployments.c.first_deployed_at, first_deployments.c.committed, dialect
    )
    return await summarize(session, select(lead).where(first_deployments.c.kind == 1), (0.5,))


def _hours(seconds: float | None) -> float | None:
    return round(seconds / HOUR, HOURS_DIGITS) if seconds is not None else None


async def attribute_incident(
    session: AsyncSession,
    incident: Incident,
    *,
    production_environments: Sequence[str] = (),
) -> None:
    """Attribute ``incident`` to the latest successful production deployment of its
    repository with ``succeeded_at <= opened_at`` (ties: the highest id), or to none.

    Production = the ``production`` flag, or an environment named in
    ``production_environments`` (case-insensitive). One query; the change is flushed.
    """
    incident.deployment_pk = await session.scalar(
        select(Deployment.id)
        .where(
            Deployment.repository == incident.repository,
            Deployment.succeeded_at.is_not(None),
            Deployment.succeeded_at <= incident.opened_at,
            is_production(production_environments),
        )
        .order_by(Deployment.succeeded_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    await session.flush()


async def reattribute_incidents(
    session: AsyncSession,
    *,
    repository: str,
    since: datetime,
    production_environments: Sequence[str] = (),
) -> int:
    """Re-attribute the incidents of ``repository`` opened at or after ``since``.

    For a successful production deployment recorded after incidents it precedes (events
    arrive out of order): call it with the deployment's ``succeeded_at``. Same rule as
    :func:`attribute_incident`, as one ``UPDATE`` with a correlated subquery; returns the
    number of incidents examined.
    """
    latest = (
        select(Deployment.id)
        .where(
            Deployment.repository == Incident.repository,
            Deployment.succeeded_at.is_not(None),
            Deployment.succeeded_at <= Incident.opened_at,
            is_production(production_environments),
        )
        .order_by(Deployment.succeeded_at.desc(), Deployment.id.desc())
        .limit(1)
        .correlate(Incident)
        .scalar_subquery()
    )
    result = await session.execute(
        update(Incident)
        .where(Incident.repository == repository, Incident.opened_at >= since)
        .values(deployment_pk=latest)
    )
    return int(getattr(result, "rowcount", 0) or 0)
