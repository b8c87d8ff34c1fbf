"""gs:// end to end, the way a Dataflow user runs it, with every byte going through the GCS emulator:

    Earth Engine emulator --extract--> gs://.../embeddings.zarr --sample (points on gs://)--> gs://.../samples.parquet
    --train--> gs://.../model.skops --classify--> gs://.../classes.zarr --export--> gs://.../classes.tif + .png

The class map is scored against the synthetic collection's own land cover (what the embeddings
were generated from), so the test checks the workflow computes the right thing, not only that
files appear. The helpers here are shared with tests/test_templates.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import xarray as xr

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import (
    TileSpec,
    default_tiles,
    land_cover,
    make_embedding_collection,
)
from pipelines import classify, export, extract, sample, train
from transforms.products import export as export_lib

YEARS = (2021,)
SEED = 5
CRS = "EPSG:32631"
FNAPI = ["--runner=FnApiRunner"]


@pytest.fixture(scope="module")
def images():
    return make_embedding_collection(years=YEARS, seed=SEED)


@pytest.fixture
def ee(images, ee_token):
    emu = EarthEngineEmulator()
    emu.add_images(images)
    with emu:
        yield emu


def area_bbox(margin_m: float = 300.0) -> str:
    """W,S,E,N in degrees, well inside the two side-by-side 31N tiles of the synthetic collection."""
    tiles = [t for t in default_tiles() if t.crs == CRS]
    left, top = min(t.x0 for t in tiles) + margin_m, max(t.y0 for t in tiles) - margin_m
    right = max(t.x0 + t.width * t.scale for t in tiles) - margin_m
    bottom = min(t.y0 - t.height * t.scale for t in tiles) + margin_m
    to_lonlat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    (w, s), (e, n) = to_lonlat.transform(left, bottom), to_lonlat.transform(right, top)
    dx, dy = (e - w) * 0.05, (n - s) * 0.05  # the box is curved in UTM: stay inside the tiles
    return f"{w + dx:.6f},{s + dy:.6f},{e - dx:.6f},{n - dy:.6f}"


def truth_on_grid(ds: xr.Dataset) -> np.ndarray:
    """The synthetic land-cover class of every pixel of a store's grid (a 250 m checkerboard in UTM)."""
    x, y = ds["x"].values, ds["y"].values
    scale = float(x[1] - x[0])
    grid = TileSpec(
        "grid", CRS, "31N", float(x[0] - scale / 2), float(y[0] + scale / 2), len(x), len(y), scale
    )
    return land_cover(grid, SEED)


def labelled_points_csv(n: int = 400, seed: int = 1) -> bytes:
    """Points at random pixel centres inside the area, labelled with their land-cover class, as lon/lat CSV."""
    w, s, e, n_ = map(float, area_bbox(margin_m=600.0).split(","))
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    (left, bottom), (right, top) = to_utm.transform(w, s), to_utm.transform(e, n_)
    rng = np.random.default_rng(seed)
    xs = np.floor(rng.uniform(left, right, n) / 10) * 10 + 5
    ys = np.floor(rng.uniform(bottom, top, n) / 10) * 10 + 5
    labels = [
        f"class_{land_cover(TileSpec('p', CRS, '31N', x - 5, y + 5, 1, 1), SEED)[0, 0]}"
        for x, y in zip(xs, ys)
    ]
    lon, lat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(xs, ys)
    return pd.DataFrame({"lon": lon, "lat": lat, "label": labels}).to_csv(index=False).encode()


def map_accuracy(classes_path: str) -> tuple[float, int]:
    """Share of classified pixels whose class is the land cover the embeddings were made from."""
    ds = xr.open_zarr(classes_path, consolidated=True, mask_and_scale=False)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    predicted = np.asarray(ds["class"].isel(time=0).values)
    valid = predicted != fill
    names = np.array(labels + ["?"] * (256 - len(labels)))
    truth = np.char.add("class_", truth_on_grid(ds).astype(str))
    return float((names[predicted][valid] == truth[valid]).mean()), int(valid.sum())


