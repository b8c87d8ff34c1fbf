"""GDAL >= 3.13 and rioxarray open a store in efm's v3 layout right (tests/helpers/gdal.py).

The store: `tests.helpers.conventions.efm_v3_store`, written with zarr-python 3 (sharding codec,
Blosc-Zstd / Zstd / bytes-only inner chunks). GDAL's classic view must be one y x raster per
(time, band), with the CRS, geotransform and nodata the store records; the values GDAL decodes
must be the codes numpy wrote. Skips (saying why) when no GDAL >= 3.13 is here: see
tests/helpers/gdal.py and scripts/gdal_root.sh.
"""

from __future__ import annotations

import affine
import numpy as np
import pyproj
import pytest
import zarr

from tests.helpers import gdal
from tests.helpers.conventions import efm_v3_store
from tests.helpers.field_stores import PROJ, SPATIAL

UTM = affine.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)


@pytest.mark.parametrize("compressors", ["blosc-zstd", "zstd", "none"])
def test_gdal_classic_view_is_y_by_x_per_time_and_band_with_crs_and_values(tmp_path, compressors):
    gdal.require_gdal()
    path = tmp_path / "s.zarr"
    # 300 x 200 px in shards of 1024 px: one partial shard of 256 px inner chunks, as the lead writes
    codes = efm_v3_store(path, compressors=compressors)
    view = gdal.classic_view(path, "embedding", 1, 5)
    assert (view.width, view.height, view.count) == (200, 300, 1)  # x by y, not x by band
    assert view.crs.equals(pyproj.CRS("EPSG:32610"))
    assert view.transform == UTM
    assert view.nodata == -128
    assert np.array_equal(gdal.read_classic(path, "embedding", 1, 5), codes[1, 5])
    assert np.array_equal(gdal.read_classic(path, "embedding", 0, 63), codes[0, 63])


def test_gdal_multidimensional_view_names_dims_inner_chunks_srs_and_nodata(tmp_path):
    gdal.require_gdal()
    path = tmp_path / "s.zarr"
    efm_v3_store(path)
    info = gdal.mdiminfo(path)
    emb = info["arrays"]["embedding"]
    assert emb["datatype"] == "Int8"
    assert emb["dimensions"] == ["/time", "/band", "/y", "/x"]
    assert emb["dimension_size"] == [2, 64, 300, 200]
    assert emb["block_size"] == [1, 64, 256, 256]  # the inner chunk: GDAL reads inside a shard
    assert emb["nodata_value"] == -128
    assert pyproj.CRS.from_wkt(emb["srs"]["wkt"]).equals(pyproj.CRS("EPSG:32610"))
    dims = {d["name"]: d for d in info["dimensions"]}
    assert dims["x"]["type"] == "HORIZONTAL_X" and dims["y"]["type"] == "HORIZONTAL_Y"
    assert info["arrays"]["band"]["datatype"] == "String"


def test_gdal_in_degrees_like_the_public_mosaic(tmp_path):
    gdal.require_gdal()
    path = tmp_path / "s.zarr"
    codes = efm_v3_store(
        path, crs="EPSG:4326", west=-122.5, north=38.0, res=0.00009, width=64, height=48, bands=8
    )
    view = gdal.classic_view(path, "embedding", 0, 3)
    assert (view.width, view.height) == (64, 48)
    assert view.crs.equals(pyproj.CRS("EPSG:4326"))
    assert view.transform.almost_equals(affine.Affine(0.00009, 0, -122.5, 0, -0.00009, 38.0))
    assert np.array_equal(gdal.read_classic(path, "embedding", 0, 3), codes[0, 3])


def test_gdal_reads_proj_and_spatial_on_the_array_not_on_the_group(tmp_path):
    """What the writer must know: without x/y coords and CF grid_mapping, GDAL 3.13 georeferences
    the array from proj:/spatial: on the ARRAY (registered there), and ignores them on the group."""
    gdal.require_gdal()
    path = tmp_path / "s.zarr"
    efm_v3_store(path, width=40, height=30, bands=8)
    root = zarr.open_group(str(path), mode="r+")
    for name in ("x", "y", "spatial_ref"):
        del root[name]
    del root["embedding"].attrs["grid_mapping"]
    bare = gdal.classic_view(path, "embedding", 0, 0)  # proj:/spatial: on the group only
    assert (bare.crs, bare.transform) == (None, None)
    grid = {k: v for k, v in root.attrs.items() if k.startswith(("proj:", "spatial:"))}
    root["embedding"].attrs.update({**grid, "zarr_conventions": [PROJ, SPATIAL]})
    view = gdal.classic_view(path, "embedding", 0, 0)
    assert view.crs.equals(pyproj.CRS("EPSG:32610"))
    assert view.transform == UTM


def test_rioxarray_reads_crs_and_transform_from_cf_and_coords(tmp_path):
    path = tmp_path / "s.zarr"
    efm_v3_store(path, width=40, height=30, bands=8, shard=32, inner=16)
    width, height, crs, transform = gdal.rio_view(path, "embedding", time=1, band=2)
    assert (width, height) == (40, 30)
    assert pyproj.CRS(crs.to_wkt()).equals(pyproj.CRS("EPSG:32610"))
    assert transform.almost_equals(UTM)


@pytest.mark.parametrize("ci", ["true", "", None])
def test_require_gdal_fails_under_ci_and_skips_elsewhere(tmp_path, monkeypatch, ci):
    """CI must run the GDAL tests: with no GDAL >= 3.13 (no root, nothing on PATH) require_gdal
    fails when CI=true and skips, saying why, otherwise."""
    monkeypatch.setenv("EFM_GDAL_ROOT", str(tmp_path / "no-root"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no gdalinfo at all
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="scripts/gdal_root.sh"):
        gdal.require_gdal()
