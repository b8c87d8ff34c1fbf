"""int8 stores: the mirror's own codes kept bit for bit; every reader de-quantises them transparently.

One extraction of generated COGs on the mirror's native grid (zone A, 10 m, aligned), once
as int8 and once as float32; then each reader (sample, train -> classify, cluster, export)
run on both must agree.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import zarr

from pipelines import classify, cluster, export, extract, sample, train
from sample_data import embedding as sample_embedding
from sample_data import generate as sample_data
from tests.helpers.cog_mirror import check_nearest, files_of, grid_of, make_source
from tests.helpers.runners import FNAPI
from transforms.core import quantize
from transforms.core.grid import Window
from transforms.storage import readers, store

YEARS = (2022, 2023)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return sample_data.generate(
        str(tmp_path_factory.mktemp("sample")), sample_data.SampleSpec(**sample_data.SMALL)
    )


def west_bbox(data) -> str:
    """The western half of the area: only zone A's files, read on their own grid."""
    west, south, east, north = data.bbox
    return ",".join(repr(v) for v in (west, south, west + 0.5 * (east - west), north))


@pytest.fixture(scope="module")
def stores(mirror, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores")
    paths = {}
    for dtype in ("int8", "float32"):
        paths[dtype] = str(out / f"{dtype}.zarr")
        rc = extract.run(
            [
                "--source",
                "cog",
                "--cog-root",
                mirror.mirror,
                f"--bbox={west_bbox(mirror)}",
                "--crs",
                "EPSG:32610",
                "--years",
                "2022,2023",
                "--output",
                paths[dtype],
                "--dtype",
                dtype,
                "--tuning",
                "chunk_size=128",
                "--tuning",
                "max_concurrent_requests=4",
                *FNAPI,
            ]
        )
        assert rc == 0
    return paths


def test_int8_store_holds_the_mirrors_codes_bit_for_bit(mirror, stores):
    group = zarr.open_group(stores["int8"], mode="r")
    array = group["embedding"]
    assert array.dtype == np.int8 and array.fill_value == -128
    assert group.attrs["quantization"] == quantize.FORMULA
    assert array.attrs["quantization"] == quantize.FORMULA
    ds = store.open_embeddings(stores["int8"])
    grid = grid_of(ds)
    assert grid.crs == "EPSG:32610" and grid.x0 % 10 == 0 and grid.y0 % 10 == 0
    whole = Window(0, 0, grid.height, grid.width)
    for t, year in enumerate(YEARS):
        codes = np.moveaxis(array[t], 0, -1)  # (band, y, x) as stored -> (y, x, band)
        counts = check_nearest(
            codes, grid, whole, files_of(make_source(mirror.mirror, grid, "int8"), year)
        )
        assert (
            counts["foreign"] == 0 and counts["differ_at_edges"] == 0
        )  # all native: an exact copy
        np.testing.assert_array_equal(codes, counts["expected"])
        assert 0 < counts["nodata"] < 0.2 * counts["pixels"]


def test_dequantised_reads_match_the_float_store(stores):
    floats = (
        xr.open_zarr(stores["float32"], consolidated=True)
        .transpose("time", "y", "x", "band")["embedding"]
        .values
    )
    codes = store.open_embeddings(stores["int8"])["embedding"].values
    assert codes.dtype == np.int8
    values = store.as_float(codes)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(values), np.isnan(floats))
    # within the quantisation step everywhere; in fact identical (same codes, same formula)
    valid = ~np.isnan(floats)
    step = np.abs(
        quantize.dequantize(codes.clip(-126, 126) + np.sign(codes).astype(np.int8)) - values
    )
    assert (np.abs(values - floats)[valid] <= step[valid]).all()
    np.testing.assert_array_equal(values, floats)
    # the window reader every pipeline uses
    reader = readers.StoreReader(stores["int8"])
    info = readers.store_info(stores["int8"])
    window = info.windows()[1]
    np.testing.assert_array_equal(
        reader.read(1, window),
        floats[1, window.row : window.row + window.rows, window.col : window.col + window.cols],
    )


