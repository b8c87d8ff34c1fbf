"""The plan of a run, computed before anything is written: pure functions, no Beam, no network.

Two parts:

* `ChunkPlan`: which chunks of the grid the run writes, held compactly as one boolean per
  chunk position (y, x) that the area touches; the years multiply it arithmetically. The Beam
  graph gets one small `ChunkRow` per (year, chunk row) with ranges of chunk columns, and
  workers expand each into `ChunkSpec`s (`ChunkPlan.expand`): a continent never becomes a
  list of ChunkSpecs on the launcher, nor a pickled list of markers in `MarkComplete`.
* `estimate` -> `JobPlan`: requests, bytes on the wire, store size, time at the quota bound and
  at the throughput measured against the emulator. Requests are counted per distinct chunk
  shape (interior, right edge, bottom edge, corner), not per chunk.

The constants below are measurements (benchmarks/RESULTS.md, "Plan constants", with the
command) or stated assumptions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import shapely

from transforms.core.chunks import ChunkSpec
from transforms.core.grid import Grid, Window
from transforms.sources import request_plan

# Bytes on disk / bytes uncompressed of a written chunk with data, by store dtype: measured on
# emulator output (de-quantised int8 codes, like the real collection) with the store's own
# codec (sharded, Blosc-Zstd 1); `python benchmarks/plan_constants.py --size 1024`
# (benchmarks/RESULTS.md). An upper bound: chunks of no data (sea) compress to almost nothing.
COMPRESSION_RATIO = {"float32": 0.506, "int8": 0.869}
# Earth Engine: the per-project quota, and a per-request latency that is ASSUMED (nothing here
# reaches Earth Engine): the time to compute and send one full-size (up to 48 MiB) request.
EE_MAX_CONCURRENT = 40
EE_MAX_REQUESTS_PER_SECOND = 100.0
ASSUMED_EE_LATENCY_S = 5.0
# Throughput of `efm extract` (default flags, int8 on the wire) against the emulator (300 ms
# latency, cap 40) on one 2-core machine shared with other jobs, by store dtype: (requests/s,
# MB/s on the wire). CPU-bound (de-quantising, compressing), measured by the same script.
EMULATOR_THROUGHPUT = {"float32": (0.3, 8.5), "int8": (0.9, 25.0)}

# A run past any of these is "too big to be a mistake": its plan is printed and it runs only
# with --yes (README, "Plan and size").
MAX_PIXEL_YEARS = 10**9  # 256 GB of float32 (64 GB of int8) embeddings
MAX_STORE_BYTES = 10**12  # 1 TB on disk
MAX_CHUNKS = 100_000


@dataclasses.dataclass(frozen=True)
class ChunkRow:
    """A compact element of the Beam graph: one year's chunks in one row band of the grid."""

    time_index: int
    row: int  # chunk row (not pixel row)
    runs: tuple[tuple[int, int], ...]  # [start, stop) ranges of chunk columns to write


