"""`efm demo --tuning small=true` end to end, offline: every real step, and an accuracy a broken step would miss."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import rasterio
import xarray as xr
from sklearn import metrics

from pipelines import cli, demo
from sample_data import scores
from sample_data import truth as sample_truth
from sample_data import world as sample_world

THRESHOLD = (
    0.78  # --small scores ~0.85; a map flipped, shifted or with classes mixed up scores < 0.5
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import contextlib
    import io

    output = str(tmp_path_factory.mktemp("demo") / "out")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = cli.main(["demo", "--output", output, "--tuning", "small=true"])
    return rc, buffer.getvalue(), output


def test_demo_runs_and_prints_accuracy_times_and_paths(demo_run):
    rc, out, output = demo_run
    assert rc == 0, out
    accuracies = {
        int(y): float(a) / 100
        for y, a in re.findall(r"accuracy (\d{4}) \(held out\)\s+([\d.]+)%", out)
    }
    assert set(accuracies) == {2022, 2023}
    assert all(a > THRESHOLD for a in accuracies.values()), accuracies
    for name in (
        "make-sample-data",
        "extract",
        "sample",
        "train",
        "classify",
        "export",
        r"sample \(agbd\)",
        r"train \(regressor\)",
        "predict",
        "similarity",
        "change",
        r"export \(maps\)",
        "score",
        "total",
    ):
        assert re.search(rf"time: {name}\s+[\d.]+ s", out), name
    wrote = re.findall(r"wrote\s+(\S+)", out)
    for path in wrote:
        assert os.path.exists(path), path
    names = {os.path.basename(p) for p in wrote}
    assert {
        "embeddings.zarr",
        "samples.parquet",
        "model.skops",
        "classes.zarr",
        "land_cover_2022.tif",
        "land_cover_2022.png",
        "land_cover_2023.tif",
        "comparison.png",
        "gedi_samples.parquet",
        "biomass_model.skops",
        "biomass.zarr",
        "similarity.zarr",
        "change.zarr",
        "biomass_2022.tif",
        "biomass_2022.png",
        "similarity_2023.tif",
        "similarity_2023.png",
        "change.tif",
        "change.png",
    } <= names


def test_demo_prints_regression_similarity_and_change_figures(demo_run):
    rc, out, _ = demo_run
    assert rc == 0, out
    r2 = float(
        re.search(r"biomass R² 2022 \(held out\)\s+(-?[\d.]+) \(RMSE [\d.]+ Mg/ha\)", out)[1]
    )
    assert r2 > 0.5, (
        out
    )  # --small scores ~0.83; predictions shifted or unrelated to the field score < 0
    reference, others = (
        float(v)
        for v in re.search(
            r"similarity 2022\s+(-?[\d.]+) on forest pixels vs (-?[\d.]+) on the others", out
        ).groups()
    )
    assert reference > others + 0.05, out
    recall, precision = (
        float(v) / 100
        for v in re.search(
            r"change 2022->2023\s+recall ([\d.]+)% of [\d,]+ truly changed pixels, precision ([\d.]+)%",
            out,
        ).groups()
    )
    assert recall > 0.5 and precision > 0.5, out


def test_the_field_figures_catch_a_broken_step(demo_run):
    """Scored the same way, a shifted or flipped biomass map, or a change mask off the change, score low."""
    rc, _, output = demo_run
    assert rc == 0
    from sample_data import fields as sample_fields

    prediction = xr.open_zarr(
        os.path.join(output, "biomass.zarr"), consolidated=True, mask_and_scale=False
    )
    assert (
        prediction["prediction"].dtype == np.float32
        and prediction["prediction"].attrs.get("units") == "Mg/ha"
    )
    crs, transform, shape = scores.grid_of(prediction)
    field = sample_fields.read_on_grid(
        os.path.join(output, "sample-data", "biomass.tif"), crs, transform, shape, np.nan
    )
    predicted = prediction["prediction"].isel(time=0).values

    def r2(p):  # scikit-learn's R², over the pixels with a value on both sides
        both = np.isfinite(p) & np.isfinite(field)
        return metrics.r2_score(field[both], p[both])

    assert r2(predicted) > 0.5
    assert r2(predicted[::-1]) < 0.2
    assert r2(np.roll(predicted, 40, axis=1)) < 0.2
    change = xr.open_zarr(
        os.path.join(output, "change.zarr"), consolidated=True, mask_and_scale=False
    )
    truth = sample_fields.read_on_grid(
        os.path.join(output, "sample-data", "change_truth.tif"), crs, transform, shape, 255
    )
    changed = change["changed"].values

    def recall(c):  # scikit-learn's recall of "changed" (1), where both maps have a value
        both = (c != 255) & (truth != 255)
        return metrics.recall_score(truth[both] == 1, c[both] == 1)

    assert recall(changed) > 0.5
    assert recall(changed[::-1]) < 0.3


def test_demo_outputs_are_consistent(demo_run):
    rc, _, output = demo_run
    assert rc == 0
    embeddings = xr.open_zarr(
        os.path.join(output, "embeddings.zarr"),
        consolidated=True,
        mask_and_scale=False,
    )
    assert embeddings["embedding"].dtype == np.int8 and embeddings.attrs["source"].startswith(
        "cog:"
    )
    assert (
        embeddings.attrs["efm_status"] == "complete" and embeddings.attrs["resampling"] == "nearest"
    )
    classes = xr.open_zarr(
        os.path.join(output, "classes.zarr"), consolidated=True, mask_and_scale=False
    )
    with rasterio.open(os.path.join(output, "land_cover_2022.tif")) as ds:
        assert ds.crs.to_epsg() == 32610 and (ds.height, ds.width) == (
            classes.sizes["y"],
            classes.sizes["x"],
        )
        np.testing.assert_array_equal(ds.read(1), classes["class"].isel(time=0).values)
    with rasterio.open(os.path.join(output, "land_cover_2022.png")) as png:
        assert png.width > 200
    # the exported float maps are the stores' values, nodata where the store has NaN
    for name, store, variable in (
        ("biomass_2022", "biomass.zarr", "prediction"),
        ("similarity_2023", "similarity.zarr", "similarity"),
        ("change", "change.zarr", "similarity"),
    ):
        values = xr.open_zarr(os.path.join(output, store), consolidated=True)[variable]
        values = (
            values.isel(time=-1 if name.endswith("2023") else 0)
            if "time" in values.dims
            else values
        )
        with rasterio.open(os.path.join(output, f"{name}.tif")) as ds:
            band = ds.read(1)
            np.testing.assert_array_equal(band == ds.nodata, np.isnan(values.values))
            np.testing.assert_array_equal(
                band[band != ds.nodata], values.values[~np.isnan(values.values)]
            )
    labels = [str(v) for v in classes["class"].attrs["class_labels"]]
    assert set(labels) == set(sample_world.CLASS_NAMES)


def test_the_threshold_catches_a_broken_step(demo_run):
    """Scored the same way, maps a broken step would make fall far below the threshold."""
    rc, _, output = demo_run
    assert rc == 0
    data_dir = os.path.join(output, "sample-data")
    classes = xr.open_zarr(
        os.path.join(output, "classes.zarr"), consolidated=True, mask_and_scale=False
    )
    labels = [str(v) for v in classes["class"].attrs["class_labels"]]
    predicted = classes["class"].isel(time=0).values
    x, y = classes["x"].values, classes["y"].values
    import affine

    transform = affine.Affine(10.0, 0.0, float(x[0]) - 5, 0.0, -10.0, float(y[0]) + 5)
    truth, names = sample_truth.truth_on_grid(
        os.path.join(data_dir, "ground_truth.tif"), classes.attrs["crs"], transform, predicted.shape
    )

    def accuracy(p, label_list=labels):
        """scikit-learn's accuracy, class names against class names, where both maps have a class."""
        both = (p != 255) & (truth != 255)
        return metrics.accuracy_score(
            np.asarray(names)[truth[both]], np.asarray(label_list)[p[both]]
        )

    assert accuracy(predicted) > THRESHOLD
    assert accuracy(predicted[::-1]) < 0.5  # rows upside down (a bottom-up COG read naively)
    assert accuracy(np.roll(predicted, 40, axis=1)) < 0.5  # 400 m off (a wrong transform)
    assert accuracy(predicted, labels[1:] + labels[:1]) < 0.5  # labels mixed up


