"""Work on part of a store (--bbox / --aoi): every product and export equals its reference computed with
numpy / scikit-learn on the slice of the source array picked by direct indexing.

The areas are built from pixel indexes (a few metres inside the pixel edges, then to lon/lat), so the
expected window is known by construction, not by the code under test.
"""

from __future__ import annotations

import dataclasses
import re

import geopandas
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
import shapely.ops
import xarray as xr
import zarr
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsClassifier

from pipelines import (
    change as change_cli,
)
from pipelines import (
    classify as classify_cli,
)
from pipelines import (
    export as export_cli,
)
from pipelines import (
    predict as predict_cli,
)
from pipelines import (
    similarity as similarity_cli,
)
from tests.helpers.runners import FNAPI, MULTIPROCESS
from tests.helpers.store_factory import BANDS, make_store
from transforms.core.errors import InputError
from transforms.core.grid import Grid, Window
from transforms.learning import models
from transforms.products.chunk_map import output_template
from transforms.products.classify import regression_variable
from transforms.storage import readers, store, subset

X0, Y0, SCALE, CRS = (
    500_000.0,
    5_000_000.0,
    10.0,
    "EPSG:32631",
)  # store_factory's grid: 300 x 260 px, 128-px chunks (3 x 3)
HEIGHT, WIDTH, CHUNK = 300, 260, 128
STORE_CHUNKS = 9
ATOL = 1e-5
TO_LONLAT = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform


def pixel_box(r0, r1, c0, c1, inset=3.0):
    """Rows r0..r1-1, cols c0..c1-1 as a box in the store's CRS, `inset` metres inside the outer pixel edges."""
    return shapely.box(
        X0 + c0 * SCALE + inset,
        Y0 - r1 * SCALE + inset,
        X0 + c1 * SCALE - inset,
        Y0 - r0 * SCALE - inset,
    )


def bbox_for(r0, r1, c0, c1, inset=3.0) -> str:
    """A W,S,E,N lon/lat box whose footprint in the store's CRS lies in exactly rows r0..r1-1, cols c0..c1-1
    (3 m inside the edges; a lon/lat box here is off a UTM rectangle by well under 1 m)."""
    minx, miny, maxx, maxy = pixel_box(r0, r1, c0, c1, inset).bounds
    lons_w = [TO_LONLAT(minx, y)[0] for y in (miny, maxy)]
    lons_e = [TO_LONLAT(maxx, y)[0] for y in (miny, maxy)]
    lats_s = [TO_LONLAT(x, miny)[1] for x in (minx, maxx)]
    lats_n = [TO_LONLAT(x, maxy)[1] for x in (minx, maxx)]
    return ",".join(
        f"{v:.9f}" for v in (np.mean(lons_w), np.mean(lats_s), np.mean(lons_e), np.mean(lats_n))
    )


WINDOW = (
    50,
    190,
    40,
    200,
)  # rows 50..189, cols 40..199: crosses input chunk edges, 2 x 2 output chunks
BBOX = bbox_for(*WINDOW)
SLICE = (slice(50, 190), slice(40, 200))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        "float32": make_store(str(root / "float32.zarr"), years=(2021, 2022, 2023)),
        "int8": make_store(str(root / "int8.zarr"), dtype="int8"),
    }


@pytest.fixture(scope="module")
def fitted(stores, tmp_path_factory):
    s, root = stores["float32"], tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    t, r, c = np.nonzero(s.valid)
    pick = rng.choice(len(t), 400, replace=False)
    X = s.values[t[pick], r[pick], c[pick]]
    labels = s.labels[t[pick], r[pick], c[pick]]
    y = X @ rng.normal(size=X.shape[1]) * 10 + labels * 20
    out = {}
    for name, est, kind, extra in [
        ("ridge", Ridge(alpha=0.1).fit(X, y), "regressor", {"target": "agbd", "units": "Mg/ha"}),
        ("knn", KNeighborsClassifier(3).fit(X, labels), "classifier", {}),
    ]:
        path = str(root / f"{name}.pkl")
        if kind == "classifier":
            extra = {"classes": est.classes_}
        sha = models.save_model(est, path, {"kind": kind, "bands": list(BANDS), **extra})["sha256"]
        out[name] = (est, path, sha)
    return out


