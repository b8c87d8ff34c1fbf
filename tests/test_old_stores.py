"""Stores efm wrote before issue 17 (Zarr 2, `embedding (time, y, x, band)`, dates as time) stay
readable by every command, and a resumed one keeps its layout.

The old stores are written as the old writer wrote them (store_factory.write_v2); every result is
compared with numpy / scikit-learn on the factory's own values (never with efm's readers).
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
import xarray as xr
import xarray_beam as xbeam
import zarr
from sklearn.neighbors import KNeighborsClassifier

from pipelines import change as change_cli
from pipelines import classify as classify_cli
from pipelines import similarity as similarity_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store, raw_embedding, write_v2
from transforms.core import quantize
from transforms.core.grid import Grid
from transforms.learning import models
from transforms.storage import store

X0, Y0, SCALE = 500_000.0, 5_000_000.0, 10.0  # store_factory's grid


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    root = tmp_path_factory.mktemp("old")
    return {
        dtype: make_store(str(root / f"{dtype}.zarr"), dtype=dtype, layout="v2")
        for dtype in ("int8", "float32")
    }


def test_an_old_store_is_zarr_2_band_last(old):
    group = zarr.open_group(old["int8"].path, mode="r")
    assert group.metadata.zarr_format == 2
    assert group["embedding"].attrs["_ARRAY_DIMENSIONS"] == ["time", "y", "x", "band"]


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_open_embeddings_reads_an_old_store_as_before(old, dtype):
    s = old[dtype]
    ds = store.open_embeddings(s.path)
    assert ds["embedding"].dims == ("time", "y", "x", "band")
    np.testing.assert_array_equal(store.as_float(ds["embedding"].values), s.values)
    assert [int(str(t)[:4]) for t in ds["time"].values] == s.years


def test_classify_an_old_store_equals_model_predict(old, tmp_path):
    s = old["int8"]
    rng = np.random.default_rng(0)
    t, r, c = np.nonzero(s.valid)
    pick = rng.choice(len(t), 300, replace=False)
    model = KNeighborsClassifier(3).fit(
        s.values[t[pick], r[pick], c[pick]], s.labels[t[pick], r[pick], c[pick]]
    )
    path = str(tmp_path / "knn.skops")
    models.save_model(
        model, path, {"kind": "classifier", "classes": model.classes_, "bands": list(BANDS)}
    )
    out = tmp_path / "classes.zarr"
    argv = ["--embeddings", s.path, "--model", path, "--output", str(out), *FNAPI]
    assert classify_cli.run(argv) == 0
    got = xr.open_zarr(out, mask_and_scale=False)["class"].values
    flat = s.values.reshape(-1, len(BANDS))
    want = np.full(flat.shape[0], -1)
    valid = ~np.isnan(flat).any(axis=1)
    want[valid] = model.predict(flat[valid])
    labels = xr.open_zarr(out)["class"].attrs["class_labels"]
    codes = {int(label): i for i, label in enumerate(labels)}
    expected = np.array([codes.get(v, 255) for v in want], dtype=np.uint8).reshape(got.shape)
    np.testing.assert_array_equal(got, expected)


def _points(path, pixels):
    features = [
        {
            "type": "Feature",
            "properties": {},
            "geometry": {
                "type": "Point",
                "coordinates": [X0 + (col + 0.5) * SCALE, Y0 - (row + 0.5) * SCALE],
            },
        }
        for row, col in pixels
    ]
    crs = {"type": "name", "properties": {"name": "EPSG:32631"}}
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))


def test_similarity_and_change_on_an_old_store_equal_numpy(old, tmp_path):
    s = old["float32"]
    values = s.values.astype(np.float64)
    pixels = [(5, 150), (40, 200)]
    assert s.valid[:, 5, 150].all() and s.valid[:, 40, 200].all()
    points = tmp_path / "points.geojson"
    _points(points, pixels)
    out = tmp_path / "similarity.zarr"
    argv = ["--embeddings", s.path, "--points", str(points), "--output", str(out), *FNAPI]
    assert similarity_cli.run(argv) == 0
    # each year against that year's mean of the points' vectors (pixels chosen with data)
    reference = np.array([np.mean([values[t, r, c] for r, c in pixels], axis=0) for t in (0, 1)])
    want = np.einsum("tyxb,tb->tyx", values, reference)
    got = xr.open_zarr(out)["similarity"].values
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

    out = tmp_path / "change.zarr"
    argv = ["--embeddings", s.path, "--years", "2021,2022"]
    assert change_cli.run([*argv, "--output", str(out), *FNAPI]) == 0
    got = xr.open_zarr(out)["similarity"].values
    np.testing.assert_allclose(
        got.reshape(values.shape[1:3]), np.einsum("yxb,yxb->yx", values[0], values[1]), atol=1e-5
    )


def test_a_resumed_old_store_is_written_in_its_own_layout(tmp_path):
    """`--resume` of a store begun before issue 17: chunks written now (from this version's
    template, (time, band, y, x)) land band-last in the Zarr 2 array, values and markers right."""
    grid = Grid("EPSG:32631", 10.0, X0, Y0, 200, 150)
    template = store.embedding_template(grid, [2021], BANDS, "int8", 64, {"source": "test"})
    path = str(tmp_path / "old.zarr")
    write_v2(path, template)
    rng = np.random.default_rng(1)
    codes = rng.integers(-127, 128, size=(1, 150, 200, 64)).astype(np.int8)  # (time, y, x, band)
    codes[0, :64, :64] = quantize.NODATA_CODE  # a chunk of no data: no file, recorded as such

    def chunks():
        for y in range(0, 150, 64):
            for x in range(0, 200, 64):
                part = codes[:, y : y + 64, x : x + 64]
                data = np.moveaxis(part, -1, 1)  # as a source gives them: the template's order
                ds = xr.Dataset(
                    {"embedding": (("time", "band", "y", "x"), data)},
                    coords={
                        "time": np.array(["2021-01-01"], dtype="datetime64[ns]"),
                        "y": template["y"].values[y : y + 64],
                        "x": template["x"].values[x : x + 64],
                    },
                )
                yield xbeam.Key({"time": 0, "y": y, "x": x}), ds

    with beam.Pipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create(list(chunks())) | store.WriteChunks(path, template)
    assert zarr.open_group(path, mode="r").metadata.zarr_format == 2
    np.testing.assert_array_equal(raw_embedding(path), codes)
    marker = json.loads(open(f"{path}/.efm/done/0.64.64", "rb").read())
    assert list(marker["files"]) == ["embedding/0.1.1.0"] and marker["files"]["embedding/0.1.1.0"]
    empty = json.loads(open(f"{path}/.efm/done/0.0.0", "rb").read())
    assert empty["files"] == {"embedding/0.0.0.0": None}
