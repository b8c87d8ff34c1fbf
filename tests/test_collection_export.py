"""`efm export` of a collection: a COG per zone (each equal to its member) plus map.vrt in
EPSG:4326, or with --mosaic one COG in EPSG:4326 whose every pixel is the value of the pixel
holding its centre in the store of the cell holding its centre.

The reference (check_vrt, tests/helpers/collections.py, with pyproj): a pixel centre's
lon/lat, its cell by longitude (seam at 6 E), projected to that member's CRS, floored to its
pixel, the member's array indexed there.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from sklearn.neighbors import KNeighborsClassifier

from pipelines import classify as classify_cli
from pipelines import export as export_cli
from tests.helpers.collections import (
    CELLS,
    SEAM_LON,
    check_vrt,
    make_collection,
    reference_lonlat,
)
from tests.helpers.runners import FNAPI
from transforms.learning import models
from transforms.products import export
from transforms.storage import collection as collectionlib


@pytest.fixture(scope="module")
def tc(tmp_path_factory):
    return make_collection(str(tmp_path_factory.mktemp("coll") / "emb"))


@pytest.fixture(scope="module")
def classes(tc, tmp_path_factory):
    """A collection of class maps: `efm classify` run on each member store, and its index."""
    root = tmp_path_factory.mktemp("classes")
    s = tc.members["31N"]
    t, r, c = np.nonzero(s.labels >= 0)
    pick = np.random.default_rng(0).choice(len(t), 300, replace=False)
    clf = KNeighborsClassifier(3).fit(
        s.values[t[pick], r[pick], c[pick]], s.labels[t[pick], r[pick], c[pick]]
    )
    model = str(root / "knn.skops")
    models.save_model(
        clf,
        model,
        {"kind": "classifier", "classes": clf.classes_, "bands": [f"A{i:02d}" for i in range(64)]},
    )
    out = str(root / "classes")
    coll = collectionlib.read(tc.root)
    os.makedirs(out)
    collectionlib.write(coll.with_root(out, kind="classes"))
    for m in coll.members:
        argv = ["--embeddings", coll.path_of(m), "--model", model, "--output"]
        assert classify_cli.run([*argv, os.path.join(out, m.path), *FNAPI]) == 0
    return {
        m.cell: xr.open_zarr(os.path.join(out, m.path), mask_and_scale=False)["class"].values
        for m in coll.members
    } | {"root": out}


def run(argv, capsys):
    code = export_cli.run(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def read_all(path):
    with rasterio.open(path) as src:
        data = src.read(1)
        rows, cols = np.mgrid[0 : src.height, 0 : src.width]
        lon, lat = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
        return src, data, np.reshape(lon, rows.shape), np.reshape(lat, rows.shape)


def test_an_embedding_collection_gives_a_cog_per_zone_and_a_vrt(tc, tmp_path, capsys):
    out = str(tmp_path / "a01")
    code, stdout, err = run(["--input", tc.root, "--band", "A01", "--output", out], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(
        [".efm-product"]
        + [
            f"{n}_{y}.{e}"
            for n in ("utm-31n", "utm-32n")
            for y in (2021, 2022)
            for e in ("tif", "vrt")
        ]
        + ["map_2021.vrt", "map_2022.vrt"]
    )
    assert "map_2021.vrt" in stdout
    for i, year in enumerate((2021, 2022)):
        for name, _, _, _ in CELLS:
            s = tc.members[name]
            cog = os.path.join(out, f"utm-{name.lower()}_{year}.tif")
            with rasterio.open(cog) as src:
                assert src.crs.to_string() == s.grid.crs
                assert tuple(src.transform)[:6] == tuple(s.grid.transform)[:6]
                np.testing.assert_array_equal(src.read(1), s.values[i, :, :, 1])
            assert export.validate_cog(cog) == []
        check_vrt(
            tc,
            os.path.join(out, f"map_{year}.vrt"),
            {n: s.values[i, :, :, 1] for n, s in tc.members.items()},
        )


def test_a_class_collection_gives_a_cog_per_zone_and_a_vrt_with_the_colours(
    tc, classes, tmp_path, capsys
):
    out = str(tmp_path / "classes_2022")
    code, _, err = run(["--input", classes["root"], "--years", "2022", "--output", out], capsys)
    assert code == 0, err
    for name, _, _, _ in CELLS:
        with rasterio.open(os.path.join(out, f"utm-{name.lower()}.tif")) as src:
            np.testing.assert_array_equal(src.read(1), classes[name][1])
            assert src.nodata == 255
    check_vrt(tc, os.path.join(out, "map.vrt"), {n: classes[n][1] for n, _, _, _ in CELLS})
    with rasterio.open(os.path.join(out, "map.vrt")) as src:
        assert src.nodata == 255 and 0 in src.colormap(1)


@pytest.mark.parametrize("what", ["embedding", "classes"])
def test_the_mosaic_cog_follows_the_rule(tc, classes, tmp_path, capsys, what):
    out = str(tmp_path / "mosaic.tif")
    argv = (
        ["--input", tc.root, "--band", "A01"]
        if what == "embedding"
        else ["--input", classes["root"]]
    )
    code, _, err = run([*argv, "--years", "2022", "--mosaic", "--output", out], capsys)
    assert code == 0, err
    assert export.validate_cog(out) == []
    src, data, lon, lat = read_all(out)
    assert src.crs.to_epsg() == 4326
    # the default pixel: 10 m east-west and north-south at the centre latitude
    geod = pyproj.Geod(ellps="WGS84")
    assert geod.line_length([6.0, 6.0 + src.transform.a], [45.01, 45.01]) == pytest.approx(
        10, rel=1e-6
    )
    assert geod.line_length([6.0, 6.0], [45.01, 45.01 - src.transform.e]) == pytest.approx(
        10, rel=1e-6
    )
    if what == "embedding":
        zones = {n: s.values[1, :, :, 1] for n, s in tc.members.items()}
        fill = np.float32(np.nan)
    else:
        zones = {n: classes[n][1] for n, _, _, _ in CELLS}
        fill = 255
    want = reference_lonlat(tc, zones, lon, lat, fill)
    np.testing.assert_array_equal(data, want)
    # no gap at the seam where both stores' pixels under the centre have data
    near = np.abs(lon - SEAM_LON) < 0.0003
    both = np.ones(lon.shape, bool)
    for name, cell_crs, _, _ in CELLS:
        g = tc.members[name].grid
        x, y = pyproj.Transformer.from_crs("EPSG:4326", cell_crs, always_xy=True).transform(
            lon, lat
        )
        col = np.clip(np.floor((x - g.x0) / 10).astype(int), 0, g.width - 1)
        row = np.clip(np.floor((g.y0 - y) / 10).astype(int), 0, g.height - 1)
        both &= ~np.isnan(tc.members[name].values[1, row, col, 0])
    assert (near & both).sum() > 50
    bad = np.isnan(data) if what == "embedding" else data == 255
    assert not bad[near & both].any()


def test_the_mosaic_takes_a_scale_and_a_bbox(tc, tmp_path, capsys):
    out = str(tmp_path / "m.tif")
    argv = ["--input", tc.root, "--band", "A05", "--years", "2021", "--mosaic", "--output", out]
    code, _, err = run(
        [*argv, "--tuning", "mosaic_scale=0.0002", "--bbox", "5.99,45.005,6.01,45.015"], capsys
    )
    assert code == 0, err
    src, data, lon, lat = read_all(out)
    assert (src.width, src.height) == (100, 50)
    assert src.transform.a == pytest.approx(0.0002) and src.bounds.left == pytest.approx(5.99)
    want = reference_lonlat(
        tc, {n: s.values[0, :, :, 5] for n, s in tc.members.items()}, lon, lat, np.float32(np.nan)
    )
    np.testing.assert_array_equal(data, want)


def test_only_efms_export_is_replaced(tc, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["--input", tc.root, "--band", "A01", "--years", "2021", "--output", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 2 and "is not an efm export of a collection" in err
    assert os.listdir(out) == ["notes.txt"]
    out2 = str(tmp_path / "out2")
    assert run(argv[:-1] + [out2], capsys)[0] == 0
    code, _, err = run(argv[:-1] + [out2], capsys)
    assert code == 2 and "pass --overwrite" in err and len(err.strip().splitlines()) == 1
    before = sorted(os.listdir(out2))
    assert run(argv[:-1] + [out2, "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(out2)) == before
    # --years 2022 replaces the 2021 export whole
    assert run(argv[:-3] + ["2022", "--output", out2, "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(out2)) == sorted(
        [".efm-product", "map.vrt", "utm-31n.tif", "utm-31n.vrt", "utm-32n.tif", "utm-32n.vrt"]
    )
    open(os.path.join(out2, "extra.tif"), "w").write("x")
    code, _, err = run(argv[:-1] + [out2, "--overwrite"], capsys)
    assert code == 2 and "files efm did not write (extra.tif)" in err


@pytest.mark.parametrize(
    "extra, flag, message",
    [
        (["--tuning", "mosaic_scale=0.0001"], "--tuning: mosaic_scale", "add --mosaic"),
        (["--mosaic", "--tuning", "mosaic_scale=2"], "--tuning: mosaic_scale", "0 < size < 1"),
        (["--bbox", "5.99,45.0,6.01,45.01"], "--bbox", "exported whole"),
        (["--mosaic", "--bbox", "7,45,7.1,45.1"], "--bbox", "lies outside the collection"),
        (["--png"], "--png", "quicklooks are made per store"),
    ],
)
def test_bad_flags_on_a_collection_are_one_line(tc, tmp_path, capsys, extra, flag, message):
    out = str(tmp_path / ("m.tif" if "--mosaic" in extra else "m"))
    code, _, err = run(["--input", tc.root, "--band", "A01", "--output", out, *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"efm export: error: {flag}: ") and message in err
    assert not os.path.exists(out)


def test_a_collection_whose_index_and_stores_disagree_is_refused(tc, tmp_path, capsys):
    root = str(tmp_path / "copy")
    shutil.copytree(tc.root, root)
    shutil.rmtree(os.path.join(root, "utm-31n.zarr"))
    out = str(tmp_path / "out")
    code, _, err = run(["--input", root, "--band", "A01", "--output", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "its index and stores disagree" in err and not os.path.exists(out)


def test_mosaic_is_refused_on_a_single_store(tc, tmp_path, capsys):
    path = tc.members["31N"].path
    code, _, err = run(
        ["--input", path, "--band", "A01", "--mosaic", "--output", str(tmp_path / "m.tif")], capsys
    )
    assert code == 2 and "--mosaic is for a collection" in err
