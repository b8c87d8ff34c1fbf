"""transforms/core/chunk_plan.py (the compact chunk plan) and transforms/sources/extract_plan.py (the job estimates), against per-chunk references.

The references are the straightforward per-chunk computations (every window, every ChunkSpec,
`request_plan.split_window` on each chunk) that the plan replaces with arithmetic.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import shapely

from transforms.core import grid as gridlib
from transforms.core import progress
from transforms.core.chunk_plan import ChunkPlan
from transforms.core.chunks import ChunkSpec
from transforms.sources import extract_plan as planlib
from transforms.sources import request_plan

YEARS = [2019, 2020, 2021]


def reference_specs(grid, chunk_size, years, aoi):
    """Every window, tested one by one against the AOI; ChunkSpecs numbered year-major."""
    kept, skipped = [], 0
    for w in gridlib.chunk_windows(grid, chunk_size):
        if shapely.intersects(aoi, shapely.box(*grid.window_bounds(w))):
            kept.append(w)
        else:
            skipped += 1
    specs = [
        ChunkSpec(i, t, y, w)
        for i, (t, y, w) in enumerate((t, y, w) for t, y in enumerate(years) for w in kept)
    ]
    return specs, skipped * len(years)


def ring_area():
    """A lon/lat polygon with a hole and a bay, so that rows have several runs of chunks."""
    outer = shapely.Polygon(
        [
            (5.90, 45.80),
            (6.30, 45.80),
            (6.30, 46.10),
            (6.10, 46.10),
            (6.10, 45.95),
            (6.00, 45.95),
            (6.00, 46.10),
            (5.90, 46.10),
        ]
    )
    return outer.difference(shapely.box(6.15, 45.85, 6.25, 45.90))


@pytest.mark.parametrize("chunk_size", [128, 256, 300])
@pytest.mark.parametrize("area", ["bbox", "ring"])
def test_chunk_plan_equals_the_per_chunk_plan(chunk_size, area):
    aoi = gridlib.parse_bbox("5.9,45.8,6.3,46.1") if area == "bbox" else ring_area()
    grid, aoi_in_crs = gridlib.plan_grid(aoi)
    plan = ChunkPlan.for_area(grid, chunk_size, YEARS, aoi_in_crs)
    expected, skipped = reference_specs(grid, chunk_size, YEARS, aoi_in_crs)
    assert list(plan.specs()) == expected  # windows, years and indexes (the shard deal) unchanged
    assert plan.count == len(expected) and plan.skipped == skipped
    assert list(plan) == [s.marker for s in expected]
    if area == "ring":
        assert skipped > 0 and any(len(row.runs) > 1 for row in plan.rows())
    rows = list(plan.rows())
    assert len(rows) <= plan.touched.shape[0] * len(YEARS)
    assert [s for row in rows for s in plan.expand(row)] == expected


def test_resume_rows_skip_done_markers_and_keep_indexes():
    grid, aoi = gridlib.plan_grid(ring_area())
    plan = ChunkPlan.for_area(grid, 256, YEARS, aoi)
    every = list(plan.specs())
    done = {s.marker for s in every[::3]}
    todo = list(plan.specs(done))
    assert todo == [s for s in every if s.marker not in done]
    assert not list(plan.rows({s.marker for s in every}))


def test_full_plan_is_every_chunk_of_a_store():
    plan = ChunkPlan.full(1000, 700, 256, 128, YEARS)
    windows = [
        gridlib.Window(r, c, min(256, 1000 - r), min(128, 700 - c))
        for r in range(0, 1000, 256)
        for c in range(0, 700, 128)
    ]
    assert [s.window for s in plan.specs() if s.time_index == 1] == windows
    assert plan.count == len(windows) * 3 and plan.skipped == 0


@pytest.mark.parametrize(
    "itemsize, tile, dtype",
    [(1, None, "float32"), (4, None, "int8"), (1, 256, "int8"), (4, 128, "float32")],
)
def test_estimate_counts_by_shape_equal_per_chunk_counts(itemsize, tile, dtype):
    grid, aoi = gridlib.plan_grid(ring_area())
    plan = ChunkPlan.for_area(grid, 512, YEARS, aoi)
    job = planlib.estimate(
        plan, n_bands=64, transfer_itemsize=itemsize, store_dtype=dtype, tile_size=tile
    )
    specs = list(plan.specs())
    assert len(plan.shapes()) == 4  # interior, right edge, bottom edge, corner all present
    assert job.requests == sum(
        len(request_plan.split_window(s.window, 64, itemsize, tile)) for s in specs
    )
    pixels = sum(s.window.rows * s.window.cols for s in specs)
    assert job.pixel_years == pixels and job.wire_bytes == pixels * 64 * itemsize
    assert job.store_bytes == pixels * 64 * np.dtype(dtype).itemsize
    assert job.store_bytes_on_disk == int(job.store_bytes * planlib.COMPRESSION_RATIO[dtype])
    rate = min(100.0, 40 / planlib.ASSUMED_EE_LATENCY_S)
    assert job.seconds_at_quota == pytest.approx(job.requests / rate)
    assert not job.too_big()


def test_country_plans_compactly():
    """6 x 8 degrees in one UTM zone, 8 years: tens of thousands of chunks, a few hundred graph elements."""
    aoi = gridlib.parse_bbox("0.0,43.0,6.0,51.0")
    grid, aoi_in_crs = gridlib.plan_grid(aoi)
    years = list(range(2017, 2025))
    plan = ChunkPlan.for_area(grid, 1024, years, aoi_in_crs)
    assert grid.crs == "EPSG:32631" and 20_000 <= plan.count <= 60_000
    rows = list(plan.rows())
    assert len(rows) <= plan.touched.shape[0] * len(years) < plan.count / 30
    assert sum(stop - start for r in rows for start, stop in r.runs) == plan.count
    # What the Beam graph pickles: the plan (MarkComplete, FlatMap) and the rows (Create).
    assert len(pickle.dumps(plan)) < 20_000 and len(pickle.dumps(rows)) < 100_000
    assert pickle.loads(pickle.dumps(plan)).count == plan.count
    job = planlib.estimate(plan, n_bands=64, transfer_itemsize=1, store_dtype="float32")
    assert job.requests == sum(
        len(request_plan.split_window(s.window, 64, 1)) for s in plan.specs()
    )
    assert (
        plan.count < job.requests < 2 * plan.count
    )  # a full 1024 px int8 chunk is 68 MB: two 48 MiB requests
    assert any("pixel-years" in r for r in job.too_big()) and any(
        "store" in r for r in job.too_big()
    )


def test_thresholds():
    job = planlib.JobPlan(
        chunks=planlib.MAX_CHUNKS + 1,
        skipped=0,
        done=0,
        pixel_years=10,
        requests=1,
        wire_bytes=1,
        store_bytes=1,
        store_bytes_on_disk=planlib.MAX_STORE_BYTES + 1,
        seconds_at_quota=1,
        quota_requests_per_second=1,
        seconds_at_emulator=1,
    )
    assert len(job.too_big()) == 2


def test_progress_line_format():
    line = progress.progress_line("efm extract", 25, 100, 20, 10.0, 2e6)
    assert line == "efm extract: progress: 25/100 chunks written (25%), 4.0 MB/s, ETA 38 s"
    assert (
        progress.progress_line("efm sample", 3, 3, 3, 1.0, None, verb="sampled")
        == "efm sample: progress: 3/3 chunks sampled (100%), ETA 0 s"
    )
    assert "ETA unknown" in progress.progress_line("efm extract", 0, 10, 0, 5.0, 1.0)


def test_progress_prints_on_a_cadence_and_a_final_count(capsys):
    import time

    state = {"n": 2}

    def count():  # the run progresses between two listings
        state["n"] = min(state["n"] + 3, 10)
        return state["n"]

    with progress.Progress(
        "efm x", count, 10, already=2, bytes_per_unit=1e6, interval=0.05
    ) as watch:
        while len(watch.lines) < 3:
            time.sleep(0.01)
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 4 and all(
        re.fullmatch(r"efm x: progress: \d+/10 chunks written \(\d+%\), [\d.]+ MB/s, ETA .+", line)
        for line in err
    )
    assert err[-1].startswith("efm x: progress: 10/10 chunks written (100%)")
    with progress.Progress(
        "efm x", count, 10, already=10
    ) as idle:  # nothing to do: no thread, no line
        pass
    assert idle.lines == [] and capsys.readouterr().err == ""


def test_finalize_checks_markers_against_the_compact_plan(tmp_path):
    """MarkComplete's check, given the plan (not a list): one missing marker keeps the store incomplete."""
    import xarray as xr

    from transforms.storage import store

    grid = gridlib.Grid("EPSG:32631", 10.0, 500000.0, 5000000.0, 300, 200)
    path = str(tmp_path / "s.zarr")
    store.prepare(
        path,
        store.embedding_template(grid, YEARS, ["A00"], "float32", 128, {"source": "test"}),
        resume=False,
        overwrite=False,
    )
    plan = ChunkPlan.full(grid.height, grid.width, 128, 128, YEARS)
    markers = list(plan)
    assert len(markers) == plan.count == 2 * 3 * 3
    folder = tmp_path / "s.zarr" / ".efm" / "done"
    folder.mkdir(parents=True)
    for marker in markers[:-1]:
        (folder / marker).write_bytes(b"")
    with pytest.raises(RuntimeError, match=f"1 of {plan.count} chunks were not written"):
        store.finalize(path, plan)
    assert xr.open_zarr(path).attrs[store.STATUS_ATTR] == "incomplete"
    (folder / markers[-1]).write_bytes(b"")
    store.finalize(path, plan)
    assert xr.open_zarr(path).attrs[store.STATUS_ATTR] == "complete"