def test_demo_refuses_to_overwrite_without_the_flag(demo_run, capsys):
    rc, _, output = demo_run
    assert demo.run(["--output", output, "--tuning", "small=true"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert os.path.exists(os.path.join(output, "classes.zarr"))  # nothing removed


def test_comparison_uses_the_ground_truth_colours(demo_run):
    rc, _, output = demo_run
    colours = json.load(open(os.path.join(output, "sample-data", "colors.json")))
    assert colours == dict(zip(sample_world.CLASS_NAMES, sample_world.CLASS_COLOURS))
    assert os.path.getsize(os.path.join(output, "comparison.png")) > 20_000


def test_the_per_field_table_counts_each_parcel_once_across_the_zones(demo_run):
    """The demo's collection (two UTM zones) and its per-parcel table, against the same parcels
    over the demo's one-zone store (`efm.zonal` on embeddings.zarr, the whole area in zone 10's
    CRS, no seam): one row per parcel and year, pixel counts within 2 % (the other zone's grid
    places a parcel's edge pixels differently) and mean vectors alike (cosine > 0.999), the
    parcels across the seam included: counted in both zones one would have about twice the
    pixels, cut at the seam about half."""
    import geopandas as gpd
    import pandas as pd

    import efm

    rc, text, output = demo_run
    table = pd.read_parquet(os.path.join(output, "parcels.parquet"))
    polygons = os.path.join(output, "sample-data", "parcels.geojson")
    parcels = gpd.read_file(polygons)
    index = json.load(open(os.path.join(output, "area.collection", "collection.json")))
    assert [m["cell"] for m in index["members"]] == ["10N", "11N"]
    assert len(table) == len(parcels) * 2 and set(table["year"]) == {2022, 2023}
    bounds = parcels.bounds
    across = set(parcels["parcel_id"][(bounds.minx < -120.0) & (bounds.maxx > -120.0)])
    assert len(across) >= 3
    one = efm.zonal(
        efm.open_embeddings(os.path.join(output, "embeddings.zarr")),
        polygons,
        id_column="parcel_id",
        stats=["mean"],
    )
    both = table.merge(one, on=["parcel_id", "year"], suffixes=("", "_one"))
    assert len(both) == len(table)
    assert (abs(both["pixel_count"] / both["pixel_count_one"] - 1) < 0.02).all()
    bands = [f"A{i:02d}" for i in range(64)]
    a, b = both[bands].to_numpy(), both[[f"{x}_one" for x in bands]].to_numpy()
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cosine > 0.999).all()
    assert f"per-field table             {len(parcels)} parcels x 2 years" in text