def _runs(cols: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Sorted column indexes -> [start, stop) ranges."""
    if len(cols) == 0:
        return ()
    breaks = np.flatnonzero(np.diff(cols) != 1)
    starts = np.concatenate([[cols[0]], cols[breaks + 1]])
    stops = np.concatenate([cols[breaks] + 1, [cols[-1] + 1]])
    return tuple((int(a), int(b)) for a, b in zip(starts, stops))


@dataclasses.dataclass(eq=False)
class ChunkPlan:
    """The chunks a run writes: `touched[r, c]` for chunk row r, chunk column c, for every year."""

    height: int
    width: int
    chunk_rows: int
    chunk_cols: int
    years: tuple[int, ...]
    touched: np.ndarray  # bool (n_rows, n_cols)

    def __post_init__(self):
        self.touched = np.ascontiguousarray(self.touched, dtype=bool)
        per_row = self.touched.sum(axis=1)
        self._row_start = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(
            np.int64
        )  # index of a row's first chunk

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_row_start"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()

    @classmethod
    def full(cls, height: int, width: int, chunk_rows: int, chunk_cols: int, years) -> ChunkPlan:
        shape = (math.ceil(height / chunk_rows), math.ceil(width / chunk_cols))
        return cls(height, width, chunk_rows, chunk_cols, tuple(years), np.ones(shape, dtype=bool))

    @classmethod
    def for_area(cls, grid: Grid, chunk_size: int, years, aoi) -> ChunkPlan:
        """Chunks whose footprint intersects `aoi` (in the grid's CRS), one row band at a time."""
        n_rows, n_cols = math.ceil(grid.height / chunk_size), math.ceil(grid.width / chunk_size)
        touched = np.zeros((n_rows, n_cols), dtype=bool)
        shapely.prepare(aoi)
        lefts = grid.x0 + np.arange(n_cols) * chunk_size * grid.scale
        rights = grid.x0 + np.minimum((np.arange(n_cols) + 1) * chunk_size, grid.width) * grid.scale
        for r in range(n_rows):
            top = grid.y0 - r * chunk_size * grid.scale
            bottom = grid.y0 - min((r + 1) * chunk_size, grid.height) * grid.scale
            touched[r] = shapely.intersects(aoi, shapely.box(lefts, bottom, rights, top))
        return cls(grid.height, grid.width, chunk_size, chunk_size, tuple(years), touched)

    # -- counts -----------------------------------------------------------------------------
    @property
    def per_year(self) -> int:
        return int(self._row_start[-1] + self.touched[-1].sum()) if self.touched.size else 0

    @property
    def count(self) -> int:
        return self.per_year * len(self.years)

    @property
    def skipped(self) -> int:
        """Chunks outside the area, all years."""
        return (self.touched.size - self.per_year) * len(self.years)

    def shapes(self) -> dict[tuple[int, int], int]:
        """(rows, cols) of a chunk -> how many touched chunks (one year) have that shape."""
        n_rows, n_cols = self.touched.shape
        last_h = self.height - (n_rows - 1) * self.chunk_rows
        last_w = self.width - (n_cols - 1) * self.chunk_cols
        t = self.touched
        counts = {
            (self.chunk_rows, self.chunk_cols): int(t[:-1, :-1].sum()),
            (self.chunk_rows, last_w): int(t[:-1, -1].sum()),
            (last_h, self.chunk_cols): int(t[-1, :-1].sum()),
            (last_h, last_w): int(t[-1, -1]),
        }
        merged: dict[tuple[int, int], int] = {}
        for shape, n in counts.items():
            if n:
                merged[shape] = merged.get(shape, 0) + n
        return merged

    # -- chunks -----------------------------------------------------------------------------
    def window(self, row: int, col: int) -> Window:
        r0, c0 = row * self.chunk_rows, col * self.chunk_cols
        return Window(
            r0, c0, min(self.chunk_rows, self.height - r0), min(self.chunk_cols, self.width - c0)
        )

    def marker(self, time_index: int, row: int, col: int) -> str:
        return (
            f"{time_index}.{row * self.chunk_rows}.{col * self.chunk_cols}"  # == ChunkSpec.marker
        )

    def markers(self) -> Iterator[str]:
        rows, cols = np.nonzero(self.touched)
        for t in range(len(self.years)):
            for r, c in zip(rows.tolist(), cols.tolist()):
                yield self.marker(t, r, c)

    def __iter__(self) -> Iterator[str]:
        """The markers of every planned chunk (what `store.finalize` checks)."""
        return self.markers()

    def rows(self, done: set[str] | frozenset[str] = frozenset()) -> Iterator[ChunkRow]:
        """One ChunkRow per (year, chunk row) with something left to write; `done` = markers to skip."""
        for t in range(len(self.years)):
            for r in range(self.touched.shape[0]):
                cols = np.flatnonzero(self.touched[r])
                if done:
                    cols = np.array(
                        [c for c in cols.tolist() if self.marker(t, r, c) not in done],
                        dtype=np.int64,
                    )
                if len(cols):
                    yield ChunkRow(t, r, _runs(cols))

    def expand(self, item: ChunkRow) -> Iterator[ChunkSpec]:
        """A ChunkRow -> its ChunkSpecs, indexed as `plan_chunks` would (runs on the workers)."""
        rank = (
            np.cumsum(self.touched[item.row]) - 1
        )  # position of each column among the row's touched ones
        first = item.time_index * self.per_year + int(self._row_start[item.row])
        for start, stop in item.runs:
            for c in range(start, stop):
                yield ChunkSpec(
                    first + int(rank[c]),
                    item.time_index,
                    self.years[item.time_index],
                    self.window(item.row, c),
                )

    def specs(self, done: set[str] | frozenset[str] = frozenset()) -> Iterator[ChunkSpec]:
        for item in self.rows(done):
            yield from self.expand(item)


# ---------------------------------------------------------------------------------------------
# Estimates


@dataclasses.dataclass(frozen=True)
class JobPlan:
    chunks: int
    skipped: int
    done: int
    pixel_years: int
    requests: int
    wire_bytes: int
    store_bytes: int  # uncompressed
    store_bytes_on_disk: int  # estimated
    seconds_at_quota: float
    quota_requests_per_second: float
    seconds_at_emulator: float

    def too_big(self) -> list[str]:
        """The thresholds this job passes (empty: it runs without --yes)."""
        reasons = []
        if self.pixel_years > MAX_PIXEL_YEARS:
            reasons.append(f"{self.pixel_years:.3g} pixel-years > {MAX_PIXEL_YEARS:.0e}")
        if self.store_bytes_on_disk > MAX_STORE_BYTES:
            reasons.append(
                f"store {human_bytes(self.store_bytes_on_disk)} > {human_bytes(MAX_STORE_BYTES)}"
            )
        if self.chunks > MAX_CHUNKS:
            reasons.append(f"{self.chunks:,} chunks > {MAX_CHUNKS:,}")
        return reasons


def requests_per_chunk(
    rows: int,
    cols: int,
    n_bands: int,
    itemsize: int,
    tile_size: int | None,
    limit: int = request_plan.MAX_REQUEST_BYTES,
) -> int:
    return len(
        request_plan.split_window(Window(0, 0, rows, cols), n_bands, itemsize, tile_size, limit)
    )


def estimate(
    plan: ChunkPlan,
    *,
    n_bands: int,
    transfer_itemsize: int,
    store_dtype: str,
    tile_size: int | None = None,
    done: int = 0,
    max_concurrent: int = EE_MAX_CONCURRENT,
    max_requests_per_second: float = EE_MAX_REQUESTS_PER_SECOND,
    latency_s: float = ASSUMED_EE_LATENCY_S,
) -> JobPlan:
    """Counts and times of `plan` (all planned chunks; `done` is only reported)."""
    years = len(plan.years)
    requests = pixels = 0
    for (rows, cols), n in plan.shapes().items():
        requests += n * requests_per_chunk(rows, cols, n_bands, transfer_itemsize, tile_size)
        pixels += n * rows * cols
    requests, pixels = requests * years, pixels * years
    store_bytes = pixels * n_bands * np.dtype(store_dtype).itemsize
    wire_bytes = pixels * n_bands * transfer_itemsize  # as the `bytes` counter counts (no mask)
    rate = min(max_requests_per_second, max_concurrent / latency_s)
    emulator_rps, emulator_mbps = EMULATOR_THROUGHPUT.get(
        store_dtype, EMULATOR_THROUGHPUT["float32"]
    )
    at_emulator = max(requests / emulator_rps, wire_bytes / 1e6 / emulator_mbps)
    return JobPlan(
        chunks=plan.count,
        skipped=plan.skipped,
        done=done,
        pixel_years=pixels,
        requests=requests,
        wire_bytes=wire_bytes,
        store_bytes=store_bytes,
        store_bytes_on_disk=int(store_bytes * COMPRESSION_RATIO.get(store_dtype, 1.0)),
        seconds_at_quota=requests / rate,
        quota_requests_per_second=rate,
        seconds_at_emulator=at_emulator,
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def summary_rows(
    job: JobPlan,
    grid: Grid,
    years,
    *,
    transfer_dtype: str,
    store_dtype: str,
    latency_s: float = ASSUMED_EE_LATENCY_S,
    max_concurrent: int = EE_MAX_CONCURRENT,
    quota: bool = True,
    source_name: str = "COG mirror",
) -> list[tuple[str, object]]:
    """The plan as `name  value` rows for `common.print_summary` (`quota`: false for a source
    without one, `source_name` says which)."""
    at_quota = (
        (
            f"{human_seconds(job.seconds_at_quota)} ({job.quota_requests_per_second:g} requests/s: "
            f"{max_concurrent} in flight, {latency_s:g} s per request assumed)"
        )
        if quota
        else f"no quota ({source_name}): as fast as the workers read"
    )
    return [
        (
            "grid",
            f"{grid.width} x {grid.height} px at {grid.scale:g} in {grid.crs}, {len(years)} year(s)",
        ),
        ("chunks planned", f"{job.chunks:,}"),
        ("chunks skipped (outside the AOI)", f"{job.skipped:,}"),
        ("chunks already done (resume)", f"{job.done:,}"),
        ("pixels (x years)", f"{job.pixel_years:,}"),
        ("requests", f"{job.requests:,}"),
        ("bytes on the wire", f"{human_bytes(job.wire_bytes)} ({transfer_dtype})"),
        (
            "store size",
            f"{human_bytes(job.store_bytes_on_disk)} on disk ({store_dtype}, {human_bytes(job.store_bytes)} uncompressed, "
            f"x{COMPRESSION_RATIO.get(store_dtype, 1.0)} measured compression)",
        ),
        ("time at the quota bound", at_quota),
        (
            "time at emulator throughput",
            "{} ({:g} requests/s, {:g} MB/s on the wire: one 2-core machine, measured)".format(
                human_seconds(job.seconds_at_emulator),
                *EMULATOR_THROUGHPUT.get(store_dtype, EMULATOR_THROUGHPUT["float32"]),
            ),
        ),
    ]