def test_extract_sample_train_classify_export_all_on_gcs(ee, gcs, gcs_bucket, tmp_path, capsys):
    root = f"{gcs_bucket}/geneva"
    embeddings, points, samples = (
        f"{root}/embeddings.zarr",
        f"{root}/labels/points.csv",
        f"{root}/samples.parquet",
    )
    model, classes, cog = (
        f"{root}/models/landcover.skops",
        f"{root}/maps/classes.zarr",
        f"{root}/maps/classes.tif",
    )
    with gcs.fs.open(points.removeprefix("gs://"), "wb") as f:
        f.write(labelled_points_csv())

    assert (
        extract.run(
            [
                "--bbox",
                area_bbox(),
                "--years",
                "2021",
                "--crs",
                CRS,
                "--output",
                embeddings,
                "--chunk-size",
                "256",
                "--tuning",
                f"ee_api_url={ee.url}",
                "--ee-project",
                "test-project",
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        sample.run(
            [
                "--embeddings",
                embeddings,
                "--points",
                points,
                "--label-column",
                "label",
                "--output",
                samples,
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        train.run(
            [
                "--samples",
                samples,
                "--classifier",
                "logistic-regression",
                "--output",
                model,
                "--folds",
                "3",
            ]
        )
        == 0
    )
    assert (
        classify.run(
            [
                "--embeddings",
                embeddings,
                "--model",
                model,
                "--output",
                classes,
                "--confidence",
                *FNAPI,
            ]
        )
        == 0
    )
    assert export.run(["--input", classes, "--output", cog, "--png"]) == 0
    capsys.readouterr()

    listing = set(gcs.fs.find(root.removeprefix("gs://")))
    for path in (samples, model, model + ".json", cog, cog.replace(".tif", ".png")):
        assert path.removeprefix("gs://") in listing, path
    assert ee.count("computePixels") > 0
    store = xr.open_zarr(embeddings, consolidated=True).transpose("time", "y", "x", "band")
    assert store.attrs["efm_status"] == "complete" and store.sizes["band"] == 64
    table = pd.read_parquet(
        io.BytesIO(gcs.fs.cat(samples.removeprefix("gs://")))
    )  # not pyarrow's own GCS client
    assert len(table) > 300 and table["label"].nunique() == 6

    # Chance is 1/6; logistic regression on 400 points of these noisy 64-d vectors reaches ~85% (a one-pixel
    # misalignment of the map would cost ~5 points: the 250 m cells are 25 px wide).
    accuracy, pixels = map_accuracy(classes)
    assert (
        pixels > 0.9 * store.sizes["x"] * store.sizes["y"]
    )  # only the emulator's no-data holes are left unclassified
    assert accuracy > 0.8, (
        f"class map agrees with the land cover on only {accuracy:.1%} of {pixels} pixels"
    )
    with xr.open_zarr(classes, consolidated=True) as ds:
        assert ds.attrs["efm_status"] == "complete" and "confidence" in ds
        assert ds.rio.crs.to_epsg() == 32631

    local_cog = str(tmp_path / "classes.tif")
    gcs.fs.get_file(cog.removeprefix("gs://"), local_cog)
    assert export_lib.validate_cog(local_cog) == []
    with rasterio.open(local_cog) as tif:
        assert tif.crs.to_epsg() == 32631 and (tif.width, tif.height) == (
            store.sizes["x"],
            store.sizes["y"],
        )
        band = tif.read(1)
    with xr.open_zarr(classes, consolidated=True, mask_and_scale=False) as ds:
        np.testing.assert_array_equal(band, ds["class"].isel(time=0).values)
    sidecar = json.load(io.BytesIO(gcs.fs.cat(model.removeprefix("gs://") + ".json")))
    assert sidecar["kind"] == "classifier" and len(sidecar["classes"]) == 6


# ---------------------------------------------------------------------------------------------
# The map products on gs:// (predict with a regressor, similarity, change): input store, points,
# sample table, model and output stores all in the emulated bucket; each map compared on the whole
# array to numpy / scikit-learn on the input store read straight from gs:// with xarray.

MAP_YEARS = (2021, 2022)
REF_ATOL = 1e-5  # float32 dot products of 64-band unit vectors against float64


@pytest.fixture(scope="module")
def map_world(gcs, tmp_path_factory):
    """A two-year float32 embedding store (tests/store_factory.py) uploaded to a bucket, and on gs:// a
    CSV of points (UTM x/y) with a class name and a numeric `agbd` that depends on the class and the vector."""
    from store_factory import make_store

    local = make_store(str(tmp_path_factory.mktemp("maps") / "emb.zarr"), years=MAP_YEARS, seed=11)
    bucket = f"gs://{gcs.make_bucket()}"
    embeddings = f"{bucket}/stores/emb.zarr"
    gcs.fs.put(local.path, embeddings.removeprefix("gs://"), recursive=True)
    rng = np.random.default_rng(4)
    t, r, c = np.nonzero(local.valid[:1])  # points on pixels with data in the first year
    pick = rng.choice(len(r), 300, replace=False)
    rows, cols = r[pick], c[pick]
    x, y = (
        local.grid.x0 + (cols + 0.5) * local.grid.scale,
        local.grid.y0 - (rows + 0.5) * local.grid.scale,
    )
    weights = rng.normal(size=local.values.shape[-1])
    agbd = (
        local.values[0, rows, cols] @ weights * 10
        + local.labels[0, rows, cols] * 25
        + 100
        + rng.normal(size=len(rows))
    )
    kind = np.where(local.labels[0, rows, cols] == 1, "forest", "other")
    points = f"{bucket}/points/gedi.csv"
    with gcs.fs.open(points.removeprefix("gs://"), "wb") as f:
        f.write(
            pd.DataFrame({"x": x, "y": y, "agbd": agbd, "kind": kind}).to_csv(index=False).encode()
        )
    return {
        "bucket": bucket,
        "embeddings": embeddings,
        "points": points,
        "local": local,
        "rows": rows,
        "cols": cols,
        "kind": kind,
    }


def gcs_embeddings(path: str) -> np.ndarray:
    """(time, y, x, band) float64 of an embedding store on gs://, read whole with xarray (not efm's reader)."""
    with xr.open_zarr(path, consolidated=True) as ds:
        return ds["embedding"].transpose("time", "y", "x", "band").values.astype(np.float64)


def reference_prediction(model, values: np.ndarray) -> np.ndarray:
    """model.predict on every pixel with data at once (float64 in, float32 out); NaN where there is no data."""
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    out = np.full(flat.shape[0], np.nan)
    out[valid] = model.predict(flat[valid])
    return out.reshape(values.shape[:-1]).astype(np.float32)


def reference_similarity(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per year: the plain mean of the embeddings at the points' pixels (no-data pixels skipped), dotted with every pixel."""
    out = np.full(values.shape[:-1], np.nan)
    for t in range(values.shape[0]):
        at_points = values[t, rows, cols]
        reference = at_points[~np.isnan(at_points).any(axis=1)].mean(axis=0)
        nodata = np.isnan(values[t]).any(axis=-1)
        out[t] = np.einsum("yxb,b->yx", np.nan_to_num(values[t]), reference)
        out[t][nodata] = np.nan
    return out


def reference_change(values: np.ndarray, t0: int, t1: int) -> np.ndarray:
    a, b = values[t0], values[t1]
    out = np.einsum("yxb,yxb->yx", np.nan_to_num(a), np.nan_to_num(b))
    out[np.isnan(a).any(axis=-1) | np.isnan(b).any(axis=-1)] = np.nan
    return out


def assert_map_equals(path: str, variable: str, expected: np.ndarray, **tolerance) -> xr.Dataset:
    ds = xr.open_zarr(path, consolidated=True, mask_and_scale=False)
    got = ds[variable].values
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, **tolerance)
    assert ds.attrs["efm_status"] == "complete"
    return ds


def test_sample_train_regressor_predict_all_on_gcs(map_world, gcs, capsys):
    from pipelines import predict
    from transforms.learning import models

    w, bucket = map_world, map_world["bucket"]
    samples, model, output = (
        f"{bucket}/samples/gedi.parquet",
        f"{bucket}/models/agbd.skops",
        f"{bucket}/maps/agbd.zarr",
    )
    assert (
        sample.run(
            [
                "--embeddings",
                w["embeddings"],
                "--points",
                w["points"],
                "--points-crs",
                CRS,
                "--keep-columns",
                "agbd",
                "--output",
                samples,
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        train.run(
            [
                "--samples",
                samples,
                "--target-column",
                "agbd",
                "--regressor",
                "ridge",
                "--target-units",
                "Mg/ha",
                "--output",
                model,
                "--folds",
                "3",
            ]
        )
        == 0
    )
    assert (
        predict.run(["--embeddings", w["embeddings"], "--model", model, "--output", output, *FNAPI])
        == 0
    )
    assert "efm predict: " in capsys.readouterr().out
    table = pd.read_parquet(io.BytesIO(gcs.fs.cat(samples.removeprefix("gs://"))))
    assert "agbd" in table and len(table) == int(
        w["local"].valid[:, w["rows"], w["cols"]].sum()
    )  # each (point, year) with data
    estimator = models.load_model(model).model  # the model file as train wrote it on gs://
    # float32 out of a float64 predict: within float32 rounding of values around 100-200
    ds = assert_map_equals(
        output,
        "prediction",
        reference_prediction(estimator, gcs_embeddings(w["embeddings"])),
        rtol=1e-6,
        atol=1e-4,
    )
    assert ds["prediction"].attrs["target"] == "agbd" and ds["prediction"].attrs["units"] == "Mg/ha"
    assert ds.attrs["efm_product"] == "prediction" and ds.rio.crs.to_epsg() == 32631


def test_similarity_all_on_gcs(map_world, capsys):
    from pipelines import similarity

    w = map_world
    output = f"{w['bucket']}/maps/similarity.zarr"
    assert (
        similarity.run(
            [
                "--embeddings",
                w["embeddings"],
                "--points",
                w["points"],
                "--points-crs",
                CRS,
                "--label-column",
                "kind",
                "--label",
                "forest",
                "--output",
                output,
                *FNAPI,
            ]
        )
        == 0
    )
    assert "efm similarity: " in capsys.readouterr().out
    forest = w["kind"] == "forest"
    expected = reference_similarity(
        gcs_embeddings(w["embeddings"]), w["rows"][forest], w["cols"][forest]
    )
    ds = assert_map_equals(output, "similarity", expected, rtol=0, atol=REF_ATOL)
    assert ds["similarity"].dims == ("time", "y", "x") and ds.attrs["efm_product"] == "similarity"


def test_change_all_on_gcs(map_world, capsys):
    from pipelines import change

    w = map_world
    output = f"{w['bucket']}/maps/change.zarr"
    assert (
        change.run(
            [
                "--embeddings",
                w["embeddings"],
                "--from-year",
                "2021",
                "--to-year",
                "2022",
                "--output",
                output,
                "--threshold",
                "0.5",
                *FNAPI,
            ]
        )
        == 0
    )
    assert "efm change: " in capsys.readouterr().out
    expected = reference_change(gcs_embeddings(w["embeddings"]), 0, 1)
    ds = assert_map_equals(output, "similarity", expected, rtol=0, atol=REF_ATOL)
    assert ds["similarity"].dims == ("y", "x") and ds.attrs["efm_product"] == "change"
    changed = ds["changed"].values
    want = np.where(np.isnan(expected), 255, ds["similarity"].values < 0.5).astype(
        np.uint8
    )  # from the stored map: no flips at the threshold
    np.testing.assert_array_equal(changed, want)
    assert (
        0 < (changed == 1).sum() == (changed != 255).sum()
    )  # store_factory's class pattern moves one class a year: every pixel with data changed