def predict_reference(est, values, classifier):
    """model.predict on (time, y, x, band) values; NaN (regressor) / 255 (class map) where there is no data."""
    flat = values.reshape(-1, values.shape[-1])
    valid = ~np.isnan(flat).any(axis=1)
    if classifier:
        out = np.full(flat.shape[0], 255, dtype=np.uint8)
        out[valid] = est.predict(flat[valid])
    else:
        out = np.full(flat.shape[0], np.nan)
        out[valid] = est.predict(flat[valid])
        out = out.astype(np.float32)
    return out.reshape(values.shape[:-1])


def check_grid(got, s, rows, cols):
    """x/y coords are the input's coords slice; the transform the input's moved by whole pixels."""
    emb = xr.open_zarr(s.path)
    np.testing.assert_array_equal(got["y"].values, emb["y"].values[rows])
    np.testing.assert_array_equal(got["x"].values, emb["x"].values[cols])
    want = emb.rio.transform() * emb.rio.transform().translation(cols.start, rows.start)
    assert got.rio.transform() == want and got.rio.crs == emb.rio.crs
    # the stored GeoTransform itself (rioxarray and GDAL fall back on the coords when it disagrees; --resume reads it)
    assert [float(v) for v in got["spatial_ref"].attrs["GeoTransform"].split()] == list(
        want.to_gdal()
    )
    # and the GeoZarr spatial: attrs describe the window, not the input store
    variable = next(v for v in got.data_vars if {"y", "x"} <= set(got[v].dims))
    assert got[variable].attrs["spatial:transform"] == list(want)[:6]
    assert got[variable].attrs["spatial:shape"] == [got.sizes["y"], got.sizes["x"]]


def skipped_row(out: str) -> int:
    return int(re.search(r"chunks skipped \(outside the area\)\s+(\d+)", out).group(1))


def predict(s, est_path, sha, output, *flags):
    return predict_cli.run(
        [
            "--embeddings",
            s.path,
            "--model",
            est_path,
            "--model-sha256",
            sha,
            "--output",
            str(output),
            *map(str, flags),
        ]
    )


# -- the window maths ----------------------------------------------------------------------------

GRID = Grid(CRS, SCALE, X0, Y0, WIDTH, HEIGHT)


def test_area_between_pixel_edges_takes_every_pixel_it_reaches_into():
    exact = shapely.box(
        X0 + 40 * SCALE, Y0 - 190 * SCALE, X0 + 200 * SCALE, Y0 - 50 * SCALE
    )  # edges on pixel boundaries
    assert subset.area_window(GRID, exact) == (Window(50, 40, 140, 160), False)
    assert subset.area_window(GRID, pixel_box(*WINDOW)) == (
        Window(50, 40, 140, 160),
        False,
    )  # inside the edge pixels
    over = shapely.box(
        X0 + 40 * SCALE - 0.1, Y0 - 190 * SCALE - 0.1, X0 + 200 * SCALE + 0.1, Y0 - 50 * SCALE + 0.1
    )
    assert subset.area_window(GRID, over) == (
        Window(49, 39, 142, 162),
        False,
    )  # 10 cm past an edge: that pixel too
    point = shapely.Point(
        X0 + 7 * SCALE, Y0 - 3 * SCALE
    )  # on a pixel corner: the pixel below-right of it
    assert subset.area_window(GRID, point) == (Window(3, 7, 1, 1), False)


def test_area_partly_outside_is_clipped_and_an_area_outside_gives_none():
    west = shapely.box(X0 - 500, Y0 - 100 * SCALE, X0 + 20 * SCALE, Y0 - 10 * SCALE)
    assert subset.area_window(GRID, west) == (Window(10, 0, 90, 20), True)
    everything = shapely.box(X0 - 1000, Y0 - 5000, X0 + 5000, Y0 + 1000)
    assert subset.area_window(GRID, everything) == (Window(0, 0, HEIGHT, WIDTH), True)
    assert subset.area_window(GRID, shapely.box(X0 - 500, Y0 - 500, X0 - 10, Y0 - 10))[0] is None
    assert (
        subset.area_window(GRID, shapely.box(X0 - 500, Y0 - 500, X0, Y0))[0] is None
    )  # touches the store's corner only


