"""The soak: the mixed workload with wrk plus a trickle of signed webhooks for
``--soak-seconds``, each service's resident memory sampled every 10 s; the verdict per
service (flat, under the limit) goes into the notes, the samples into a section of the
results file. Stack only: the soak is about the services' memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bench.context import Context, Outcome, Scenario, Target
from bench.measure import pipeline_metrics_url, webhook_run, wrk_run
from bench.report import SERVICES, rss_timeline_table, rss_trend, service_series, soak_rss_note
from bench.rss import RssSampler

SAMPLE_SECONDS = 10.0
# A trickle: 5 deliveries/s in all, over 4 connections so slow answers under the mixed
# load do not lower the rate.
WEBHOOK_CONNECTIONS = 4
WEBHOOK_RATE = 5.0


def soak_measure(ctx: Context, scenario: Scenario, target: Target) -> Outcome:
    """``scenario``'s mix with wrk and ``scenario.background``'s webhooks at a trickle."""
    assert scenario.background is not None
    seconds = ctx.mode.soak
    url = target.base_url + target.path(scenario.background)
    with (
        RssSampler(ctx.service_pids, timeline_every=SAMPLE_SECONDS) as sampler,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        trickle = pool.submit(
            webhook_run, ctx, url, "soak",
            connections=WEBHOOK_CONNECTIONS, warmup=0.0, duration=seconds, rate=WEBHOOK_RATE,
            metrics_url=pipeline_metrics_url(ctx),
        )  # fmt: skip
        measurement = wrk_run(ctx, scenario, target, seconds)
        _, webhooks = trickle.result()
    ctx.notes.append(f"soak: {webhooks.note('soak')}")
    for service in SERVICES:
        trend = rss_trend(service_series(sampler.timeline, service), sampler.peaks.get(service))
        if trend is not None:
            ctx.notes.append(soak_rss_note(service, trend))
    title = f"Soak: resident memory every {SAMPLE_SECONDS:g} s ({seconds:g} s)"
    ctx.sections[title] = rss_timeline_table(sampler.timeline)
    return Outcome(measurement)
