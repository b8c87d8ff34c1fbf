"""The Python API (efm/): the same answer on Dask as the commands on Beam, and as numpy / scikit-learn on the whole array.

* `efm.predict` on a LocalCluster of 2 worker processes equals `efm classify` / `efm predict` on Beam
  (FnApiRunner) pixel for pixel, and `model.predict` on the whole array (the independent reference);
* `efm.similarity` / `efm.change` equal a numpy pass over the whole array;
* `efm.open_embeddings` de-quantises an int8 store as the raw codes indexed through the 256-entry table;
* `efm.sample` / `efm.train` give the table and the metrics `efm sample` / `efm train` write and print;
* `efm.to_cog` round-trips (values, geotransform, CRS) through rasterio, also for a subset of the store;
* bad input (a model trained on other bands, ...) raises InputError before anything is computed or written.
"""

from __future__ import annotations

import json

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsClassifier

import efm
from pipelines import (
    classify as classify_cli,
)
from pipelines import (
    predict as predict_cli,
)
from pipelines import (
    sample as sample_cli,
)
from pipelines import (
    train as train_cli,
)
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store, pixel_centre, raw_embedding
from transforms.core.errors import InputError
from transforms.learning import models


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        dtype: make_store(str(root / f"{dtype}.zarr"), dtype=dtype) for dtype in ("float32", "int8")
    }


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each: the functions and models cross a process boundary by pickle."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def pixels(s, n, seed=0):
    rng = np.random.default_rng(seed)
    t, r, c = np.nonzero(s.valid)
    return t, r, c, rng.choice(len(t), n, replace=False)


@pytest.fixture(scope="module")
def saved(stores, tmp_path_factory):
    """A k-NN classifier and a ridge regressor fitted on pixels of the float32 store, saved as efm saves them."""
    s, root = stores["float32"], tmp_path_factory.mktemp("models")
    t, r, c, pick = pixels(s, 400)
    X = s.values[t[pick], r[pick], c[pick]]
    labels = s.labels[t[pick], r[pick], c[pick]]
    clf = KNeighborsClassifier(5).fit(X, labels)
    y = X @ np.random.default_rng(1).normal(size=64) * 10 + labels * 20.0
    reg = Ridge(alpha=0.1).fit(X, y)
    out = {}
    for name, est, sidecar in [
        ("knn", clf, {"kind": "classifier", "classes": clf.classes_}),
        ("ridge", reg, {"kind": "regressor", "target": "agbd", "units": "Mg/ha"}),
    ]:
        path = str(root / f"{name}.skops")
        models.save_model(est, path, {**sidecar, "bands": list(BANDS)})
        out[name] = (est, path)
    return out


def same_attrs(got, stored) -> bool:
    """The stored variable's attrs, but those Zarr / rioxarray keep as encoding."""
    return got.attrs == {
        k: v for k, v in stored.attrs.items() if k not in ("_FillValue", "grid_mapping")
    }


def whole_array(model, values, fill, dtype):
    """model.predict on every pixel with data at once (the reference); `fill` where there is none."""
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    out = np.full(flat.shape[0], fill, dtype=np.float64)
    out[valid] = model.predict(flat[valid])
    return out.reshape(values.shape[:-1]).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_predict_on_a_local_cluster_equals_classify_on_beam_and_model_predict(
    stores, saved, client, tmp_path, dtype, capsys
):
    s = stores[dtype]
    est, path = saved["knn"]
    assert (
        classify_cli.run(
            [
                "--embeddings",
                s.path,
                "--model",
                path,
                "--output",
                str(tmp_path / "beam.zarr"),
                *FNAPI,
            ]
        )
        == 0
    )
    capsys.readouterr()
    beam = xr.open_zarr(tmp_path / "beam.zarr", mask_and_scale=False)["class"]
    lazy = efm.predict(efm.open_embeddings(s.path), est)
    assert isinstance(lazy.data, dask.array.Array) and lazy.data.chunksize == (
        1,
        s.chunk_size,
        s.chunk_size,
    )
    got = lazy.compute()  # the active scheduler: the fixture's client
    np.testing.assert_array_equal(got.values, beam.values)
    np.testing.assert_array_equal(got.values, whole_array(est, s.values, 255, np.uint8))
    assert got.dtype == beam.dtype == np.uint8 and same_attrs(got, beam)
    np.testing.assert_array_equal(got["time"].values, beam["time"].values)
    assert got.rio.crs == beam.rio.crs and got.rio.transform() == beam.rio.transform()
    # a model file, loaded as `efm classify --model` loads it, gives the same
    np.testing.assert_array_equal(efm.predict(s.path, path, years=[2022]).values, beam.values[1:])


