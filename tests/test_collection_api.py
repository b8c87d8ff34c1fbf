"""The Python API on a collection (one store per UTM zone): `efm.open_embeddings(collection)`,
`.sel(bbox=...)`, the maps per member, `efm.to_cog` of them.

References are computed here directly: for an output pixel, its centre projected to lon/lat with
pyproj, its cell picked by its longitude (the seam at 6 E), projected to that member's CRS,
floored to that member's pixel, and the member's array (store_factory's values, the seam masked
by tests/helpers/collections.py) indexed there.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyproj
import pytest
import rasterio
from sklearn.neighbors import KNeighborsClassifier

import efm
from efm import collection as api
from tests.helpers.collections import CELLS, SEAM_LON, check_vrt, make_collection
from transforms.core.errors import InputError


@pytest.fixture(scope="module")
def tc(tmp_path_factory):
    return make_collection(str(tmp_path_factory.mktemp("coll") / "coll"))


def reference(tc, xs, ys, crs, t):
    """(rows, cols, 64) by the rule, for pixel centres (xs, ys) in `crs`; NaN where no store has it."""
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    out = np.full(xs.shape + (64,), np.nan, dtype=np.float32)
    for name, cell_crs, west, east in CELLS:
        own = (lon >= west) & (lon < east)
        x, y = pyproj.Transformer.from_crs("EPSG:4326", cell_crs, always_xy=True).transform(
            lon[own], lat[own]
        )
        s = tc.members[name]
        col = np.floor((x - s.grid.x0) / s.grid.scale).astype(int)
        row = np.floor((s.grid.y0 - y) / s.grid.scale).astype(int)
        ok = (row >= 0) & (row < s.grid.height) & (col >= 0) & (col < s.grid.width)
        idx = np.flatnonzero(own)[ok]
        flat = out.reshape(-1, 64)
        flat[idx] = s.values[t, row[ok], col[ok]]
    return out


def centres(ds):
    return np.meshgrid(ds["x"].values, ds["y"].values)


def test_a_collection_opens_as_one_object_with_its_zones(tc):
    coll = efm.open_embeddings(tc.root)
    assert isinstance(coll, efm.EmbeddingCollection)
    assert coll.cells == ["31N", "32N"] and tuple(coll.years) == (2021, 2022)
    assert coll.crs_of("31N") == "EPSG:32631" and coll.crs_of("32n") == "EPSG:32632"
    text = repr(coll)
    assert "31N" in text and "EPSG:32632" in text and "2021, 2022" in text and ".sel(" in text
    for name, s in tc.members.items():
        np.testing.assert_array_equal(coll.members[name]["embedding"].values, s.values)


def test_sel_inside_one_cell_is_that_members_window(tc):
    coll = efm.open_embeddings(tc.root)
    bbox = (5.98, 45.004, 5.992, 45.011)
    ds = coll.sel(bbox=bbox, years=[2022])
    s = tc.members["31N"]
    assert str(ds.rio.crs) == "EPSG:32631" and ds["embedding"].dims == ("time", "y", "x", "band")
    cols = np.round((ds["x"].values - s.grid.x0) / 10 - 0.5).astype(int)
    rows = np.round((s.grid.y0 - ds["y"].values) / 10 - 0.5).astype(int)
    assert np.all(np.diff(cols) == 1) and np.all(np.diff(rows) == 1)  # a window, not resampled
    np.testing.assert_array_equal(
        ds["embedding"].values[0], s.values[1][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    )
    t = ds.rio.transform()
    assert (t.c, t.f) == (s.grid.x0 + cols[0] * 10, s.grid.y0 - rows[0] * 10)
    # every pixel whose centre lies in the bbox is in the window
    xs, ys = np.meshgrid(
        s.grid.x0 + (np.arange(s.grid.width) + 0.5) * 10,
        s.grid.y0 - (np.arange(s.grid.height) + 0.5) * 10,
    )
    lon, lat = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(
        xs, ys
    )
    r, c = np.nonzero((lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3]))
    assert r.min() >= rows[0] and r.max() <= rows[-1] and c.min() >= cols[0]
    assert c.max() <= cols[-1]


@pytest.mark.parametrize("crs", [None, "EPSG:32631"])
def test_sel_across_the_seam_follows_the_rule(tc, monkeypatch, crs):
    monkeypatch.setattr(api, "BLOCK", 48)  # several dask blocks, each read chunk by chunk
    coll = efm.open_embeddings(tc.root)
    ds = coll.sel(bbox=(5.986, 45.003, 6.013, 45.016), crs=crs)
    expected_crs = crs or "EPSG:32632"  # the bbox's centre is at 5.9995 E... or 6 E: see below
    centre_lon = (5.986 + 6.013) / 2
    if crs is None:
        expected_crs = "EPSG:32631" if centre_lon < SEAM_LON else "EPSG:32632"
    assert str(ds.rio.crs) == expected_crs
    emb = ds["embedding"]
    assert emb.dims == ("time", "y", "x", "band") and emb.dtype == np.float32
    assert max(emb.chunks[1]) <= 48 and max(emb.chunks[2]) <= 48 and len(emb.chunks[1]) > 1
    t = ds.rio.transform()
    assert t.a == 10 and t.e == -10 and t.c == ds["x"].values[0] - 5
    xs, ys = centres(ds)
    values = emb.values
    for i in range(2):
        ref = reference(tc, xs, ys, expected_crs, i)
        np.testing.assert_array_equal(values[i], ref)
    # at the seam: no NaN where the pixels of both stores under the centre have data
    lon, lat = pyproj.Transformer.from_crs(expected_crs, "EPSG:4326", always_xy=True).transform(
        xs, ys
    )
    near = np.abs(lon - SEAM_LON) < 0.0003  # ~2 px each side
    both = np.ones(xs.shape, bool)
    for name, cell_crs, _, _ in CELLS:
        s = tc.members[name]
        x, y = pyproj.Transformer.from_crs("EPSG:4326", cell_crs, always_xy=True).transform(
            lon, lat
        )
        col = np.clip(np.floor((x - s.grid.x0) / 10).astype(int), 0, s.grid.width - 1)
        row = np.clip(np.floor((s.grid.y0 - y) / 10).astype(int), 0, s.grid.height - 1)
        both &= ~np.isnan(s.values[0, row, col, 0])
    assert (near & both).sum() > 50
    assert not np.isnan(values[0][near & both]).any()


def test_sel_refuses_a_bbox_outside_the_collection(tc):
    coll = efm.open_embeddings(tc.root)
    with pytest.raises(InputError, match=r"^bbox: .*lies outside the collection"):
        coll.sel(bbox=(10.0, 45.0, 10.1, 45.1))
    with pytest.raises(InputError, match=r"^bbox: .*lies outside the collection"):
        coll.sel(bbox=(5.0, 44.0, 5.1, 44.1))  # in 31N's cell, not in the area
    with pytest.raises(InputError, match=r"^years: the collection has no year 2019"):
        coll.sel(bbox=(5.98, 45.004, 5.99, 45.01), years=[2019])


def test_an_index_that_disagrees_with_its_stores_is_refused(tc, tmp_path):
    root = str(tmp_path / "copy")
    shutil.copytree(tc.root, root)
    shutil.rmtree(os.path.join(root, "utm-32n.zarr"))
    with pytest.raises(InputError, match=r"^path: .*lists utm-32n.zarr .*disagree"):
        efm.open_embeddings(root)
    root2 = str(tmp_path / "years")
    shutil.copytree(tc.root, root2)
    index = os.path.join(root2, "collection.json")
    text = open(index).read().replace("2022\n", "2022,\n  2023\n", 1)
    open(index, "w").write(text)
    with pytest.raises(InputError, match=r"^path: .*lists year 2023 .*disagree"):
        efm.open_embeddings(root2)


@pytest.fixture(scope="module")
def model(tc):
    s = tc.members["31N"]
    t, r, c = np.nonzero(s.labels >= 0)
    pick = np.random.default_rng(0).choice(len(t), 300, replace=False)
    X = s.values[t[pick], r[pick], c[pick]]
    return KNeighborsClassifier(3).fit(X, s.labels[t[pick], r[pick], c[pick]])


def test_maps_of_a_collection_are_per_member(tc, model):
    coll = efm.open_embeddings(tc.root)
    classes = efm.predict(coll, model, years=[2022])
    assert isinstance(classes, efm.MapCollection) and list(classes) == ["31N", "32N"]
    assert "31N" in repr(classes)
    for name, s in tc.members.items():
        got = classes[name].values[0]
        valid = ~np.isnan(s.values[1]).any(axis=-1)
        want = model.predict(s.values[1][valid])
        codes = {int(v): lbl for v, lbl in zip(classes[name].attrs["flag_values"], model.classes_)}
        np.testing.assert_array_equal([codes[int(v)] for v in got[valid]], want)
        assert (got[~valid] == classes[name].attrs["fill_value"]).all()
        assert str(classes[name].rio.crs) == s.grid.crs
    change = efm.change(tc.root, 2021, 2022, threshold=0.5)
    for name, s in tc.members.items():
        a, b = s.values[0].astype(np.float64), s.values[1].astype(np.float64)
        np.testing.assert_allclose(
            change["similarity"][name].values, (a * b).sum(-1), rtol=1e-5, atol=1e-6
        )


def test_similarity_takes_one_reference_for_the_whole_collection(tc, tmp_path):
    import geopandas as gpd
    import shapely

    # points on both sides, one in 32N inside the strip 31N's store also holds
    lons = [5.985, 5.99, 6.005, 6.01, SEAM_LON + 0.00003]
    lats = [45.005, 45.012, 45.006, 45.013, 45.01]
    pts = gpd.GeoDataFrame(geometry=[shapely.Point(x, y) for x, y in zip(lons, lats)], crs=4326)
    path = str(tmp_path / "refs.geojson")
    pts.to_file(path)
    lon, lat = np.array(lons), np.array(lats)
    vec = []
    for name, cell_crs, west, east in CELLS:
        own = (lon >= west) & (lon < east)
        s = tc.members[name]
        x, y = pyproj.Transformer.from_crs("EPSG:4326", cell_crs, always_xy=True).transform(
            lon[own], lat[own]
        )
        col = np.floor((x - s.grid.x0) / 10).astype(int)
        row = np.floor((s.grid.y0 - y) / 10).astype(int)
        vec.append(s.values[0, row, col].astype(np.float64))
    vec = np.concatenate(vec)
    ref = vec[~np.isnan(vec).any(axis=1)].mean(axis=0)
    sim = efm.similarity(tc.root, path, years=[2021])
    for name, s in tc.members.items():
        np.testing.assert_allclose(
            sim[name].values[0], s.values[0].astype(np.float64) @ ref, rtol=1e-5, atol=1e-6
        )


def test_to_cog_of_a_map_collection_writes_a_cog_per_zone_and_a_vrt(tc, model, tmp_path):
    classes = efm.predict(tc.root, model).sel(time="2021")
    out = str(tmp_path / "classes")
    vrt = efm.to_cog(classes, out)
    assert vrt == os.path.join(out, "map.vrt")
    for name, _, _, _ in CELLS:
        with rasterio.open(os.path.join(out, f"utm-{name.lower()}.tif")) as src:
            np.testing.assert_array_equal(src.read(1), classes[name].values[0])
            assert src.crs.to_string() == tc.members[name].grid.crs
    check_vrt(tc, vrt, {n: classes[n].values[0] for n in classes})
    with pytest.raises(InputError, match=r"^path: .* already exists"):
        efm.to_cog(classes, out)
    efm.to_cog(classes, out, overwrite=True)
