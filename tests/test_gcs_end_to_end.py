"""gs:// end to end, the way a Dataflow user runs it, with every byte going through the GCS emulator:

    Earth Engine emulator --extract--> gs://.../embeddings.zarr --sample (points on gs://)--> gs://.../samples.parquet
    --train--> gs://.../model.skops --classify--> gs://.../classes.zarr --export--> gs://.../classes.tif + .png

The class map is scored against the synthetic collection's own land cover (what the embeddings
were generated from), so the test checks the workflow computes the right thing, not only that
files appear. Its scene and map references (tests/helpers/ee_scene.py, map_references.py) are
shared with tests/test_templates.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from emulators.earthengine import EarthEngineEmulator
from emulators.earthengine.synthetic import (
    make_embedding_collection,
)
from pipelines import classify, export, extract, sample, train
from tests.helpers.ee_scene import CRS, SEED, area_bbox, labelled_points_csv, map_accuracy
from tests.helpers.map_references import (
    REF_ATOL,
    assert_map_equals,
    gcs_embeddings,
    reference_change,
    reference_prediction,
    reference_similarity,
)
from tests.helpers.runners import FNAPI
from transforms.products import export as export_lib

YEARS = (2021,)


@pytest.fixture(scope="module")
def images():
    return make_embedding_collection(years=YEARS, seed=SEED)


@pytest.fixture
def ee(images, ee_token):
    emu = EarthEngineEmulator()
    emu.add_images(images)
    with emu:
        yield emu


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
                "--tuning",
                "chunk_size=256",
                "--tuning",
                f"ee_api_url={ee.url}",
                "--tuning",
                "ee_project=test-project",
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
                "--tuning",
                "folds=3",
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


@pytest.fixture(scope="module")
def map_world(gcs, tmp_path_factory):
    """A two-year float32 embedding store (tests/helpers/store_factory.py) uploaded to a bucket, and on gs:// a
    CSV of points (UTM x/y) with a class name and a numeric `agbd` that depends on the class and the vector."""
    from tests.helpers.store_factory import make_store

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
                "--tuning",
                f"points_crs={CRS}",
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
                "--label-column",
                "agbd",
                "--regressor",
                "ridge",
                "--tuning",
                "target_units=Mg/ha",
                "--output",
                model,
                "--tuning",
                "folds=3",
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
                "--tuning",
                f"points_crs={CRS}",
                "--label",
                "kind=forest",
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
                "--years",
                "2021,2022",
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
