"""DORA metrics against hand-computed numbers on both backends.

The data set (tests/metrics/conftest.py, ``seeded_dora``), with now = 2026-03-15 12:00 UTC
and the default 30-day window [2026-02-13 12:00, 2026-03-15 12:00):

- deployments of acme/api: d0 production 02-02 (before the window), d1 "Production"
  03-01 12:00 (sha a2), d2 "prod-eu" with GitHub's production flag 03-05 06:00 (a4),
  d3 staging 03-10 (not production), d4 production failed 03-06, d5 production errored
  02-01 (before the window), d6 production 03-08 00:00 (a4 again);
  acme/web: e1 production 03-14 11:00 (b1), e2 staging failed, e3 "prod" failed 03-12
  10:00 then succeeded 11:00 (sha b0, never pushed).
- changes (commit time; push): c0 02-01 00:00; 02-01 01:00 - c1 03-01 08:00; 09:00 -
  c2 03-01 10:00; 11:00 - c3 authored 03-02 06:00 (no committed_at); 07:00 - c4 only
  pushed 03-05 00:00 - c5 03-10 00:00; 01:00 - c6 (web) 03-14 10:00; 10:30.
- incidents (opened -> resolved): i1 api 03-08 06:00 -> 06:30, i2 api 03-09 00:00 ->
  04:00, i3 api 03-11 open, i4 web 03-14 12:00 -> 03-15 00:00, i5 web 02-01 (before the
  window), i6 api 03-01 06:00 -> 08:00, i7 acme/cli 03-02 -> 03-04 00:00.
"""

from __future__ import annotations

import random
import statistics
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_pipeline.deployments.models import Change, Deployment, Incident
from flightdeck_pipeline.metrics.dora import (
    attribute_incident,
    change_failure_rate_band,
    deployment_frequency_band,
    dora_metrics,
    lead_time_band,
    reattribute_incidents,
    recovery_time_band,
)
from flightdeck_pipeline.metrics.schemas import DoraBand, DoraReport

from .conftest import NOW, PRODUCTION_ENVIRONMENTS, at

HOUR = 3600
DAY = 24 * HOUR


async def report(
    sessions: async_sessionmaker[AsyncSession],
    *,
    window_days: int = 30,
    repositories: list[str] | None = None,
    environments: list[str] | None = None,
    production_environments: list[str] = PRODUCTION_ENVIRONMENTS,
) -> DoraReport:
    async with sessions() as session:
        return await dora_metrics(
            session,
            window_days=window_days,
            repositories=repositories,
            environments=environments,
            production_environments=production_environments,
            now=NOW,
        )


async def test_metrics_dora_incident_attribution(
    metrics_sessions: async_sessionmaker[AsyncSession], seeded_dora: dict[str, int]
) -> None:
    async with metrics_sessions() as session:
        attributed = dict(
            (await session.execute(select(Incident.id, Incident.deployment_pk))).all()
        )
    by_name = {
        name: attributed[seeded_dora[name]] for name in ("i1", "i2", "i3", "i4", "i5", "i6", "i7")
    }
    ids = seeded_dora
    assert by_name == {
        "i1": ids["d6"],  # latest api production success <= 03-08 06:00: d6 (03-08 00:00)
        "i2": ids["d6"],
        "i3": ids["d6"],  # d3 (03-10) is staging: not a production deployment
        "i4": ids["e1"],  # e1 03-14 11:00 is later than e3 03-12 11:00
        "i5": None,  # no web production success before 02-01
        "i6": ids["d0"],  # 03-01 06:00 is before d1 (12:00): d0, outside the window
        "i7": None,  # acme/cli has no deployment
    }