def test_subset_aligns_with_the_input_grid_and_counts_skipped_chunks(stores):
    info = readers.store_info(stores["float32"].path)
    sub = subset.select(info, shapely.ops.transform(TO_LONLAT, pixel_box(*WINDOW)), "--bbox")
    assert sub.window == Window(50, 40, 140, 160) and not sub.clipped
    assert sub.transform(info.transform) == (
        SCALE,
        0.0,
        X0 + 40 * SCALE,
        0.0,
        -SCALE,
        Y0 - 50 * SCALE,
    )  # whole pixels
    assert (
        sub.touched.shape == (2, 2)
        and sub.touched.all()
        and sub.skipped(2) == (STORE_CHUNKS - 4) * 2
    )
    assert [w for w, _ in sub.windows()] == [
        Window(0, 0, 128, 128),
        Window(0, 128, 128, 32),
        Window(128, 0, 12, 128),
        Window(128, 128, 12, 32),
    ]
    assert sub.attrs["subset_window"] == [50, 40, 140, 160]
    whole = subset.whole(info)
    assert (
        whole.window == Window(0, 0, HEIGHT, WIDTH)
        and whole.skipped(3) == 0
        and not whole.active
        and whole.summary_rows() == []
    )
    with pytest.raises(
        InputError, match=r"^--aoi: the area .* lies outside .*float32.zarr, which covers lon"
    ):
        subset.select(info, shapely.box(10, 10, 11, 11), "--aoi")
    bottom_up = dataclasses.replace(
        info, transform=(SCALE, 0.0, X0, 0.0, SCALE, Y0)
    )  # efm never writes one; a foreign store may
    with pytest.raises(InputError, match=r"^--bbox/--aoi: .* not north-up with square pixels"):
        subset.select(bottom_up, shapely.box(2, 44, 4, 46), "--bbox")


# -- products on a --bbox equal their reference on the slice -------------------------------------


@pytest.mark.parametrize("name", ["ridge", "knn"])
def test_predict_bbox_equals_the_model_on_the_slice(stores, fitted, tmp_path, capsys, name):
    s = stores["float32"]
    est, path, sha = fitted[name]
    output = tmp_path / "out.zarr"
    assert predict(s, path, sha, output, "--bbox", BBOX, *FNAPI) == 0
    out = capsys.readouterr().out
    assert "160 x 140 px at row 50, col 40 of the input grid" in out and "clipped" not in out
    assert skipped_row(out) == (STORE_CHUNKS - 4) * 3
    got = xr.open_zarr(output, mask_and_scale=False)
    want = predict_reference(est, s.values[:, SLICE[0], SLICE[1]], classifier=name == "knn")
    variable = "class" if name == "knn" else "prediction"
    assert got[variable].shape == (3, 140, 160)
    if name == "knn":
        np.testing.assert_array_equal(got["class"].values, want)
    else:
        np.testing.assert_array_equal(np.isnan(got["prediction"].values), np.isnan(want))
        np.testing.assert_allclose(got["prediction"].values, want, rtol=1e-6, atol=1e-4)
    check_grid(got, s, *SLICE)
    assert got.attrs[store.STATUS_ATTR] == "complete" and got.attrs["subset_window"] == [
        50,
        40,
        140,
        160,
    ]


def test_predict_years_and_bbox(stores, fitted, tmp_path, capsys):
    s = stores["float32"]
    est, path, sha = fitted["ridge"]
    output = tmp_path / "out.zarr"
    assert predict(s, path, sha, output, "--bbox", BBOX, "--years", 2022, *FNAPI) == 0
    assert skipped_row(capsys.readouterr().out) == STORE_CHUNKS - 4
    got = xr.open_zarr(output)
    assert [str(t)[:4] for t in got["time"].values] == ["2022"]
    want = predict_reference(est, s.values[1:2, SLICE[0], SLICE[1]], classifier=False)
    np.testing.assert_allclose(got["prediction"].values, want, rtol=1e-6, atol=1e-4)


def similarity_reference(s, pixels, t, rows, cols):
    """The plain mean of the points' vectors over the WHOLE store (points may lie outside the area), dotted with the slice."""
    v = s.values.astype(np.float64)
    ref = np.mean([v[t, r, c] for r, c in pixels], axis=0)
    return np.einsum("yxb,b->yx", v[t, rows, cols], ref)  # NaN propagates: no data stays NaN