def test_regressor_on_a_local_cluster_equals_predict_on_beam_and_model_predict(
    stores, saved, client, tmp_path, capsys
):
    s = stores["int8"]
    est, path = saved["ridge"]
    assert (
        predict_cli.run(
            [
                "--embeddings",
                s.path,
                "--model",
                path,
                "--output",
                str(tmp_path / "beam.zarr"),
                *FNAPI,
            ]
        )
        == 0
    )
    capsys.readouterr()
    beam = xr.open_zarr(tmp_path / "beam.zarr", mask_and_scale=False)["prediction"]
    got = efm.predict(efm.open_embeddings(s.path), path).compute()
    # The same function on the same chunks; a linear model's BLAS sums may differ in the last float32 bit with the
    # number of BLAS threads (Beam gives each local worker the cores, Dask 1 thread per chunk): a few ulps at most.
    np.testing.assert_array_equal(np.isnan(got.values), np.isnan(beam.values))
    np.testing.assert_allclose(got.values, beam.values, rtol=4e-7 * 8, atol=0)
    np.testing.assert_allclose(
        got.values, whole_array(est, s.values, np.nan, np.float32), rtol=1e-6, atol=1e-4
    )
    assert got.dtype == np.float32 and got.attrs["units"] == "Mg/ha" and same_attrs(got, beam)


def test_confidence_and_the_threaded_scheduler(stores, saved):
    s = stores["float32"]
    est, _ = saved["knn"]
    with dask.config.set(scheduler="threads"):
        out = efm.predict(s.path, est, confidence=True).compute()
    flat = s.values.reshape(-1, 64)
    valid = ~np.isnan(flat).any(axis=1)
    conf = np.full(flat.shape[0], np.nan, np.float32)
    conf[valid] = est.predict_proba(flat[valid]).max(axis=1)
    np.testing.assert_array_equal(out["confidence"].values, conf.reshape(s.labels.shape))
    np.testing.assert_array_equal(out["class"].values, whole_array(est, s.values, 255, np.uint8))


def test_change_and_similarity_equal_numpy_on_the_whole_array(stores, client):
    s = stores["int8"]
    ds = efm.open_embeddings(s.path)
    v = s.values.astype(np.float64)
    out = efm.change(ds, 2021, 2022, threshold=0.8).compute()
    want = np.einsum("ijk,ijk->ij", v[0], v[1])
    np.testing.assert_array_equal(np.isnan(out["similarity"].values), np.isnan(want))
    np.testing.assert_allclose(out["similarity"].values, want, atol=1e-5)
    clear = np.isfinite(want) & (np.abs(want - 0.8) > 1e-4)
    np.testing.assert_array_equal(
        out["changed"].values[clear], (want[clear] < 0.8).astype(np.uint8)
    )
    assert np.all(out["changed"].values[np.isnan(want)] == 255) and out["similarity"].dims == (
        "y",
        "x",
    )
    # similarity to the mean vector at reference points (a DataFrame of x/y in the store's CRS)
    rows, cols = np.array([5, 40, 200, 290]), np.array([7, 100, 30, 250])
    xy = [pixel_centre(s, r, c) for r, c in zip(rows, cols)]
    points = pd.DataFrame(
        {"x": [p[0] for p in xy], "y": [p[1] for p in xy], "cls": ["a", "a", "a", "b"]}
    )
    sim = efm.similarity(ds, points, label_column="cls", label="a", points_crs=s.grid.crs).compute()
    for t in range(2):
        ref = v[t, rows[:3], cols[:3]]
        with_data = ~np.isnan(ref).any(axis=1)
        np.testing.assert_allclose(
            sim.values[t], np.einsum("ijk,k->ij", v[t], ref[with_data].mean(axis=0)), atol=1e-5
        )
        assert with_data.sum() > 0