def test_int8_store_on_disk_is_well_under_the_float32_one(stores):
    """4x fewer bytes before compression; Zstd in 256 KiB Blosc blocks shrinks the float32 values
    (255 distinct ones) far more than the codes (benchmarks/RESULTS.md, "Store formats": 0.389 vs
    0.861 of the v2 stores), so on disk the int8 store is ~0.57-0.59 of the float32 one."""

    def size(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)

    assert size(stores["int8"]) < 0.65 * size(stores["float32"])


def test_sample_train_classify_agree_on_int8_and_float(mirror, stores, tmp_path):
    tables, maps = {}, {}
    for dtype, path in stores.items():
        tables[dtype] = str(tmp_path / f"samples-{dtype}.parquet")
        assert (
            sample.run(
                [
                    "--embeddings",
                    path,
                    "--points",
                    mirror.points,
                    "--label-column",
                    "label",
                    "--output",
                    tables[dtype],
                    *FNAPI,
                ]
            )
            == 0
        )
    a, b = pd.read_parquet(tables["int8"]), pd.read_parquet(tables["float32"])
    band_columns = [c for c in a.columns if c in sample_embedding.BANDS]
    assert len(band_columns) == 64 and len(a) > 50
    pd.testing.assert_frame_equal(a[band_columns], b[band_columns])
    counts = b["label"].value_counts()
    training = str(
        tmp_path / "training.parquet"
    )  # this half of the area has too few points of some classes
    b[b["label"].isin(counts[counts >= 4].index)].to_parquet(training)
    model = str(tmp_path / "knn.skops")
    assert (
        train.run(
            ["--samples", training, "--classifier", "knn", "--tuning", "folds=2", "--output", model]
        )
        == 0
    )
    for dtype, path in stores.items():
        maps[dtype] = str(tmp_path / f"classes-{dtype}.zarr")
        assert (
            classify.run(
                [
                    "--embeddings",
                    path,
                    "--model",
                    model,
                    "--output",
                    maps[dtype],
                    "--confidence",
                    *FNAPI,
                ]
            )
            == 0
        )
    x = xr.open_zarr(maps["int8"], consolidated=True, mask_and_scale=False).load()
    y = xr.open_zarr(maps["float32"], consolidated=True, mask_and_scale=False).load()
    np.testing.assert_array_equal(x["class"].values, y["class"].values)
    np.testing.assert_array_equal(x["confidence"].values, y["confidence"].values)
    assert (x["class"].values != x["class"].attrs.get("fill_value", 255)).mean() > 0.8


def test_cluster_and_export_agree_on_int8_and_float(stores, tmp_path):
    sidecars = {}
    for dtype, path in stores.items():
        model = str(tmp_path / f"kmeans-{dtype}.skops")
        assert (
            cluster.run(
                [
                    "--embeddings",
                    path,
                    "--output",
                    model,
                    "--clusters",
                    "4",
                    "--tuning",
                    "sample_size=2000",
                    "--tuning",
                    "seed=1",
                    *FNAPI,
                ]
            )
            == 0
        )
        sidecars[dtype] = json.load(open(model + ".json"))
    assert (
        sidecars["int8"]["metrics"] == sidecars["float32"]["metrics"]
    )  # same pixels, same values, same fit
    bands = {}
    for dtype, path in stores.items():
        output = str(tmp_path / f"a01-{dtype}.tif")
        assert (
            export.run(["--input", path, "--band", "A01", "--years", "2022", "--output", output])
            == 0
        )
        with rasterio.open(output) as ds:
            bands[dtype] = ds.read(1, masked=True)
    np.testing.assert_array_equal(bands["int8"].mask, bands["float32"].mask)
    np.testing.assert_array_equal(bands["int8"].filled(0), bands["float32"].filled(0))