async def test_metrics_dora_attribution_follows_new_deployments(
    metrics_sessions: async_sessionmaker[AsyncSession], seeded_dora: dict[str, int]
) -> None:
    async with metrics_sessions.begin() as session:
        incident = await session.get(Incident, seeded_dora["i3"])
        assert incident is not None
        # A production success at the very time the incident opened takes it over.
        newer = Deployment(
            repository="acme/api",
            deployment_id=999,
            environment="PROD",
            production=False,
            sha="a5",
            status="success",
            deployed_at=at(3, 10, 23),
            succeeded_at=incident.opened_at,
        )
        session.add(newer)
        await session.flush()
        await attribute_incident(session, incident, production_environments=["prod"])
        assert incident.deployment_pk == newer.id
        # Without the environment names only the production flag counts: d2 (prod-eu).
        await attribute_incident(session, incident)
        assert incident.deployment_pk == seeded_dora["d2"]


async def test_metrics_dora_late_deployment_reattributes_incidents(
    metrics_sessions: async_sessionmaker[AsyncSession], seeded_dora: dict[str, int]
) -> None:
    async with metrics_sessions.begin() as session:
        # A production success at 03-10 12:00 recorded after the incidents were.
        late = Deployment(
            repository="acme/api",
            deployment_id=998,
            environment="production",
            production=True,
            sha="a5",
            status="success",
            deployed_at=at(3, 10, 11),
            succeeded_at=at(3, 10, 12),
        )
        session.add(late)
        await session.flush()
        examined = await reattribute_incidents(session, repository="acme/api", since=at(3, 10, 12))
        assert examined == 1  # only i3 (03-11) of acme/api opened since then
        rows = dict((await session.execute(select(Incident.id, Incident.deployment_pk))).all())
    assert rows[seeded_dora["i3"]] == late.id
    assert rows[seeded_dora["i2"]] == seeded_dora["d6"]  # opened before: untouched
    assert rows[seeded_dora["i4"]] == seeded_dora["e1"]  # other repository