@pytest.mark.parametrize("runner", [FNAPI, MULTIPROCESS], ids=["fnapi", "multiprocess"])
def test_similarity_bbox_equals_numpy_on_the_slice(stores, tmp_path, capsys, runner):
    s = stores["float32"]
    pixels = [(10, 10), (250, 240), (60, 50)]  # two outside the area: they still make the reference
    assert all(s.valid[0][p] and s.valid[1][p] for p in pixels)
    features = [
        {
            "type": "Feature",
            "properties": {"k": "a"},
            "geometry": {
                "type": "Point",
                "coordinates": [X0 + (c + 0.5) * SCALE, Y0 - (r + 0.5) * SCALE],
            },
        }
        for r, c in pixels
    ]
    points = tmp_path / "refs.geojson"
    geopandas.GeoDataFrame.from_features(features, crs=CRS).to_file(points)
    output = tmp_path / "sim.zarr"
    assert (
        similarity_cli.run(
            [
                "--embeddings",
                s.path,
                "--points",
                str(points),
                "--output",
                str(output),
                "--bbox",
                BBOX,
                "--years",
                "2021,2022",
                "--threshold",
                "0.5",
                *runner,
            ]
        )
        == 0
    )
    assert skipped_row(capsys.readouterr().out) == (STORE_CHUNKS - 4) * 2
    got = xr.open_zarr(output, mask_and_scale=False)
    for t in range(2):
        want = similarity_reference(s, pixels, t, *SLICE)
        np.testing.assert_array_equal(np.isnan(got["similarity"].values[t]), np.isnan(want))
        np.testing.assert_allclose(got["similarity"].values[t], want, rtol=0, atol=ATOL)
        sim = got["similarity"].values[t]
        np.testing.assert_array_equal(
            got["similar"].values[t], np.where(np.isnan(want), 255, sim >= 0.5).astype(np.uint8)
        )
    check_grid(got, s, *SLICE)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_change_bbox_equals_numpy_on_the_slice(stores, tmp_path, capsys, dtype):
    s = stores[dtype]
    output = tmp_path / "change.zarr"
    assert (
        change_cli.run(
            [
                "--embeddings",
                s.path,
                "--years",
                "2021,2022",
                "--output",
                str(output),
                "--bbox",
                BBOX,
                *FNAPI,
            ]
        )
        == 0
    )
    assert skipped_row(capsys.readouterr().out) == STORE_CHUNKS - 4
    got = xr.open_zarr(output)
    v = s.values.astype(np.float64)[:, SLICE[0], SLICE[1]]
    want = np.einsum("yxb,yxb->yx", v[0], v[1])
    np.testing.assert_array_equal(np.isnan(got["similarity"].values), np.isnan(want))
    np.testing.assert_allclose(got["similarity"].values, want, rtol=0, atol=ATOL)
    check_grid(got, s, *SLICE)


