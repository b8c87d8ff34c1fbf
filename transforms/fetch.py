"""FetchChunks: chunk specs in, `(xbeam.Key, xr.Dataset)` out, under a global request cap.

Source-agnostic: a `TileSource` (Earth Engine, the COG mirror) says how a chunk splits into
request tiles and fetches one tile. This module owns what every source needs the same way:

* a **global** bound on concurrent requests, done the Beam way: chunks are dealt round-robin
  to `shards` keys and grouped, so each shard is processed by one DoFn call at a time, and
  that call runs at most `max_concurrent_requests // shards` requests at once. However many
  workers Dataflow starts, no more than `max_concurrent_requests` are ever in flight;
* a global bound on requests per second, split evenly over the shards;
* retries with exponential backoff and jitter on transient failures, then a clear error
  naming the tile;
* Beam counters (requests, retries, bytes, chunks).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import random
import threading
import time
from typing import Iterator, Protocol

import apache_beam as beam
import numpy as np
import xarray_beam as xbeam

from transforms.chunks import ChunkSpec
from transforms.grid import Window

METRICS_NAMESPACE = "efm"


class RetryableError(Exception):
    """A transient failure (429, 5xx, timeout, truncated body): try the request again."""


class TileFetchError(RuntimeError):
    """A tile that could not be fetched, named so the user can find it."""


class TileSource(Protocol):
    """What FetchChunks needs from a source. Instances are pickled to workers: keep them small."""

    transfer_itemsize: int  # bytes per band value in a request

    def setup(self) -> None: ...
    def plan(self, spec: ChunkSpec) -> list[Window]: ...
    def fetch(self, spec: ChunkSpec, tile: Window) -> np.ndarray: ...
    def empty_chunk(self, spec: ChunkSpec) -> np.ndarray: ...
    def to_dataset(self, spec: ChunkSpec, data: np.ndarray): ...


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 8
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2**attempt)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart (thread-safe)."""

    def __init__(self, rate: float):
        self._interval = 1.0 / rate if rate and math.isfinite(rate) else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


def shard_count(max_concurrent_requests: int, threads_per_worker: int) -> int:
    """Shards such that shards x threads-per-shard never exceeds the global cap."""
    return max(1, math.ceil(max_concurrent_requests / max(1, min(threads_per_worker, max_concurrent_requests))))


class _FetchShardFn(beam.DoFn):
    """Fetches every chunk of one shard with a bounded pool of request threads."""

    def __init__(self, source: TileSource, threads: int, requests_per_second: float, retry: RetryPolicy):
        self.source = source
        self.threads = threads
        self.requests_per_second = requests_per_second
        self.retry = retry
        self.requests = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "requests")
        self.retries = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "retries")
        self.bytes = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "bytes")
        self.chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunks_fetched")

    def setup(self):
        self.source.setup()
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="efm-fetch")
        self.rng = random.Random()

    def teardown(self):
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _fetch_tile(self, spec: ChunkSpec, tile: Window, limiter: RateLimiter) -> tuple[np.ndarray, int]:
        """One tile, retried; returns it with the number of attempts (runs in a pool thread)."""
        for attempt in range(self.retry.max_retries + 1):
            limiter.acquire()
            try:
                return self.source.fetch(spec, tile), attempt + 1
            except RetryableError as exc:
                if attempt == self.retry.max_retries:
                    raise TileFetchError(
                        f"gave up on {spec.describe()}, request tile rows {tile.row}-{tile.row + tile.rows} "
                        f"cols {tile.col}-{tile.col + tile.cols} after {attempt + 1} attempts: {exc}"
                    ) from exc
                time.sleep(self.retry.delay(attempt, self.rng))
        raise AssertionError("unreachable")

    def process(self, element) -> Iterator[tuple[xbeam.Key, object]]:
        _, specs = element
        limiter = RateLimiter(self.requests_per_second)
        pending_chunks = collections.deque(sorted(specs))
        queued_tiles: collections.deque = collections.deque()
        partial: dict[ChunkSpec, list] = {}  # spec -> [array, tiles remaining]
        in_flight: dict[concurrent.futures.Future, tuple[ChunkSpec, Window]] = {}
        try:
            while pending_chunks or queued_tiles or in_flight:
                # Keep up to one extra tile per thread queued in the pool, so requests keep
                # going out while this thread assembles and writes a finished chunk; the
                # pool's size still bounds what is in flight. Open a new chunk only when no
                # tile is waiting: that bounds the chunks held in memory.
                while len(in_flight) < 2 * self.threads and (queued_tiles or pending_chunks):
                    if not queued_tiles:
                        spec = pending_chunks.popleft()
                        tiles = self.source.plan(spec)
                        partial[spec] = [self.source.empty_chunk(spec), len(tiles)]
                        queued_tiles.extend((spec, tile) for tile in tiles)
                    spec, tile = queued_tiles.popleft()
                    in_flight[self.pool.submit(self._fetch_tile, spec, tile, limiter)] = (spec, tile)
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    spec, tile = in_flight.pop(future)
                    # Counters only count in the bundle's own thread, not in pool threads.
                    data, attempts = future.result()
                    self.requests.inc(attempts)
                    self.retries.inc(attempts - 1)
                    self.bytes.inc(tile.rows * tile.cols * data.shape[-1] * self.source.transfer_itemsize)  # on the wire
                    held = partial[spec]
                    w = spec.window
                    held[0][tile.row - w.row : tile.row - w.row + tile.rows, tile.col - w.col : tile.col - w.col + tile.cols] = data
                    held[1] -= 1
                    if held[1] == 0:
                        del partial[spec]
                        self.chunks.inc()
                        yield spec.key, self.source.to_dataset(spec, held[0])
        finally:
            for future in in_flight:
                future.cancel()


@dataclasses.dataclass
class FetchChunks(beam.PTransform):
    """ChunkSpecs -> (xbeam.Key, xr.Dataset), never more than the quota allows in flight."""

    source: TileSource
    max_concurrent_requests: int = 40
    max_requests_per_second: float = 100.0
    threads_per_worker: int = 40
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)

    def __post_init__(self):
        super().__init__()

    @property
    def shards(self) -> int:
        return shard_count(self.max_concurrent_requests, self.threads_per_worker)

    @property
    def threads_per_shard(self) -> int:
        return self.max_concurrent_requests // self.shards

    def expand(self, specs: beam.PCollection) -> beam.PCollection:
        shards = self.shards
        return (
            specs
            | "DealToShards" >> beam.Map(lambda spec: (spec.index % shards, spec))
            | "GroupByShard" >> beam.GroupByKey()
            | "FetchShard" >> beam.ParDo(_FetchShardFn(self.source, self.threads_per_shard, self.max_requests_per_second / shards, self.retry))
        )


def metric_totals(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """Committed (or attempted, where the runner has no committed) counter values by name."""
    totals: dict[str, int] = collections.defaultdict(int)
    for counter in result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] += value or 0
    return dict(totals)
