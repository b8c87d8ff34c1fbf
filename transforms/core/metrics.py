"""The metrics every step counts (chunks, requests, pixels) and their totals after a run."""

from __future__ import annotations

import collections

import apache_beam as beam

METRICS_NAMESPACE = "efm"


def metric_totals(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """Committed (or attempted, where the runner has no committed) counter values by name."""
    totals: dict[str, int] = collections.defaultdict(int)
    for counter in result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
    )["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] += value or 0
    return dict(totals)


def metric_max(result: beam.runners.runner.PipelineResult, name: str) -> int | None:
    """The largest value a distribution saw (e.g. open_chunks: the peak held by one process)."""
    peaks = []
    for dist in result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
    )["distributions"]:
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is not None and value.count:
            peaks.append(value.max)
    return max(peaks) if peaks else None
