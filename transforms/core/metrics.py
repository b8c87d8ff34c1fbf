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


def metric_range(result: beam.runners.runner.PipelineResult, name: str) -> tuple[int, int] | None:
    """(smallest, largest) value a distribution saw over every worker, or None if it saw none."""
    lows, highs = [], []
    for dist in result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
    )["distributions"]:
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is not None and value.count:
            lows.append(value.min)
            highs.append(value.max)
    return (min(lows), max(highs)) if lows else None


DATA_SHARE_WARNING = 0.5  # warn when less than this share of the pixels read has data


def _lonlat(bounds: tuple[float, float, float, float]) -> str:
    west, south, east, north = bounds
    return f"lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}"


def coverage_warning(
    pixels_read: int,
    pixels_with_data: int,
    data_lonlat: tuple[float, float, float, float] | None,
    area_lonlat: tuple[float, float, float, float],
    source_coverage: str | None = None,
) -> str | None:
    """The summary's warning when most of the area read has no data, else None.

    `data_lonlat` bounds the pixels that had data; `source_coverage` says where the source has
    data at all (e.g. the mirror's files), when it is known.
    """
    if pixels_read <= 0 or pixels_with_data >= DATA_SHARE_WARNING * pixels_read:
        return None
    share = 100.0 * pixels_with_data / pixels_read
    found = (
        f"data only in {_lonlat(data_lonlat)}"
        if data_lonlat is not None
        else "no pixel with data anywhere in it"
    )
    where = f"; {source_coverage}" if source_coverage else ""
    return (
        f"only {share:.1f} % of the area read ({_lonlat(area_lonlat)}) has data "
        f"({pixels_with_data} of {pixels_read} px): {found}{where}; "
        "check --bbox/--aoi against the source's coverage"
    )
