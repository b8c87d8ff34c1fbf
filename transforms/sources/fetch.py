"""FetchChunks: chunk specs in, `(xbeam.Key, xr.Dataset)` out, with bounded requests and memory.

Source-agnostic: a `TileSource` (Earth Engine, the COG mirror) says how a chunk splits into
request tiles and fetches one tile. This module owns what every source needs the same way (the
bounds themselves, retry policy, rate and open chunks, are in fetch_bounds.py):

* two ways to bound requests in flight (one fetch loop, `_FetchChunksFn`, serves both):
  - `global_cap=True` (Earth Engine, a per-project quota): chunks are dealt round-robin to
    `shards` keys and grouped, so each shard is processed by one DoFn call at a time, and
    that call runs at most `max_concurrent_requests // shards` requests at once. However
    many workers Dataflow starts, no more than `max_concurrent_requests` are in flight
    *for this job* (two jobs on one project share the quota: the cap is per job);
  - `global_cap=False` (the COG mirror, no quota): chunks are spread over every worker
    (`Reshuffle`) and each DoFn runs at most `threads_per_worker` reads at once, so the
    read rate grows with the workers;
* bounded memory: a process holds at most `max_open_chunks` chunks being assembled
  (a process-wide semaphore, whatever the number of shards or bundles it runs);
* failures that cost little: a failing call stops submitting, waits for its requests in
  flight (the cap holds while a retry starts), then raises; a retried call skips chunks
  whose done marker (`<output>/.efm/done/<marker>`) exists when the chunk is taken;
* retries with exponential backoff and jitter on transient failures, then a clear error
  naming the tile;
* Beam counters (requests, retries, bytes, chunks, chunks skipped) and the peak of open chunks;
  `bytes` is what the source says it read (`grid_source.count_read`), else the tiles' planned
  size; `pixels_read` / `pixels_with_data` and the distributions `data_row` / `data_col` (the
  grid rows and columns bounding the pixels with data) tell the summary how much of the area
  had data, and where.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import random
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

import apache_beam as beam
import numpy as np
import xarray_beam as xbeam

from transforms.core.chunks import CHUNK, MARKER_DIR, ChunkSpec
from transforms.core.errors import EfmError, strip_beam_step
from transforms.core.grid import Window
from transforms.core.metrics import METRICS_NAMESPACE
from transforms.sources import grid_source
from transforms.sources.fetch_bounds import (
    OpenChunks,
    RateLimiter,
    RetryPolicy,
    return_big_buffers_to_the_os,
    shard_count,
)


def data_extent(values: np.ndarray) -> tuple[int, tuple[int, int, int, int] | None]:
    """(pixels with data, (first row, last row, first col, last col) of them, or None) in a
    (rows, cols, bands) array of store values: no data is NaN (float) or -128 (int8) in all bands,
    so the first band tells."""
    first = values[..., 0]
    valid = (first != -128) if first.dtype == np.int8 else ~np.isnan(first)
    count = int(np.count_nonzero(valid))
    if not count:
        return 0, None
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    return count, (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))


class RetryableError(Exception):
    """A transient failure (429, 5xx, timeout, truncated body): try the request again."""


class TileFetchError(EfmError, RuntimeError):
    """A tile that could not be fetched, named so the user can find it."""

    def line(self) -> str:
        text = strip_beam_step(str(self))
        if "HTTP 429" in text:
            return (
                f"quota exhausted: {text}; the service still refused after every retry: try later, "
                "or lower the --tuning keys max_concurrent_requests / max_requests_per_second, "
                "or raise max_retries"
            )
        return f"a request kept failing: {text}"


class _Stopped(Exception):
    """A request not retried because its bundle is failing."""


class TileSource(Protocol):
    """What FetchChunks needs from a source. Instances are pickled to workers: keep them small."""

    transfer_itemsize: int  # bytes per band value in a request
    store_dtype: str  # what fetch returns and the chunk holds

    def setup(self) -> None: ...
    def plan(self, spec: ChunkSpec) -> list[Window]: ...
    def fetch(self, spec: ChunkSpec, tile: Window) -> np.ndarray: ...
    def empty_chunk(self, spec: ChunkSpec) -> np.ndarray: ...
    def to_dataset(self, spec: ChunkSpec, data: np.ndarray): ...


class MarkerCheck:
    """Is a chunk already written? Looks for its done marker under `<output>/.efm/done/`."""

    def __init__(self, output: str):
        self.output = output
        self._fs = None

    def __call__(self, spec: ChunkSpec) -> bool:
        if self._fs is None:
            import fsspec

            self._fs, root = fsspec.core.url_to_fs(self.output)
            self._dir = f"{root.rstrip('/')}/{MARKER_DIR}"
        self._fs.invalidate_cache(self._dir)  # a marker written a moment ago must be seen
        return self._fs.exists(f"{self._dir}/{spec.marker}")

    def __getstate__(self):  # a filesystem object is not needed on the other side
        return {"output": self.output, "_fs": None}


class _FetchChunksFn(beam.DoFn):
    """Fetches every chunk of one element (a shard, or a batch) with a bounded pool of request threads."""

    def __init__(
        self,
        source: TileSource,
        threads: int,
        requests_per_second: float,
        retry: RetryPolicy,
        max_open_chunks: int,
        output: str | None,
    ):
        self.source = source
        self.threads = threads
        self.requests_per_second = requests_per_second
        self.retry = retry
        self.max_open_chunks = max_open_chunks
        self.output = output
        self.requests = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "requests")
        self.retries = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "retries")
        self.bytes = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "bytes")
        self.chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunks_fetched")
        self.skipped = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunks_skipped_done")
        self.peak_open = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "open_chunks")
        self.pixels_read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pixels_read")
        self.pixels_with_data = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pixels_with_data")
        self.data_row = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "data_row")
        self.data_col = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "data_col")

    def _count_data(self, spec: ChunkSpec, values: np.ndarray) -> None:
        count, extent = data_extent(values)
        self.pixels_read.inc(spec.window.rows * spec.window.cols)
        self.pixels_with_data.inc(count)
        if extent is not None:
            r0, r1, c0, c1 = extent
            for r in (r0, r1):
                self.data_row.update(spec.window.row + r)
            for c in (c0, c1):
                self.data_col.update(spec.window.col + c)

    def setup(self):
        return_big_buffers_to_the_os()
        self.source.setup()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix="efm-fetch"
        )
        self.rng = random.Random()
        self.open_chunks = OpenChunks.for_limit(self.max_open_chunks)
        self.is_done = MarkerCheck(self.output) if self.output else (lambda spec: False)

    def teardown(self):
        # process() never returns with requests of its own still running; wait anyway.
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_tile(
        self, spec: ChunkSpec, tile: Window, limiter: RateLimiter, stop: threading.Event
    ) -> tuple[np.ndarray, int, int | None]:
        """One tile, retried; returns it with the number of attempts and the bytes the source
        says it read, failed attempts included (None if it does not say) (runs in a pool thread)."""
        grid_source.reset_read()
        for attempt in range(self.retry.max_retries + 1):
            if stop.is_set():
                raise _Stopped()
            limiter.acquire()
            try:
                return self.source.fetch(spec, tile), attempt + 1, grid_source.take_read()
            except RetryableError as exc:
                if attempt == self.retry.max_retries:
                    raise TileFetchError(
                        f"gave up on {spec.describe()}, request tile rows {tile.row}-{tile.row + tile.rows} "
                        f"cols {tile.col}-{tile.col + tile.cols} after {attempt + 1} attempts: {exc}"
                    ) from exc
                if stop.wait(
                    self.retry.delay(attempt, self.rng)
                ):  # a failing bundle does not back off and retry
                    raise _Stopped() from exc
        raise AssertionError("unreachable")

    def _take_chunk(self, pending: collections.deque, blocking: bool) -> ChunkSpec | None:
        """The next chunk not yet written, holding an open-chunk slot; None if none (or no slot free)."""
        while pending:
            count = self.open_chunks.try_acquire(blocking)
            if count is None:
                return None
            spec = pending.popleft()
            # Checked now, not at launch: a retried bundle skips what its failed attempt wrote.
            if self.is_done(spec):
                self.open_chunks.release()
                self.skipped.inc()
                continue
            self.peak_open.update(count)
            return spec
        return None

    def process(self, element) -> Iterator[tuple[xbeam.Key, object]]:
        _, specs = element
        yield from self.fetch_all(specs)

    def fetch_all(self, specs: Iterable[ChunkSpec]) -> Iterator[tuple[xbeam.Key, object]]:
        limiter = RateLimiter(self.requests_per_second)
        stop = threading.Event()
        pending = collections.deque(sorted(specs))
        queued_tiles: collections.deque = collections.deque()
        partial: dict[ChunkSpec, list] = {}  # spec -> [array, tiles remaining]; each holds a slot
        in_flight: dict[concurrent.futures.Future, tuple[ChunkSpec, Window]] = {}
        try:
            while pending or queued_tiles or in_flight:
                # Keep up to one extra tile per thread queued in the pool, so requests keep going
                # out while this thread assembles and writes a finished chunk; the pool's size
                # bounds what is in flight. A new chunk is opened only when no tile of an open
                # one is waiting and a slot is free: at most max_open_chunks are held.
                while len(in_flight) < 2 * self.threads:
                    if not queued_tiles:
                        spec = self._take_chunk(pending, blocking=not in_flight and not partial)
                        if spec is None:
                            break
                        tiles = self.source.plan(spec)
                        partial[spec] = [
                            None,
                            len(tiles),
                        ]  # allocated with the first tile (which may be the chunk)
                        queued_tiles.extend((spec, tile) for tile in tiles)
                    spec, tile = queued_tiles.popleft()
                    in_flight[self.pool.submit(self._fetch_tile, spec, tile, limiter, stop)] = (
                        spec,
                        tile,
                    )
                if not in_flight:
                    continue
                done, _ = concurrent.futures.wait(
                    in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    spec, tile = in_flight.pop(future)
                    # Counters only count in the bundle's own thread, not in pool threads.
                    data, attempts, read = future.result()
                    self.requests.inc(attempts)
                    self.retries.inc(attempts - 1)
                    if read is None and not getattr(self.source, "counts_reads", False):
                        # a source that does not count: the tile's size on the wire
                        read = (
                            tile.rows * tile.cols * data.shape[-1] * self.source.transfer_itemsize
                        )
                    self.bytes.inc(read or 0)  # a counting source that read nothing: 0
                    held = partial[spec]
                    w = spec.window
                    if (
                        held[0] is None
                        and tile == w
                        and data.dtype == np.dtype(self.source.store_dtype)
                    ):
                        held[0] = data  # one tile is the whole chunk: no copy
                    else:
                        if held[0] is None:
                            held[0] = self.source.empty_chunk(spec)
                        held[0][
                            tile.row - w.row : tile.row - w.row + tile.rows,
                            tile.col - w.col : tile.col - w.col + tile.cols,
                        ] = data
                    held[1] -= 1
                    if held[1] == 0:
                        del partial[spec]
                        try:
                            self.chunks.inc()
                            self._count_data(spec, held[0])
                            yield spec.key, self.source.to_dataset(spec, held[0])
                        finally:
                            self.open_chunks.release()
        finally:
            # Normal end: nothing is left. Failure (here, in a request or downstream of a yield):
            # submit nothing more, drop queued requests, and wait for the running ones, so a
            # retry of this bundle never runs beside requests of this attempt.
            stop.set()
            for future in in_flight:
                future.cancel()
            concurrent.futures.wait(in_flight)
            for _ in partial:
                self.open_chunks.release()


@dataclasses.dataclass
class FetchChunks(beam.PTransform):
    """ChunkSpecs -> (xbeam.Key, xr.Dataset), with bounded requests in flight and chunks in memory.

    `global_cap=True`: never more than `max_concurrent_requests` in flight across the job
    (quota'd sources). `global_cap=False`: chunks spread over all workers, at most
    `threads_per_worker` requests in flight per DoFn (sources without a quota).
    `output`: the store the chunks go to; chunks with a done marker there are skipped.
    """

    source: TileSource
    max_concurrent_requests: int = 40
    max_requests_per_second: float = 100.0
    threads_per_worker: int = 40
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    max_open_chunks: int = 4
    global_cap: bool = True
    output: str | None = None
    batch_size: int = 16  # chunks per element without a global cap: keeps a DoFn's pool busy
    # Without a global cap, batch chunks by squares of this many pixels (0: any chunks): chunks
    # that share a source's blocks are then fetched together, so each block is decoded once.
    neighbourhood: int = 0

    def __post_init__(self):
        super().__init__()

    @property
    def shards(self) -> int:
        return (
            shard_count(self.max_concurrent_requests, self.threads_per_worker)
            if self.global_cap
            else 0
        )

    @property
    def threads_per_shard(self) -> int:
        return (
            self.max_concurrent_requests // self.shards
            if self.global_cap
            else self.threads_per_worker
        )

    def expand(self, specs: beam.PCollection) -> beam.PCollection:
        if not self.global_cap:
            fn = _FetchChunksFn(
                self.source,
                self.threads_per_worker,
                math.inf,
                self.retry,
                self.max_open_chunks,
                self.output,
            )
            if self.neighbourhood:
                side = self.neighbourhood
                batches = (
                    specs
                    | "Neighbourhood"
                    >> beam.Map(
                        lambda spec: (
                            (spec.time_index, spec.window.row // side, spec.window.col // side),
                            spec,
                        )
                    )
                    | "SpreadOverWorkers" >> beam.GroupByKey()
                )
            else:
                batches = (
                    specs
                    | "SpreadOverWorkers" >> beam.Reshuffle()
                    | "Batch"
                    >> beam.BatchElements(
                        min_batch_size=self.batch_size, max_batch_size=self.batch_size
                    )
                    | "Unkeyed" >> beam.Map(lambda batch: (None, batch))
                )
            return batches | "FetchBatch" >> beam.ParDo(fn).with_output_types(CHUNK)
        shards = self.shards
        fn = _FetchChunksFn(
            self.source,
            self.threads_per_shard,
            self.max_requests_per_second / shards,
            self.retry,
            self.max_open_chunks,
            self.output,
        )
        return (
            specs
            | "DealToShards" >> beam.Map(lambda spec: (spec.index % shards, spec))
            | "GroupByShard" >> beam.GroupByKey()
            | "FetchShard" >> beam.ParDo(fn).with_output_types(CHUNK)
        )
