"""The plan of an extraction, computed before anything is written: pure functions, no Beam, no
network.

`estimate` -> `JobPlan`: for the chunks a run writes (`transforms.core.chunk_plan.ChunkPlan`),
the requests, bytes on the wire, store size, time at Earth Engine's quota bound and at the
throughput measured against the emulator. Requests are counted per distinct chunk shape
(interior, right edge, bottom edge, corner), not per chunk, as `request_plan` splits them.

The constants below are measurements (benchmarks/RESULTS.md, "Plan constants", with the
command) or stated assumptions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transforms.core.chunk_plan import ChunkPlan
from transforms.core.grid import Grid, Window
from transforms.sources import request_plan

# Bytes on disk / bytes uncompressed of a written chunk with data, by store dtype: measured on
# emulator output (de-quantised int8 codes, like the real collection) with the store's own
# codec (sharded, Blosc-Zstd 1; float32 in 256 KiB Blosc blocks);
# `python benchmarks/plan_constants.py --size 1024`
# (benchmarks/RESULTS.md). An upper bound: chunks of no data (sea) compress to almost nothing.
COMPRESSION_RATIO = {"float32": 0.383, "int8": 0.869}
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