def test_int8_dequantisation_is_the_256_entry_table_on_the_raw_codes(stores):
    s = stores["int8"]
    raw = raw_embedding(s.path)
    assert raw.dtype == np.int8
    codes = np.arange(-128, 128, dtype=np.float64)
    table = (np.square(codes / 127.5) * np.sign(codes)).astype(
        np.float32
    )  # the mirror's formula, in float64
    table[0] = np.nan  # code -128: no data
    ds = efm.open_embeddings(s.path)
    assert ds["embedding"].dtype == np.float32 and isinstance(
        ds["embedding"].data, dask.array.Array
    )
    np.testing.assert_array_equal(ds["embedding"].values, table[raw.astype(np.int16) + 128])
    assert "int8" not in str(
        ds["embedding"].encoding.get("dtype", "")
    )  # writing the Dataset back keeps floats


def test_sample_and_train_equal_the_commands(stores, tmp_path, client, capsys):
    s = stores["int8"]
    t, r, c, pick = pixels(s, 120, seed=3)
    xy = [pixel_centre(s, r[i], c[i]) for i in pick]
    names = np.array(["water", "forest", "crop", "urban"])
    points = pd.DataFrame(
        {
            "x": [p[0] for p in xy],
            "y": [p[1] for p in xy],
            "cls": names[s.labels[t[pick], r[pick], c[pick]]],
            "height": np.arange(len(pick), dtype=np.float64),
        }
    )
    points.to_csv(tmp_path / "points.csv", index=False)
    table_path = tmp_path / "samples.parquet"
    assert (
        sample_cli.run(
            [
                "--embeddings",
                s.path,
                "--points",
                str(tmp_path / "points.csv"),
                "--tuning",
                f"points_crs={s.grid.crs}",
                "--label-column",
                "cls",
                "--output",
                str(table_path),
                *FNAPI,
            ]
        )
        == 0
    )
    want = pd.read_parquet(table_path)
    got = efm.sample(
        efm.open_embeddings(s.path),
        str(tmp_path / "points.csv"),
        label_column="cls",
        points_crs=s.grid.crs,
    )
    pd.testing.assert_frame_equal(got, want)
    from_frame = efm.sample(s.path, points, label_column="cls", points_crs=s.grid.crs)
    pd.testing.assert_frame_equal(from_frame, want)
    assert got.attrs["efm"]["bands"] == list(BANDS) and got.attrs["efm"]["store_dtype"] == "int8"
    capsys.readouterr()
    assert (
        train_cli.run(
            [
                "--samples",
                str(table_path),
                "--classifier",
                "knn",
                "--param",
                "n_neighbors=3",
                "--output",
                str(tmp_path / "m.skops"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    model, report = efm.train(got, classifier="knn", params={"n_neighbors": 3})
    assert str(report) in printed and report.kind == "classifier"
    sidecar = json.loads((tmp_path / "m.skops.json").read_text())
    assert report.metrics == sidecar["metrics"] and report.sidecar["bands"] == sidecar["bands"]
    cli_model = models.load_model(str(tmp_path / "m.skops")).model
    X = got[list(BANDS)].to_numpy(np.float32)
    np.testing.assert_array_equal(model.predict(X), cli_model.predict(X))
    # a regressor on a kept column, as `efm train --regressor ... --label-column`
    reg, rep = efm.train(got, regressor="ridge", target_column="height", target_units="m")
    assert rep.kind == "regressor" and "R²" in str(rep)
    assert efm.predict(s.path, reg).attrs["target"] == "height"
    # and saved for `efm classify`: a file the command loads
    efm.save_model(model, tmp_path / "api.skops", report)
    assert (
        classify_cli.run(
            [
                "--embeddings",
                s.path,
                "--model",
                str(tmp_path / "api.skops"),
                "--output",
                str(tmp_path / "c.zarr"),
                *FNAPI,
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        xr.open_zarr(tmp_path / "c.zarr", mask_and_scale=False)["class"].values,
        efm.predict(s.path, model).values,
    )


def test_to_cog_round_trips_values_and_geotransform(stores, saved, tmp_path):
    import rasterio

    s = stores["float32"]
    ds = efm.open_embeddings(s.path)
    est, _ = saved["knn"]
    classes = efm.predict(ds, est)
    path = efm.to_cog(classes, str(tmp_path / "classes.tif"), year=2022)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), classes.values[1])
        assert src.transform == ds.rio.transform() and src.crs == ds.rio.crs and src.nodata == 255
        assert src.tags(1)["CLASS_2"] == "2" and src.colormap(1)[0][3] == 255
    # a subset of the store (a notebook's zoom): its own grid; a float map: NaN -> -9999
    sub = ds.isel(y=slice(30, 250), x=slice(50, 200))
    pred = efm.predict(sub, saved["ridge"][0], years=[2021])
    path = efm.to_cog(pred, str(tmp_path / "pred.tif"))
    with rasterio.open(path) as src:
        read = src.read(1)
        want = pred.values[0]
        np.testing.assert_array_equal(read, np.where(np.isnan(want), np.float32(-9999), want))
        assert (
            src.transform == ds.rio.transform() @ src.transform.translation(50, 30)
            and src.nodata == -9999
        )
    # the same pixels as on the whole store, up to BLAS rounding (the subset's chunks hold other
    # rows): its error scales with the summed terms (~50), not with the result, so a value near 0
    # needs an absolute bound too (a fresh machine: 1.9e-6 at -0.447)
    np.testing.assert_allclose(
        want,
        efm.predict(ds, saved["ridge"][0], years=[2021]).values[0, 30:250, 50:200],
        rtol=4e-7 * 8,
        atol=8 * float(np.spacing(np.float32(64))),
    )
    # an existing file efm did not write is never replaced
    (tmp_path / "mine.tif").write_bytes(b"not efm's")
    with pytest.raises(InputError, match="path: "):
        efm.to_cog(pred, str(tmp_path / "mine.tif"), overwrite=True)
    assert (tmp_path / "mine.tif").read_bytes() == b"not efm's"


def test_a_model_trained_on_other_bands_is_refused_before_anything_runs(stores, tmp_path):
    s = stores["float32"]
    t, r, c, pick = pixels(s, 50)
    X = s.values[t[pick], r[pick], c[pick]]
    labels = s.labels[t[pick], r[pick], c[pick]]
    half = KNeighborsClassifier(3).fit(X[:, :32], labels)
    models.embed_fields(
        half, {"kind": "classifier", "classes": half.classes_, "bands": list(BANDS[:32])}
    )
    with pytest.raises(InputError) as err:
        efm.predict(s.path, half)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    assert str(err.value).startswith("model: the model was trained on 32 bands [A00, A01, …, A31]")
    plain = KNeighborsClassifier(3).fit(
        X[:, :10], labels
    )  # no band names: only the count is checked
    with pytest.raises(InputError, match="expects 10 features"):
        efm.predict(s.path, plain)
    with pytest.raises(InputError, match="^years: .* has no year 2019"):
        efm.predict(s.path, KNeighborsClassifier(3).fit(X, labels), years=[2019])
    with pytest.raises(InputError, match="^threshold: "):
        efm.change(s.path, 2021, 2022, threshold=2)
    with pytest.raises(InputError, match="^path: cannot open"):
        efm.open_embeddings(tmp_path / "nothing.zarr")
    assert not list(tmp_path.iterdir())


def test_a_store_and_a_geotiff_in_a_bucket(stores, saved, gcs, gcs_bucket, tmp_path):
    """gs:// through the GCS emulator and real gcsfs: open the store, predict, write the COG to the bucket."""
    import rasterio

    s = stores["int8"]
    gcs.fs.put(s.path, f"{gcs_bucket[5:]}/emb.zarr", recursive=True)
    est, _ = saved["knn"]
    with dask.config.set(
        scheduler="threads"
    ):  # the module's LocalCluster workers were started without the emulator's address
        ds = efm.open_embeddings(f"{gcs_bucket}/emb.zarr")
        assert ds.rio.crs == efm.open_embeddings(s.path).rio.crs
        classes = efm.predict(ds, est, years=[2021])
        got = classes.values[
            0
        ]  # computed here: outside this block the module's LocalCluster is the scheduler
        np.testing.assert_array_equal(got, whole_array(est, s.values[0], 255, np.uint8))
        efm.to_cog(classes, f"{gcs_bucket}/maps/classes.tif")
    gcs.fs.get(f"{gcs_bucket[5:]}/maps/classes.tif", str(tmp_path / "classes.tif"))
    with rasterio.open(tmp_path / "classes.tif") as src:
        np.testing.assert_array_equal(src.read(1), got)
