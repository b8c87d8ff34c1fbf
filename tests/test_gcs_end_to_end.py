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
from emulators.earthengine.synthetic import TileSpec, default_tiles, land_cover, make_embedding_collection
from pipelines import classify, export, extract, sample, train
from transforms import export as export_lib

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
    grid = TileSpec("grid", CRS, "31N", float(x[0] - scale / 2), float(y[0] + scale / 2), len(x), len(y), scale)
    return land_cover(grid, SEED)


def labelled_points_csv(n: int = 400, seed: int = 1) -> bytes:
    """Points at random pixel centres inside the area, labelled with their land-cover class, as lon/lat CSV."""
    w, s, e, n_ = map(float, area_bbox(margin_m=600.0).split(","))
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    (left, bottom), (right, top) = to_utm.transform(w, s), to_utm.transform(e, n_)
    rng = np.random.default_rng(seed)
    xs = np.floor(rng.uniform(left, right, n) / 10) * 10 + 5
    ys = np.floor(rng.uniform(bottom, top, n) / 10) * 10 + 5
    labels = [f"class_{land_cover(TileSpec('p', CRS, '31N', x - 5, y + 5, 1, 1), SEED)[0, 0]}" for x, y in zip(xs, ys)]
    lon, lat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(xs, ys)
    return pd.DataFrame({"lon": lon, "lat": lat, "label": labels}).to_csv(index=False).encode()


def map_accuracy(classes_path: str) -> tuple[float, int]:
    """Share of classified pixels whose class is the land cover the embeddings were made from."""
    ds = xr.open_zarr(classes_path, consolidated=True, zarr_format=2, mask_and_scale=False)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    predicted = np.asarray(ds["class"].isel(time=0).values)
    valid = predicted != fill
    names = np.array(labels + ["?"] * (256 - len(labels)))
    truth = np.char.add("class_", truth_on_grid(ds).astype(str))
    return float((names[predicted][valid] == truth[valid]).mean()), int(valid.sum())


def test_extract_sample_train_classify_export_all_on_gcs(ee, gcs, gcs_bucket, tmp_path, capsys):
    root = f"{gcs_bucket}/geneva"
    embeddings, points, samples = f"{root}/embeddings.zarr", f"{root}/labels/points.csv", f"{root}/samples.parquet"
    model, classes, cog = f"{root}/models/landcover.skops", f"{root}/maps/classes.zarr", f"{root}/maps/classes.tif"
    with gcs.fs.open(points.removeprefix("gs://"), "wb") as f:
        f.write(labelled_points_csv())

    assert extract.run(["--bbox", area_bbox(), "--years", "2021", "--crs", CRS, "--output", embeddings, "--chunk-size", "256",
                        "--ee-api-url", ee.url, "--ee-project", "test-project", *FNAPI]) == 0
    assert sample.run(["--embeddings", embeddings, "--points", points, "--label-column", "label", "--output", samples, *FNAPI]) == 0
    assert train.run(["--samples", samples, "--classifier", "logistic-regression", "--output", model, "--folds", "3"]) == 0
    assert classify.run(["--embeddings", embeddings, "--model", model, "--output", classes, "--confidence", *FNAPI]) == 0
    assert export.run(["--input", classes, "--output", cog, "--png"]) == 0
    capsys.readouterr()

    listing = set(gcs.fs.find(root.removeprefix("gs://")))
    for path in (samples, model, model + ".json", cog, cog.replace(".tif", ".png")):
        assert path.removeprefix("gs://") in listing, path
    assert ee.count("computePixels") > 0
    store = xr.open_zarr(embeddings, consolidated=True, zarr_format=2)
    assert store.attrs["efm_status"] == "complete" and store.sizes["band"] == 64
    table = pd.read_parquet(io.BytesIO(gcs.fs.cat(samples.removeprefix("gs://"))))  # not pyarrow's own GCS client
    assert len(table) > 300 and table["label"].nunique() == 6

    # Chance is 1/6; logistic regression on 400 points of these noisy 64-d vectors reaches ~85% (a one-pixel
    # misalignment of the map would cost ~5 points: the 250 m cells are 25 px wide).
    accuracy, pixels = map_accuracy(classes)
    assert pixels > 0.9 * store.sizes["x"] * store.sizes["y"]  # only the emulator's no-data holes are left unclassified
    assert accuracy > 0.8, f"class map agrees with the land cover on only {accuracy:.1%} of {pixels} pixels"
    with xr.open_zarr(classes, consolidated=True, zarr_format=2) as ds:
        assert ds.attrs["efm_status"] == "complete" and "confidence" in ds
        assert ds.rio.crs.to_epsg() == 32631

    local_cog = str(tmp_path / "classes.tif")
    gcs.fs.get_file(cog.removeprefix("gs://"), local_cog)
    assert export_lib.validate_cog(local_cog) == []
    with rasterio.open(local_cog) as tif:
        assert tif.crs.to_epsg() == 32631 and (tif.width, tif.height) == (store.sizes["x"], store.sizes["y"])
        band = tif.read(1)
    with xr.open_zarr(classes, consolidated=True, zarr_format=2, mask_and_scale=False) as ds:
        np.testing.assert_array_equal(band, ds["class"].isel(time=0).values)
    sidecar = json.load(io.BytesIO(gcs.fs.cat(model.removeprefix("gs://") + ".json")))
    assert sidecar["kind"] == "classifier" and len(sidecar["classes"]) == 6