@pytest.mark.usefixtures("seeded_dora")
async def test_metrics_dora_all_repositories(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    dora = await report(metrics_sessions)
    assert dora.since == NOW - timedelta(days=30)
    assert dora.until == NOW

    # Successful production deployments in the window: d1, d2 (flag), d6, e1, e3 = 5
    # (d0 is before it, d3 is staging), on 5 distinct days; 5 / 30 = 0.1667 per day:
    # >= 1/7 -> high.
    frequency = dora.deployment_frequency
    assert (frequency.deployments, frequency.days_with_deployment) == (5, 5)
    assert frequency.per_day == 5 / 30
    assert frequency.band is DoraBand.HIGH

    # Lead time, per commit first deployed in the window:
    #   c1 -> d1: 03-01 08:00 -> 12:00 = 4 h;  c2 -> d1: 10:00 -> 12:00 = 2 h
    #   c3 (pushed 03-02 07:00 <= push of a4 03-05 00:00) -> d2: authored 03-02 06:00 ->
    #      03-05 06:00 = 72 h;  c4 -> d2: pushed 03-05 00:00 -> 06:00 = 6 h
    #   c6 -> e1: 03-14 10:00 -> 11:00 = 1 h
    #   c0 is first deployed by d0, before the window; c5 was pushed after every deployed
    #   push; e3's sha b0 was never pushed (deploys nothing).
    # sorted 1 2 4 6 72 -> median 4 h -> elite (< 1 day)
    lead = dora.lead_time_for_changes
    assert (lead.commits, lead.median_hours, lead.band) == (5, 4.0, DoraBand.ELITE)

    # Change failure rate: failed in the window: d4 (d5 is before it, e2 is staging, e3
    # succeeded) = 1; successful with an incident: d6 (i1, i2, i3: counted once), e1 (i4)
    # = 2; d0 has i6 but is outside the window. (1 + 2) / (5 + 1) = 0.5 -> low (> 15%)
    failure = dora.change_failure_rate
    assert (failure.failed_deployments, failure.deployments_with_incident) == (1, 2)
    assert (failure.numerator, failure.denominator, failure.rate) == (3, 6, 0.5)
    assert failure.band is DoraBand.LOW

    # Recovery: opened in the window i1 i2 i3 i4 i6 i7 = 6 (i5 is before it); resolved:
    # i1 0.5 h, i6 2 h, i2 4 h, i4 12 h, i7 48 h -> median 4 h -> high (< 1 day)
    recovery = dora.failed_deployment_recovery_time
    assert (recovery.incidents_opened, recovery.incidents_resolved) == (6, 5)
    assert (recovery.median_hours, recovery.band) == (4.0, DoraBand.HIGH)


@pytest.mark.usefixtures("seeded_dora")
async def test_metrics_dora_one_repository(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    dora = await report(metrics_sessions, repositories=["acme/api"])
    # d1, d2, d6 = 3 on 3 days; 3 / 30 = 0.1 per day: < 1/7, >= 1/30 -> medium
    frequency = dora.deployment_frequency
    assert (frequency.deployments, frequency.days_with_deployment) == (3, 3)
    assert frequency.per_day == 0.1
    assert frequency.band is DoraBand.MEDIUM
    # c1 4 h, c2 2 h, c3 72 h, c4 6 h: sorted 2 4 6 72 -> median (4 + 6) / 2 = 5 h
    lead = dora.lead_time_for_changes
    assert (lead.commits, lead.median_hours, lead.band) == (4, 5.0, DoraBand.ELITE)
    # (d4 failed + d6 with incidents) / (3 + 1) = 2 / 4
    failure = dora.change_failure_rate
    assert (failure.numerator, failure.denominator, failure.rate) == (2, 4, 0.5)
    assert failure.band is DoraBand.LOW
    # api incidents opened in the window: i1 i2 i3 i6 = 4; resolved: 0.5 h, 2 h, 4 h ->
    # median 2 h -> high
    recovery = dora.failed_deployment_recovery_time
    assert (recovery.incidents_opened, recovery.incidents_resolved) == (4, 3)
    assert (recovery.median_hours, recovery.band) == (2.0, DoraBand.HIGH)


@pytest.mark.usefixtures("seeded_dora")
async def test_metrics_dora_environment_filter(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Only environment "production" (any case): d2 (prod-eu) and e3 (prod) drop out.
    dora = await report(metrics_sessions, environments=["PRODUCTION"])
    assert dora.environments == ["production"]
    # d1 ("Production"), d6, e1 = 3 -> 0.1 per day -> medium
    assert dora.deployment_frequency.deployments == 3
    assert dora.deployment_frequency.days_with_deployment == 3
    assert dora.deployment_frequency.band is DoraBand.MEDIUM
    # Without d2, c3 and c4 are first deployed by d6 (03-08 00:00):
    #   c3: 03-02 06:00 -> 03-08 00:00 = 5 d 18 h = 138 h; c4: 03-05 00:00 -> 72 h;
    #   c1 4 h, c2 2 h, c6 1 h. Sorted 1 2 4 72 138 -> median 4 h
    lead = dora.lead_time_for_changes
    assert (lead.commits, lead.median_hours, lead.band) == (5, 4.0, DoraBand.ELITE)
    # (d4 + d6 + e1) / (3 + 1) = 3 / 4
    failure = dora.change_failure_rate
    assert (failure.numerator, failure.denominator, failure.rate) == (3, 4, 0.75)
    # Incidents carry no environment: the same as unfiltered.
    recovery = dora.failed_deployment_recovery_time
    assert (recovery.incidents_opened, recovery.incidents_resolved) == (6, 5)
    assert recovery.median_hours == 4.0


@pytest.mark.usefixtures("seeded_dora")
async def test_metrics_dora_production_flag_only(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # No production environment names: only d2 (GitHub's production flag) is production.
    dora = await report(metrics_sessions, production_environments=[])
    assert dora.production_environments == []
    # 1 / 30 per day: exactly once a month -> medium
    assert dora.deployment_frequency.deployments == 1
    assert dora.deployment_frequency.band is DoraBand.MEDIUM
    # d2 deploys every api commit pushed by 03-05 00:00, all first deployed 03-05 06:00:
    #   c0 02-01 00:00 -> 32 d 6 h = 774 h; c1 08:00 on 03-01 -> 94 h; c2 -> 92 h;
    #   c3 03-02 06:00 -> 72 h; c4 03-05 00:00 -> 6 h. Sorted 6 72 92 94 774 -> 92 h
    lead = dora.lead_time_for_changes
    assert (lead.commits, lead.median_hours, lead.band) == (5, 92.0, DoraBand.HIGH)
    # d2 has no incident (they were attributed to d6, e1, d0) and none failed: 0 / 1
    failure = dora.change_failure_rate
    assert (failure.numerator, failure.denominator, failure.rate) == (0, 1, 0.0)
    assert failure.band is DoraBand.ELITE


@pytest.mark.usefixtures("seeded_dora")
async def test_metrics_dora_one_week(metrics_sessions: async_sessionmaker[AsyncSession]) -> None:
    # Window [03-08 12:00, 03-15 12:00): d6 (03-08 00:00) is before it.
    dora = await report(metrics_sessions, window_days=7)
    # e3 (03-12), e1 (03-14) = 2 -> 2 / 7 per day -> high (>= once a week)
    assert dora.deployment_frequency.deployments == 2
    assert dora.deployment_frequency.per_day == 2 / 7
    assert dora.deployment_frequency.band is DoraBand.HIGH
    # Only c6 (-> e1, 1 h); acme/api deployed nothing in the window.
    lead = dora.lead_time_for_changes
    assert (lead.commits, lead.median_hours) == (1, 1.0)
    # No failure in the window (d4 was 03-06); e1 has i4: 1 / 2
    failure = dora.change_failure_rate
    assert (failure.failed_deployments, failure.numerator, failure.denominator) == (0, 1, 2)
    # Opened: i2, i3, i4 = 3; resolved i2 4 h, i4 12 h -> median 8 h
    recovery = dora.failed_deployment_recovery_time
    assert (recovery.incidents_opened, recovery.incidents_resolved) == (3, 2)
    assert (recovery.median_hours, recovery.band) == (8.0, DoraBand.HIGH)


async def test_metrics_dora_without_data(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    dora = await report(metrics_sessions)
    assert dora.deployment_frequency.model_dump() == {
        "deployments": 0,
        "days_with_deployment": 0,
        "per_day": 0.0,
        "band": None,
    }
    assert dora.lead_time_for_changes.model_dump() == {
        "commits": 0,
        "median_hours": None,
        "band": None,
    }
    assert dora.change_failure_rate.model_dump() == {
        "failed_deployments": 0,
        "deployments_with_incident": 0,
        "numerator": 0,
        "denominator": 0,
        "rate": None,
        "band": None,
    }
    assert dora.failed_deployment_recovery_time.model_dump() == {
        "incidents_opened": 0,
        "incidents_resolved": 0,
        "median_hours": None,
        "band": None,
    }


@pytest.mark.parametrize(
    ("deployments", "window_days", "band"),
    [
        (0, 30, None),
        (30, 30, DoraBand.ELITE),  # once a day on average
        (45, 30, DoraBand.ELITE),
        (29, 30, DoraBand.HIGH),
        (1, 7, DoraBand.HIGH),  # exactly once a week
        (4, 30, DoraBand.MEDIUM),  # 0.133 < 1/7
        (1, 30, DoraBand.MEDIUM),  # exactly once a month
        (1, 31, DoraBand.LOW),
    ],
)
def test_metrics_dora_deployment_frequency_bands(
    deployments: int, window_days: int, band: DoraBand | None
) -> None:
    assert deployment_frequency_band(deployments, window_days) is band


@pytest.mark.parametrize(
    ("seconds", "band"),
    [
        (None, None),
        (0, DoraBand.ELITE),
        (DAY - 1, DoraBand.ELITE),
        (DAY, DoraBand.HIGH),
        (7 * DAY - 1, DoraBand.HIGH),
        (7 * DAY, DoraBand.MEDIUM),
        (30 * DAY - 1, DoraBand.MEDIUM),
        (30 * DAY, DoraBand.LOW),
    ],
)
def test_metrics_dora_lead_time_bands(seconds: float | None, band: DoraBand | None) -> None:
    assert lead_time_band(seconds) is band


@pytest.mark.parametrize(
    ("numerator", "denominator", "band"),
    [
        (0, 0, None),
        (0, 3, DoraBand.ELITE),
        (1, 20, DoraBand.ELITE),  # 5%
        (2, 20, DoraBand.HIGH),  # 10%
        (3, 20, DoraBand.MEDIUM),  # 15%
        (4, 20, DoraBand.LOW),  # 20%
        (64, 100, DoraBand.LOW),
    ],
)
def test_metrics_dora_change_failure_rate_bands(
    numerator: int, denominator: int, band: DoraBand | None
) -> None:
    assert change_failure_rate_band(numerator, denominator) is band


@pytest.mark.parametrize(
    ("seconds", "band"),
    [
        (None, None),
        (HOUR - 1, DoraBand.ELITE),
        (HOUR, DoraBand.HIGH),
        (DAY - 1, DoraBand.HIGH),
        (DAY, DoraBand.MEDIUM),
        (7 * DAY - 1, DoraBand.MEDIUM),
        (7 * DAY, DoraBand.LOW),
    ],
)
def test_metrics_dora_recovery_time_bands(seconds: float | None, band: DoraBand | None) -> None:
    assert recovery_time_band(seconds) is band


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_metrics_dora_lead_time_matches_its_definition_on_random_histories(
    metrics_sessions: async_sessionmaker[AsyncSession], seed: int
) -> None:
    """Random pushes and production deployments (redeploys, rollbacks to older pushes,
    pushes at equal times, deployments of shas never pushed), against the definition
    computed by brute force: a deployment deploys every commit of its repository pushed no
    later than its sha's push; a commit counts when its earliest deploying success is in
    the window."""
    rng = random.Random(seed)
    since = NOW - timedelta(days=30)
    start = NOW - timedelta(days=60)

    def moment() -> datetime:
        # Whole hours: equal push times happen.
        return start + timedelta(hours=rng.randrange(60 * 24))

    changes: list[Change] = []
    deployments: list[Deployment] = []
    for repo in ("r/one", "r/two", "r/three"):
        pushes = [(f"{repo}-{n}", moment()) for n in range(rng.randrange(5, 40))]
        for sha, pushed in pushes:
            committed = pushed - timedelta(hours=rng.randrange(0, 72))
            changes.append(
                Change(
                    repository=repo,
                    sha=sha,
                    ref="refs/heads/main",
                    committed_at=committed if rng.random() < 0.8 else None,
                    authored_at=committed,
                    pushed_at=pushed,
                )
            )
        for number in range(rng.randrange(0, 25)):
            sha = rng.choice(pushes)[0] if rng.random() < 0.9 else f"{repo}-never-pushed"
            succeeded = moment() + timedelta(hours=rng.randrange(0, 48))
            deployments.append(
                Deployment(
                    repository=repo,
                    deployment_id=number + 1,
                    environment="production",
                    production=True,
                    sha=sha,
                    status="success",
                    deployed_at=succeeded,
                    status_updated_at=succeeded,
                    succeeded_at=succeeded,
                    created_at=succeeded,
                    updated_at=succeeded,
                )
            )
    async with metrics_sessions.begin() as session:
        session.add_all([*changes, *deployments])

    push_of = {(c.repository, c.sha): c.pushed_at for c in changes}
    expected = []
    for change in changes:
        deploying = [
            d.succeeded_at
            for d in deployments
            if d.repository == change.repository
            and d.succeeded_at is not None
            and d.succeeded_at < NOW
            and (d.repository, d.sha) in push_of
            and change.pushed_at <= push_of[(d.repository, d.sha)]
        ]
        if deploying and min(deploying) >= since:
            committed = change.committed_at or change.authored_at or change.pushed_at
            expected.append((min(deploying) - committed).total_seconds())

    lead = (await report(metrics_sessions)).lead_time_for_changes
    assert lead.commits == len(expected)
    if expected:
        assert lead.median_hours == pytest.approx(statistics.median(expected) / HOUR, abs=1e-3)
    else:
        assert lead.median_hours is None
