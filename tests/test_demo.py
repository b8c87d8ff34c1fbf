"""`efm demo --small` end to end, offline: every real step, and an accuracy a broken step would miss."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import rasterio
import xarray as xr

from pipelines import cli, demo
from transforms import sample_truth, sample_world

THRESHOLD = 0.78  # --small scores ~0.85; a map flipped, shifted or with classes mixed up scores < 0.5


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import contextlib
    import io

    output = str(tmp_path_factory.mktemp("demo") / "out")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = cli.main(["demo", "--output", output, "--small"])
    return rc, buffer.getvalue(), output


def test_demo_runs_and_prints_accuracy_times_and_paths(demo_run):
    rc, out, output = demo_run
    assert rc == 0, out
    accuracies = {int(y): float(a) / 100 for y, a in re.findall(r"accuracy (\d{4}) \(held out\)\s+([\d.]+)%", out)}
    assert set(accuracies) == {2022, 2023}
    assert all(a > THRESHOLD for a in accuracies.values()), accuracies
    for name in ("make-sample-data", "extract", "sample", "train", "classify", "export", "score", "total"):
        assert re.search(rf"time: {name}\s+[\d.]+ s", out), name
    wrote = re.findall(r"wrote\s+(\S+)", out)
    for path in wrote:
        assert os.path.exists(path), path
    names = {os.path.basename(p) for p in wrote}
    assert {"embeddings.zarr", "samples.parquet", "model.skops", "classes.zarr", "land_cover_2022.tif", "land_cover_2022.png",
            "land_cover_2023.tif", "comparison.png"} <= names


def test_demo_outputs_are_consistent(demo_run):
    rc, _, output = demo_run
    assert rc == 0
    embeddings = xr.open_zarr(os.path.join(output, "embeddings.zarr"), consolidated=True, zarr_format=2, mask_and_scale=False)
    assert embeddings["embedding"].dtype == np.int8 and embeddings.attrs["source"].startswith("cog:")
    assert embeddings.attrs["efm_status"] == "complete" and embeddings.attrs["resampling"] == "nearest"
    classes = xr.open_zarr(os.path.join(output, "classes.zarr"), consolidated=True, zarr_format=2, mask_and_scale=False)
    with rasterio.open(os.path.join(output, "land_cover_2022.tif")) as ds:
        assert ds.crs.to_epsg() == 32610 and (ds.height, ds.width) == (classes.sizes["y"], classes.sizes["x"])
        np.testing.assert_array_equal(ds.read(1), classes["class"].isel(time=0).values)
    with rasterio.open(os.path.join(output, "land_cover_2022.png")) as png:
        assert png.width > 200
    labels = [str(v) for v in classes["class"].attrs["class_labels"]]
    assert set(labels) == set(sample_world.CLASS_NAMES)


def test_the_threshold_catches_a_broken_step(demo_run):
    """Scored the same way, maps a broken step would make fall far below the threshold."""
    rc, _, output = demo_run
    assert rc == 0
    data_dir = os.path.join(output, "sample-data")
    classes = xr.open_zarr(os.path.join(output, "classes.zarr"), consolidated=True, zarr_format=2, mask_and_scale=False)
    labels = [str(v) for v in classes["class"].attrs["class_labels"]]
    predicted = classes["class"].isel(time=0).values
    x, y = classes["x"].values, classes["y"].values
    import affine

    transform = affine.Affine(10.0, 0.0, float(x[0]) - 5, 0.0, -10.0, float(y[0]) + 5)
    truth, names = sample_truth.truth_on_grid(os.path.join(data_dir, "ground_truth.tif"), classes.attrs["crs"], transform, predicted.shape)

    def accuracy(p, label_list=labels):
        return sample_truth.score(p, label_list, 255, truth, names)["accuracy"]

    assert accuracy(predicted) > THRESHOLD
    assert accuracy(predicted[::-1]) < 0.5  # rows upside down (a bottom-up COG read naively)
    assert accuracy(np.roll(predicted, 40, axis=1)) < 0.5  # 400 m off (a wrong transform)
    assert accuracy(predicted, labels[1:] + labels[:1]) < 0.5  # labels mixed up


def test_demo_refuses_to_overwrite_without_the_flag(demo_run, capsys):
    rc, _, output = demo_run
    assert demo.run(["--output", output, "--small"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert os.path.exists(os.path.join(output, "classes.zarr"))  # nothing removed


def test_comparison_uses_the_ground_truth_colours(demo_run):
    rc, _, output = demo_run
    colours = json.load(open(os.path.join(output, "sample-data", "colors.json")))
    assert colours == dict(zip(sample_world.CLASS_NAMES, sample_world.CLASS_COLOURS))
    assert os.path.getsize(os.path.join(output, "comparison.png")) > 20_000