def test_an_area_partly_outside_is_clipped_and_the_summary_says_so(stores, tmp_path, capsys):
    s = stores["float32"]
    output = tmp_path / "change.zarr"
    bbox = bbox_for(100, 200, 150, 400)  # runs 140 px past the east edge
    assert (
        change_cli.run(
            [
                "--embeddings",
                s.path,
                "--years",
                "2021,2022",
                "--output",
                str(output),
                "--bbox",
                bbox,
                *FNAPI,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "110 x 100 px at row 100, col 150 of the input grid (the area reaches beyond the store: clipped to it)"
        in out
    )
    got = xr.open_zarr(output)
    v = s.values.astype(np.float64)[:, 100:200, 150:]
    np.testing.assert_allclose(
        got["similarity"].values, np.einsum("yxb,yxb->yx", v[0], v[1]), rtol=0, atol=ATOL
    )
    check_grid(got, s, slice(100, 200), slice(150, 260))


def test_an_area_covering_everything_gives_the_whole_store_run(stores, tmp_path, capsys):
    s = stores["float32"]
    whole, bboxed = tmp_path / "whole.zarr", tmp_path / "bbox.zarr"
    flags = [
        "--embeddings",
        s.path,
        "--years",
        "2021,2023",
        "--threshold",
        "0.5",
        *FNAPI,
    ]
    assert change_cli.run([*flags, "--output", str(whole)]) == 0
    assert "subset window" not in capsys.readouterr().out  # without an area: the summary as before
    assert change_cli.run([*flags, "--output", str(bboxed), "--bbox", "2.9,44.9,3.1,45.2"]) == 0
    out = capsys.readouterr().out
    assert (
        "260 x 300 px at row 0, col 0 of the input grid (the area reaches beyond the store: clipped to it)"
        in out
        and skipped_row(out) == 0
    )
    a, b = xr.open_zarr(whole, mask_and_scale=False), xr.open_zarr(bboxed, mask_and_scale=False)
    for name in ("similarity", "changed", "x", "y"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert (
        a.rio.transform() == b.rio.transform() and a["spatial_ref"].attrs == b["spatial_ref"].attrs
    )
    assert set(b.attrs) - set(a.attrs) == {"subset_window", "subset_bbox"}


# -- --aoi: chunks that miss the polygon stay fill -----------------------------------------------


def write_aoi(path, *pixel_boxes):
    geopandas.GeoDataFrame(geometry=[pixel_box(*b) for b in pixel_boxes], crs=CRS).to_file(
        path
    )  # in UTM: read_aoi reprojects
    return str(path)


def test_aoi_computes_only_the_chunks_the_polygon_touches(stores, fitted, tmp_path, capsys):
    s = stores["float32"]
    est, path, sha = fitted["ridge"]
    # Two squares at opposite corners: window rows 20..281, cols 10..249 (3 x 2 output chunks of 128)
    squares = [(20, 40, 10, 30), (262, 282, 230, 250)]
    aoi = write_aoi(tmp_path / "aoi.gpkg", *squares)
    output = tmp_path / "out.zarr"
    assert predict(s, path, sha, output, "--aoi", aoi, "--years", "2021,2022", *FNAPI) == 0
    out = capsys.readouterr().out
    r0, c0, rows, cols = 20, 10, 262, 240
    assert f"{cols} x {rows} px at row {r0}, col {c0} of the input grid" in out
    # Reference: an output chunk is computed iff its pixel ranges overlap a square's (integer arithmetic, not the code's shapes)
    touched = {}
    for cr in range(0, rows, CHUNK):
        for cc in range(0, cols, CHUNK):
            touched[cr, cc] = any(
                a - r0 < cr + CHUNK and b - r0 > cr and c - c0 < cc + CHUNK and d - c0 > cc
                for a, b, c, d in squares
            )
    assert sum(touched.values()) == 3 and len(touched) == 6
    assert skipped_row(out) == (STORE_CHUNKS - 3) * 2
    got = xr.open_zarr(output)
    assert (
        got.attrs[store.STATUS_ATTR] == "complete"
        and got.attrs["subset_aoi"] == aoi
        and len(got.attrs["subset_aoi_sha256"]) == 64
    )
    want = predict_reference(est, s.values[:2, r0 : r0 + rows, c0 : c0 + cols], classifier=False)
    pred = got["prediction"].values
    for (cr, cc), hit in touched.items():
        block, ref = (
            pred[:, cr : cr + CHUNK, cc : cc + CHUNK],
            want[:, cr : cr + CHUNK, cc : cc + CHUNK],
        )
        if hit:  # every pixel of a computed chunk, in the polygon or not (as extract fetches whole chunks)
            np.testing.assert_allclose(block, ref, rtol=1e-6, atol=1e-4)
        else:
            assert np.isnan(block).all()
    assert store.done_markers(str(output)) == {
        f"{t}.{cr}.{cc}" for t in range(2) for (cr, cc), hit in touched.items() if hit
    }
    check_grid(got, s, slice(r0, r0 + rows), slice(c0, c0 + cols))


# -- export --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prediction_store(stores, tmp_path_factory):
    """A complete prediction store on the whole embedding grid, its values written directly (the export's source array)."""
    s = stores["float32"]
    path = str(tmp_path_factory.mktemp("pred") / "pred.zarr")
    values = np.random.default_rng(3).normal(150, 40, (2, HEIGHT, WIDTH)).astype(np.float32)
    values[~s.valid[:2]] = np.nan
    template = output_template(
        store.open_embeddings(s.path),
        [regression_variable({"target": "agbd", "units": "Mg/ha"})],
        [2021, 2022],
        chunk_rows=CHUNK,
        chunk_cols=CHUNK,
        product="prediction",
        attrs={},
    )
    store.setup(path, template)
    zarr.open_group(path, mode="r+")["prediction"][...] = values
    store.set_status(path, "complete")
    return path, values


def test_export_bbox_crops_the_geotiff_to_the_window(stores, prediction_store, tmp_path, capsys):
    path, values = prediction_store
    output = tmp_path / "pred_{year}.tif"
    assert export_cli.run(["--input", path, "--output", str(output), "--bbox", BBOX, "--png"]) == 0
    assert skipped_row(capsys.readouterr().out) == (STORE_CHUNKS - 4) * 2
    for t, year in enumerate((2021, 2022)):
        with rasterio.open(tmp_path / f"pred_{year}.tif") as src:
            assert (src.width, src.height) == (160, 140)
            assert tuple(src.transform)[:6] == (
                SCALE,
                0.0,
                X0 + 40 * SCALE,
                0.0,
                -SCALE,
                Y0 - 50 * SCALE,
            )
            want = values[t][SLICE]
            np.testing.assert_array_equal(src.read(1), np.where(np.isnan(want), -9999.0, want))
        assert (tmp_path / f"pred_{year}.png").exists()


def test_export_bbox_of_an_embedding_band(stores, tmp_path):
    s = stores["int8"]
    output = tmp_path / "a01.tif"
    assert (
        export_cli.run(
            [
                "--input",
                s.path,
                "--band",
                "A01",
                "--years",
                "2022",
                "--output",
                str(output),
                "--bbox",
                BBOX,
                "--png",
            ]
        )
        == 0
    )
    with rasterio.open(output) as src:
        assert tuple(src.transform)[:6] == (
            SCALE,
            0.0,
            X0 + 40 * SCALE,
            0.0,
            -SCALE,
            Y0 - 50 * SCALE,
        )
        np.testing.assert_array_equal(
            src.read(1), s.values[1][SLICE][..., 1]
        )  # the de-quantised band, NaN in the same places
    assert (tmp_path / "a01.png").exists()


def test_export_aoi_leaves_the_chunks_outside_the_polygon_as_nodata(
    prediction_store, tmp_path, capsys
):
    path, values = prediction_store
    squares = [(20, 40, 10, 30), (262, 282, 230, 250)]
    aoi = write_aoi(tmp_path / "aoi.gpkg", *squares)
    output = tmp_path / "pred.tif"
    assert (
        export_cli.run(["--input", path, "--output", str(output), "--aoi", aoi, "--years", "2022"])
        == 0
    )
    assert skipped_row(capsys.readouterr().out) == STORE_CHUNKS - 3
    with rasterio.open(output) as src:
        got = src.read(1)
    want = np.where(np.isnan(values[1]), -9999.0, values[1])[20:282, 10:250]
    kept = np.zeros(got.shape, dtype=bool)
    kept[0:128, 0:128] = kept[128:, 128:] = (
        True  # the chunks the squares touch (see the predict --aoi test)
    )
    np.testing.assert_array_equal(got[kept], want[kept])
    assert np.all(got[~kept] == -9999.0)


# -- resume and bad input ------------------------------------------------------------------------


def test_resume_with_another_area_is_refused(stores, fitted, tmp_path, capsys):
    s = stores["float32"]
    _, path, sha = fitted["ridge"]
    output = tmp_path / "out.zarr"
    assert predict(s, path, sha, output, "--bbox", BBOX, "--years", 2021, *FNAPI) == 0
    assert predict(s, path, sha, output, "--bbox", BBOX, "--years", 2021, "--resume", *FNAPI) == 0
    capsys.readouterr()
    for flags in (
        ["--bbox", bbox_for(60, 200, 40, 200)],
        [],
        ["--aoi", write_aoi(tmp_path / "a.gpkg", WINDOW)],
    ):
        assert predict(s, path, sha, output, *flags, "--years", 2021, "--resume", *FNAPI) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith("efm predict: error: --resume: ")
            and "was made with another " in err
            and "\n" not in err
        ), err
    # the same window from another polygon: other chunks may be computed, so refused too
    aoi_a, aoi_b = (
        write_aoi(tmp_path / "x.gpkg", (50, 60, 40, 50), (180, 190, 190, 200)),
        write_aoi(tmp_path / "y.gpkg", WINDOW),
    )
    other = tmp_path / "other.zarr"
    assert predict(s, path, sha, other, "--aoi", aoi_a, "--years", 2021, *FNAPI) == 0
    capsys.readouterr()
    assert predict(s, path, sha, other, "--aoi", aoi_b, "--years", 2021, "--resume", *FNAPI) == 2
    assert "another --aoi polygon" in capsys.readouterr().err


OUTSIDE = "10,10,11,11"  # lon/lat far from the store (projects to finite UTM 31N coordinates)


def commands(s, tmp_path, fitted, prediction_store):
    points = tmp_path / "p.geojson"
    geopandas.GeoDataFrame(geometry=[shapely.Point(X0 + 105, Y0 - 105)], crs=CRS).to_file(points)
    return {
        "predict": (
            predict_cli,
            [
                "--embeddings",
                s.path,
                "--model",
                fitted["ridge"][1],
                "--model-sha256",
                fitted["ridge"][2],
            ],
            tmp_path / "o.zarr",
        ),
        "classify": (
            classify_cli,
            [
                "--embeddings",
                s.path,
                "--model",
                fitted["knn"][1],
                "--model-sha256",
                fitted["knn"][2],
            ],
            tmp_path / "o.zarr",
        ),
        "similarity": (
            similarity_cli,
            ["--embeddings", s.path, "--points", str(points)],
            tmp_path / "o.zarr",
        ),
        "change": (
            change_cli,
            ["--embeddings", s.path, "--years", "2021,2022"],
            tmp_path / "o.zarr",
        ),
        "export": (export_cli, ["--input", prediction_store[0]], tmp_path / "o.tif"),
    }


@pytest.mark.parametrize("command", ["predict", "classify", "similarity", "change", "export"])
@pytest.mark.parametrize("case", ["bbox outside", "aoi outside", "bad bbox", "both", "aoi missing"])
def test_bad_area_is_one_line_exit_2_and_writes_nothing(
    stores, fitted, prediction_store, tmp_path, capsys, command, case
):
    cli, flags, output = commands(stores["float32"], tmp_path, fitted, prediction_store)[command]
    area, flag, message = {
        "bbox outside": (
            ["--bbox", OUTSIDE],
            "--bbox",
            "the area (lon 10.0000..11.0000, lat 10.0000..11.0000) lies outside",
        ),
        "aoi outside": (
            ["--aoi", write_aoi(tmp_path / "far.gpkg", (-3000, -2900, 50, 60))],
            "--aoi",
            "lies outside",
        ),
        "bad bbox": (["--bbox", "3.0,45.2,2.9,45.1"], "--bbox", "inverted or empty box"),
        "both": (["--bbox", BBOX, "--aoi", "x.gpkg"], "--aoi", "the area is given twice"),
        "aoi missing": (["--aoi", str(tmp_path / "nothere.gpkg")], "--aoi", "cannot read"),
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert (
        cli.run([*flags, "--output", str(output), *area, *([] if command == "export" else FNAPI)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"efm {command}: error: {flag}: ") and message in err and "\n" not in err
    ), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["extract", "predict", "similarity", "change", "export"])
def test_bbox_and_aoi_are_one_option_the_value_says_which(command, tmp_path, monkeypatch):
    """Issue 20 item 4: one area option, two spellings; a box or a file whichever is used."""
    import argparse
    import importlib

    from pipelines import cli as efm_cli

    parser = importlib.import_module(efm_cli.SUBCOMMANDS[command][0]).build_parser()
    flags = [a for a in parser._actions if "--bbox" in a.option_strings]
    assert len(flags) == 1 and set(flags[0].option_strings) == {"--bbox", "--aoi"}
    area = flags[0]
    monkeypatch.chdir(tmp_path)

    def parse(*pairs):
        ns = argparse.Namespace(**parser.parse_args.__self__._defaults)
        for spelling, value in pairs:
            area(parser, ns, value, spelling)
        return ns.bbox, ns.aoi

    for spelling in ("--bbox", "--aoi"):
        assert parse((spelling, "-1.5,45.0,2.5e0,46")) == ("-1.5,45.0,2.5e0,46", None)
        assert parse((spelling, "fields.gpkg")) == (None, "fields.gpkg")
    (tmp_path / "1,2,3,4").write_text("")
    with pytest.raises(InputError, match=r"both a W,S,E,N box and an existing file"):
        parse(("--aoi", "1,2,3,4"))
    with pytest.raises(InputError, match=r"^--bbox: the area is given twice"):
        parse(("--aoi", "a.gpkg"), ("--bbox", "1,2,3,4.5"))
    if command == "extract":  # through argparse, and required there
        args = parser.parse_args(["--aoi=-1,2,3,4", "--years", "2022", "--output", "o.zarr"])
        assert (args.bbox, args.aoi) == ("-1,2,3,4", None)
        with pytest.raises(InputError, match=r"required: --bbox/--aoi"):
            parser.parse_args(["--years", "2022", "--output", "o.zarr"])
