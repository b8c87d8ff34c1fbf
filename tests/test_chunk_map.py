"""The chunk-map frame: any ChunkFunction, one or several windows per chunk, (time, y, x) or (y, x) outputs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import product
from tests.helpers.store_factory import make_store
from transforms.core.chunk_plan import ChunkPlan
from transforms.products.change import pair_similarity, reference_similarity, threshold_mask
from transforms.products.chunk_map import ChunkFunction, MapChunks, Variable, output_template
from transforms.storage import readers, store


class BandDifference(ChunkFunction):
    """Band 0 of the second window minus band 0 of the first, and a count of bands with data: two inputs, two outputs."""

    counter = "pixels_differenced"

    def setup(self):
        self.ready = True  # setup() runs on the worker before the first chunk

    def __call__(self, windows, time_index):
        assert self.ready
        a, b = windows
        diff = (b[..., 0] - a[..., 0]).astype(np.float32)
        count = np.where(np.isnan(diff), 255, (~np.isnan(b)).sum(axis=-1)).astype(np.uint8)
        return {"diff": diff, "bands": count}


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    return make_store(
        str(tmp_path_factory.mktemp("s") / "emb.zarr"),
        years=(2021, 2022, 2023),
        height=140,
        width=150,
        chunk_size=64,
    )


@pytest.mark.parametrize("timed", [False, True])
def test_map_chunks_reads_several_years_and_writes_the_grid(emb, tmp_path, timed):
    ds = store.open_embeddings(emb.path)
    info = readers.store_info(emb.path, ds)
    variables = (
        Variable("diff", "float32", float("nan"), {"units": "1"}),
        Variable("bands", "uint8", 255),
    )
    years = [2022, 2023] if timed else None
    template = output_template(
        ds,
        list(variables),
        years,
        chunk_rows=info.chunk_rows,
        chunk_cols=info.chunk_cols,
        product="change",
        attrs={"a": 1},
    )
    plan = ChunkPlan.full(
        info.height, info.width, info.chunk_rows, info.chunk_cols, years or [2023]
    )
    inputs = (
        {0: (0, 1), 1: (1, 2)} if timed else {0: (2, 0)}
    )  # the frame reads what `inputs` says, in that order
    output = str(tmp_path / "out.zarr")
    result = product.run_map(
        "test",
        output,
        template,
        plan,
        MapChunks(emb.path, BandDifference(), inputs, variables, timed=timed),
        PipelineOptions(["--runner=FnApiRunner"]),
        info=info,
        resume=False,
        overwrite=False,
    )
    got = xr.open_zarr(output, mask_and_scale=False)
    v = emb.values
    pairs = [(0, 1), (1, 2)] if timed else [(2, 0)]
    want = np.stack([v[b, :, :, 0] - v[a, :, :, 0] for a, b in pairs])
    count = np.stack(
        [
            np.where(np.isnan(v[a, :, :, 0] - v[b, :, :, 0]), 255, (~np.isnan(v[b])).sum(axis=-1))
            for a, b in pairs
        ]
    )
    if not timed:
        want, count = want[0], count[0]
    assert got["diff"].dims == (("time", "y", "x") if timed else ("y", "x"))
    np.testing.assert_array_equal(got["diff"].values, want.astype(np.float32))
    np.testing.assert_array_equal(got["bands"].values, count)
    assert (
        got.attrs[store.STATUS_ATTR] == "complete"
        and got.attrs["a"] == 1
        and got["diff"].attrs["grid_mapping"] == "spatial_ref"
    )
    valid = int(np.count_nonzero(~np.isnan(want)))
    assert (
        result.totals["pixels_differenced"] == valid
        and result.totals["pixels_nodata"] == want.size - valid
    )
    assert result.totals["chunks_written"] == plan.count


def test_pure_functions_against_float64():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 7, 64)).astype(np.float32)
    a[1, 2, 5] = np.nan
    b[3, 4, 0] = np.nan
    sim = pair_similarity(a, b)
    want = (a.astype(np.float64) * b).sum(-1)
    assert (
        sim.dtype == np.float32
        and np.isnan(sim[1, 2])
        and np.isnan(sim[3, 4])
        and np.isnan(sim).sum() == 2
    )
    np.testing.assert_allclose(sim, want, rtol=1e-5, atol=1e-4)
    ref = rng.normal(size=64)
    np.testing.assert_allclose(
        reference_similarity(a, ref), a.astype(np.float64) @ ref, rtol=1e-5, atol=1e-4
    )
    mask = threshold_mask(np.array([0.1, 0.5, np.nan, 0.9], dtype=np.float32), 0.5, below=True)
    np.testing.assert_array_equal(mask, [1, 0, 255, 0])
    np.testing.assert_array_equal(
        threshold_mask(np.array([0.1, 0.5, np.nan]), 0.5, below=False), [0, 1, 255]
    )
