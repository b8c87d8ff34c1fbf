"""Every kind of store efm writes speaks the field's conventions and opens in GDAL and rioxarray.

The stores: embeddings in float32 and int8 (the real `efm extract` on a COG mirror), and the
products made from the float32 one (classes with confidence, change, similarity, prediction).
Each one is
- validated against the proj:, spatial: and geoemb: v1 JSON schemas and the data
  (tests/helpers/conventions.validate_store), with no allowance;
- opened by GDAL >= 3.13 (tests/helpers/gdal.py; Debian sid's gdal-bin in a private root made by
  scripts/gdal_root.sh, which `make test` sets up): `gdalmdiminfo` names the dimensions, the CRS
  and the inner chunk as block size; the classic view of each (time[, band]) index is one y x
  raster, width = x size, height = y size, with the planned geotransform and CRS and the values
  zarr-python reads from the array;
- opened by rioxarray over `xarray.open_zarr`: CRS, transform, size and values.
Expected values come from elsewhere: the CRS from the extract flags, the grid planned from the
bbox (transforms/core/grid.plan_grid), block sizes from the arrays' own zarr.json, values from
zarr-python. Stores efm wrote before issue 17 (Zarr 2) still open in Debian 12's GDAL 3.6, and
those from before the band names were fixed-width are still read, classified and resumed.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import shutil
import subprocess

import affine
import numpy as np
import pyproj
import pytest
import xarray as xr
import zarr
from sklearn.linear_model import Ridge

from pipelines import change, classify, extract, predict, sample, similarity, train
from sample_data import generate as sample_data
from tests.helpers import gdal, store_factory
from tests.helpers.conventions import CONVENTIONS, validate_store
from tests.helpers.runners import FNAPI
from transforms.core import grid as gridlib
from transforms.core.grid import Grid
from transforms.learning import models
from transforms.storage import geozarr, integrity, resume, store, zarr_direct

STORES = ["embeddings-float32", "embeddings-int8", "classes", "change", "similarity", "prediction"]
# The keys of the conventions and GDAL's own CRS attribute (what stores from before had none of).
GEOZARR_KEYS = (
    "zarr_conventions",
    "proj:code",
    "proj:wkt2",
    "spatial:dimensions",
    "spatial:transform",
    "spatial:shape",
    "spatial:bbox",
    "spatial:registration",
    "spatial:transform_type",
    "_CRS",
)
GDAL_BIN_MISSING = (
    "Debian's gdal-bin (gdalmdiminfo, gdalmdimtranslate) is not installed: run "
    "`scripts/gdal_bin.sh` as root (`make test` does)"
)


def bbox_text(bbox) -> str:
    return ",".join(repr(float(v)) for v in bbox)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sample data, an extract of it in float32 and in int8, and every product store made from the float32 one."""
    root = tmp_path_factory.mktemp("geozarr")
    data = sample_data.generate(
        str(root / "sample-data"), sample_data.SampleSpec(**sample_data.SMALL, years=(2022, 2023))
    )
    w = {"data": data, "root": root, "bbox": bbox_text(data.bbox), "stores": {}}
    for dtype in ("float32", "int8"):
        w["stores"][dtype] = str(root / f"emb-{dtype}.zarr")
        assert extract.run(extract_argv(w, w["stores"][dtype], dtype=dtype)) == 0
    emb = w["stores"]["float32"]
    table, model = str(root / "samples.parquet"), str(root / "knn.skops")
    w["table"] = table
    argv = ["--embeddings", emb, "--points", data.points, "--label-column", "label"]
    assert sample.run([*argv, "--output", table, *FNAPI]) == 0
    argv = ["--samples", table, "--classifier", "knn", "--tuning", "folds=3", "--output", model]
    assert train.run(argv) == 0
    products = {
        name: str(root / f"{name}.zarr")
        for name in ("classes", "change", "similarity", "prediction")
    }
    argv = ["--embeddings", emb, "--model", model, "--output", products["classes"]]
    assert classify.run([*argv, "--confidence", *FNAPI]) == 0
    argv = ["--embeddings", emb, "--years", "2022,2023", "--threshold", "0.8"]
    assert change.run([*argv, "--output", products["change"], *FNAPI]) == 0
    refs = os.path.join(data.output, "refs.geojson")
    argv = ["--embeddings", emb, "--points", refs, "--threshold", "0.8"]
    assert similarity.run([*argv, "--output", products["similarity"], *FNAPI]) == 0
    regressor = str(root / "ridge.pkl")
    values = store_factory.raw_embedding(emb)[0].reshape(-1, 64)  # (y * x, band) of year 0
    values = values[~np.isnan(values).any(axis=1)][:300]
    bands = [str(b) for b in zarr.open_group(emb, mode="r")["band"][...]]
    sha = models.save_model(
        Ridge().fit(values, values[:, 0] * 100),
        regressor,
        {"kind": "regressor", "bands": bands, "target": "agbd", "units": "Mg/ha"},
    )["sha256"]
    argv = ["--embeddings", emb, "--model", regressor, "--model-sha256", sha]
    assert predict.run([*argv, "--output", products["prediction"], *FNAPI]) == 0
    w["products"] = products
    return w


def extract_argv(w, output, *, dtype="float32") -> list[str]:
    return [
        "--source",
        "cog",
        "--cog-root",
        w["data"].mirror,
        f"--bbox={w['bbox']}",
        "--output",
        str(output),
        "--crs",
        w["data"].crs,
        "--years",
        "2022,2023",
        "--tuning",
        "chunk_size=128",
        "--dtype",
        dtype,
        "--tuning",
        "scale=10",
        "--tuning",
        "max_concurrent_requests=2",
        *FNAPI,
    ]


def stores(w) -> dict[str, str]:
    return {**{f"embeddings-{k}": v for k, v in w["stores"].items()}, **w["products"]}


def planned(w) -> Grid:
    """The grid the extract plans from the bbox, CRS and scale (the reference for every store)."""
    grid, _ = gridlib.plan_grid(gridlib.parse_bbox(w["bbox"]), w["data"].crs, 10.0)
    return grid


def expected_crs(w) -> pyproj.CRS:
    return pyproj.CRS.from_user_input(w["data"].crs)


def metadata(path, name: str) -> dict:
    """An array's own zarr.json, read as a file (not through zarr)."""
    return json.loads((pathlib.Path(path) / name / "zarr.json").read_text())


def gridded(path) -> dict[str, list[str]]:
    """The store's data arrays with y and x dims (what GDAL shows as rasters) -> their dims, from
    the arrays' own zarr.json files."""
    root = pathlib.Path(path)
    found = {}
    for meta in sorted(root.glob("*/zarr.json")):
        doc = json.loads(meta.read_text())
        dims = doc.get("dimension_names") or []
        if doc["node_type"] == "array" and {"y", "x"} <= set(dims) and len(dims) >= 2:
            found[meta.parent.name] = list(dims)
    assert found, f"{path}: no Zarr 3 array with y and x dims"  # never a vacuous pass
    return found


def raw(path, name) -> np.ndarray:
    return zarr.open_group(str(path), mode="r")[name][...]


def leading_indices(dims: list[str], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The (time[, band]) indices of the classic views to read: every one, but for the 64 bands
    of an embedding array only the first, one in the middle and the last (each view is three
    GDAL runs)."""
    ranges = []
    for d, n in zip(dims[:-2], shape[:-2]):
        ranges.append(sorted({0, n // 2, n - 1}) if d == "band" else range(n))
    return list(itertools.product(*ranges))


def test_the_stores_are_zarr3_on_the_planned_grid(world):
    """What the GDAL and rioxarray tests rely on: Zarr 3 convention stores, (..., y, x) arrays
    sharded with inner chunks, x/y the centres of the grid planned from the bbox."""
    grid = planned(world)
    for name, path in stores(world).items():
        assert json.loads((pathlib.Path(path) / "zarr.json").read_text())["zarr_format"] == 3
        arrays = gridded(path)
        for var, dims in arrays.items():
            assert dims[-2:] == ["y", "x"], (name, var, dims)
            codecs = metadata(path, var)["codecs"]
            assert [c["name"] for c in codecs] == ["sharding_indexed"], (name, var, codecs)
        x, y = raw(path, "x"), raw(path, "y")
        np.testing.assert_allclose(x, grid.x0 + (np.arange(grid.width) + 0.5) * grid.scale)
        np.testing.assert_allclose(y, grid.y0 - (np.arange(grid.height) + 0.5) * grid.scale)
    assert gridded(world["stores"]["int8"]) == {"embedding": ["time", "band", "y", "x"]}
    assert set(gridded(world["products"]["classes"])) == {"class", "confidence"}


# ---------------------------------------------------------------- the proj:/spatial:/geoemb: conventions


@pytest.mark.parametrize("name", STORES)
def test_every_store_passes_the_conventions_v1_schemas(world, name):
    path = stores(world)[name]
    validate_store(path)  # no allowance: efm's own stores are conformant
    attrs = zarr.open_group(path, mode="r").attrs
    registered = {c["uuid"] for c in attrs["zarr_conventions"]}
    wanted = {"proj:", "spatial:"} | ({"geoemb:"} if name.startswith("embeddings") else set())
    assert registered == {CONVENTIONS[p][0] for p in wanted}, name
    assert pyproj.CRS.from_user_input(attrs["proj:code"]).equals(expected_crs(world))
    assert affine.Affine(*attrs["spatial:transform"]) == planned(world).transform
    if name.startswith("embeddings"):
        dtype = name.split("-")[1]
        assert attrs["geoemb:data_type"] == dtype and attrs["geoemb:dimensions"] == 64
        assert ("geoemb:quantization" in attrs) == (dtype == "int8")
    else:
        assert not [k for k in attrs if k.startswith("geoemb:")], name


def test_the_conventions_check_catches_an_efm_store_that_breaks_them(world, tmp_path):
    """The check above is not vacuous on efm's own layout: a copy with proj:wkt2 beside
    proj:code (geo-proj v1 takes one) fails."""
    path = shutil.copytree(world["stores"]["int8"], tmp_path / "s.zarr")
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["proj:wkt2"] = expected_crs(world).to_wkt()
    with pytest.raises(AssertionError, match="proj: schema"):
        validate_store(path)


def test_geographic_crs_axes():
    """A lon/lat store's x/y are longitude/latitude for GDAL, and the code is EPSG:4326."""
    attrs = geozarr.axis_attrs(pyproj.CRS("EPSG:4326"))
    assert attrs["x"]["standard_name"] == "longitude" and attrs["y"]["standard_name"] == "latitude"
    got = geozarr.convention_attrs("EPSG:4326", affine.Affine(0.5, 0, -10, 0, -0.5, 50), 4, 6)
    assert got["proj:code"] == "EPSG:4326" and got["spatial:bbox"] == [-10.0, 48.0, -7.0, 50.0]
    assert "proj:wkt2" not in got  # geo-proj v1: one CRS field


def test_a_crs_without_an_authority_code_is_recorded_as_wkt2_alone():
    crs = pyproj.CRS.from_proj4("+proj=aea +lat_1=29.5 +lat_2=45.5 +lon_0=-96 +datum=WGS84")
    got = geozarr.convention_attrs(crs, affine.Affine(30, 0, 0, 0, -30, 0), 4, 6)
    assert "proj:code" not in got and pyproj.CRS.from_wkt(got["proj:wkt2"]).equals(crs)


# ---------------------------------------------------------------- GDAL >= 3.13


@pytest.mark.parametrize("name", STORES)
def test_gdal_mdiminfo_names_dims_srs_and_inner_chunks(world, name):
    gdal.require_gdal()
    path = stores(world)[name]
    info = gdal.mdiminfo(path)
    arrays = gridded(path)
    assert set(arrays) <= set(info["arrays"]), (name, sorted(info["arrays"]))
    for var, dims in arrays.items():
        got, meta = info["arrays"][var], metadata(path, var)
        assert got["dimensions"] == [f"/{d}" for d in dims], (name, var)
        assert got["dimension_size"] == meta["shape"], (name, var)
        inner = meta["codecs"][0]["configuration"]["chunk_shape"]  # the sharding codec's
        assert got["block_size"] == inner, (name, var)  # GDAL reads inside a shard
        assert pyproj.CRS.from_wkt(got["srs"]["wkt"]).equals(expected_crs(world)), (name, var)
    types = {d["name"]: d.get("type") for d in info["dimensions"]}
    assert types["x"] == "HORIZONTAL_X" and types["y"] == "HORIZONTAL_Y", (name, types)


@pytest.mark.parametrize("name", STORES)
def test_gdal_classic_view_is_y_by_x_with_transform_crs_and_values(world, name):
    gdal.require_gdal()
    path, grid = stores(world)[name], planned(world)
    for var, dims in gridded(path).items():
        values = raw(path, var)
        for index in leading_indices(dims, values.shape):
            where = f"{name}/{var}{list(index)}"
            view = gdal.classic_view(path, var, *index)
            assert (view.width, view.height, view.count) == (grid.width, grid.height, 1), where
            assert view.crs.equals(expected_crs(world)), where
            assert view.transform.almost_equals(grid.transform, precision=1e-6), (where, view)
            got = gdal.read_classic(path, var, *index)
            np.testing.assert_array_equal(got, values[index].astype(np.float64), err_msg=where)


# ---------------------------------------------------------------- rioxarray (xarray.open_zarr)


@pytest.mark.parametrize("name", STORES)
def test_rioxarray_reads_crs_transform_and_values(world, name):
    import rioxarray  # noqa: F401  (registers .rio)

    path, grid = stores(world)[name], planned(world)
    ds = xr.open_zarr(path, decode_coords="all", mask_and_scale=False)
    for var, dims in gridded(path).items():
        da = ds[var]
        assert list(da.dims) == dims, (name, var)
        assert da.rio.crs is not None and pyproj.CRS(da.rio.crs.to_wkt()).equals(
            expected_crs(world)
        ), (name, var)
        assert da.rio.transform().almost_equals(grid.transform, precision=1e-6), (name, var)
        assert (da.rio.width, da.rio.height) == (grid.width, grid.height), (name, var)
        np.testing.assert_array_equal(da.values, raw(path, var), err_msg=f"{name}/{var}")


# ---------------------------------------------------------------- stores efm wrote before (Zarr 2)


def debian_gdal(*args) -> str:
    if shutil.which(args[0]) is None:
        pytest.fail(GDAL_BIN_MISSING)  # never a silent skip: `make test` installs it
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ERROR" not in done.stderr, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_old_v2_stores_still_open_in_debian_gdal_3_6(tmp_path, dtype):
    """What users' stores from before issue 17 are (Zarr 2, `embedding (time, y, x, band)`):
    Debian 12's GDAL 3.6 reads their CRS, dims, geotransform and values as before."""
    path = str(tmp_path / "old.zarr")
    made = store_factory.make_store(path, layout="v2", dtype=dtype, height=90, width=70)
    assert json.loads((pathlib.Path(path) / ".zgroup").read_text())["zarr_format"] == 2
    version = debian_gdal("gdalinfo", "--version").split(",")[0]
    info = json.loads(debian_gdal("gdalmdiminfo", "-detailed", path))
    emb = info["arrays"]["embedding"]
    assert pyproj.CRS.from_wkt(emb["srs"]["wkt"]).equals(pyproj.CRS(made.grid.crs)), version
    assert emb["dimensions"] == ["/time", "/y", "/x", "/band"]
    assert info["arrays"]["band"]["values"] == list(store_factory.BANDS)
    want = raw(path, "embedding")
    for t in range(len(made.years)):
        out = str(tmp_path / f"{t}.tif")
        # bands first, then one year: (band, y, x)
        spec = f"name=embedding,transpose=[0,3,1,2],view=[{t},:,:,:]"
        debian_gdal("gdalmdimtranslate", "-q", path, out, "-array", spec)
        tif = json.loads(debian_gdal("gdalinfo", "-json", out))
        crs = pyproj.CRS.from_wkt(tif["coordinateSystem"]["wkt"])
        assert crs.equals(pyproj.CRS(made.grid.crs)), version
        assert affine.Affine.from_gdal(*tif["geoTransform"]).almost_equals(
            made.grid.transform, precision=1e-6
        ), (version, tif["geoTransform"])
        import rasterio

        with rasterio.open(out) as src:
            got = src.read()
        np.testing.assert_array_equal(got, np.moveaxis(want[t], -1, 0), err_msg=version)


# ------------------------------------------------ stores from before fixed-width band names (object band, no GeoZarr attrs)


def v2_copy(w, src: str, dst: str) -> str:
    """The extract at `src` as efm wrote it before issue 17 (Zarr 2, `embedding (time, y, x,
    band)`), each chunk written by efm's own v2 chunk writer with its done marker, as a run of
    that version left it."""
    grid, years = planned(w), [2022, 2023]
    attrs = dict(zarr.open_group(src, mode="r").attrs)
    template = store.embedding_template(
        grid, years, store_factory.BANDS, "float32", 128, {k: v for k, v in attrs.items()}
    )
    store_factory.write_v2(dst, template)
    old = xr.open_zarr(dst, consolidated=True, zarr_format=2, mask_and_scale=False)
    chunks = {"time": 1, "y": 128, "x": 128, "band": 64}
    writer = zarr_direct.ChunkWriter(dst, old, chunks)
    values = store_factory.raw_embedding(src)  # (time, y, x, band)
    os.makedirs(os.path.join(dst, store.MARKER_DIR))
    for t, row, col in itertools.product(
        range(len(years)), range(0, grid.height, 128), range(0, grid.width, 128)
    ):
        block = values[t : t + 1, row : row + 128, col : col + 128]
        chunk = xr.Dataset({"embedding": (("time", "y", "x", "band"), block)})
        records = writer.write({"time": t, "y": row, "x": col, "band": 0}, chunk)
        marker = pathlib.Path(dst, store.MARKER_DIR, f"{t}.{row}.{col}")
        marker.write_bytes(integrity.marker_bytes(records))
    store.set_status(dst, "complete")
    return dst


def to_previous_layout(path: str) -> None:
    """Rewrite a store as efm wrote it before: `band` an object (vlen string) array, no GeoZarr or axis attributes."""
    group = zarr.open_group(path, mode="r+", zarr_format=2)
    bands, group_attrs = [str(b) for b in group["band"][...]], dict(group.attrs)
    shutil.rmtree(pathlib.Path(path) / "band")
    xr.Dataset(coords={"band": np.array(bands, dtype=object)}).to_zarr(
        path, mode="a", zarr_format=2, consolidated=False
    )
    group = zarr.open_group(path, mode="r+", zarr_format=2)
    group.attrs.update(group_attrs)  # (xarray's append wrote the group's attrs too)
    for node in [group, *(array for _, array in group.arrays())]:
        for key in set(node.attrs) & (
            set(GEOZARR_KEYS) | {"standard_name", "long_name", "units", "axis"}
            if node.name in ("/x", "/y")
            else set(GEOZARR_KEYS)
        ):
            del node.attrs[key]
    store.set_status(path, group.attrs[store.STATUS_ATTR])  # re-consolidates
    assert json.loads((pathlib.Path(path) / "band" / ".zarray").read_text())["dtype"] == "|O"


@pytest.fixture(scope="module")
def previous(world, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("previous") / "emb.zarr")
    v2_copy(world, world["stores"]["float32"], path)
    to_previous_layout(path)
    return path


def test_previous_stores_are_read_sampled_and_classified(world, previous, tmp_path):
    ds = store.open_embeddings(previous)
    assert [str(b) for b in ds["band"].values] == list(store_factory.BANDS)
    table, model = str(tmp_path / "t.parquet"), str(tmp_path / "m.skops")
    argv = ["--embeddings", previous, "--points", world["data"].points, "--label-column", "label"]
    assert sample.run([*argv, "--output", table, *FNAPI]) == 0
    argv = ["--samples", table, "--classifier", "knn", "--tuning", "folds=3", "--output", model]
    assert train.run(argv) == 0
    out = str(tmp_path / "classes.zarr")
    argv = ["--embeddings", previous, "--model", model, "--output", out, "--confidence"]
    assert classify.run([*argv, *FNAPI]) == 0
    # same data, same map
    np.testing.assert_array_equal(raw(out, "class"), raw(world["products"]["classes"], "class"))
    validate_store(out)  # the map is written in today's layout, conventions and all


def test_previous_store_resumes_as_it_was_written(world, previous, tmp_path, capsys):
    """Not refused for its band dtype, finished with the same values, and left in its own layout (no half-new metadata)."""
    path = str(shutil.copytree(previous, tmp_path / "emb.zarr"))
    done = pathlib.Path(path) / ".efm" / "done"
    for marker in sorted(os.listdir(done))[::2]:
        (done / marker).unlink()
    store.set_status(path, "incomplete")
    before = json.loads((pathlib.Path(path) / ".zmetadata").read_text())["metadata"]
    existing = xr.open_zarr(path, mask_and_scale=False)
    template = store.embedding_template(
        planned(world), [2022, 2023], store_factory.BANDS, "float32", 128, dict(existing.attrs)
    )
    assert template["band"].dtype != existing["band"].dtype
    assert resume.differences(existing, template) == []
    capsys.readouterr()
    assert extract.run(extract_argv(world, path) + ["--resume"]) == 0, capsys.readouterr().err
    assert "chunks already done (resume)" in capsys.readouterr().out
    np.testing.assert_array_equal(
        store_factory.raw_embedding(path), store_factory.raw_embedding(world["stores"]["float32"])
    )
    after = json.loads((pathlib.Path(path) / ".zmetadata").read_text())["metadata"]
    before[".zattrs"][store.STATUS_ATTR] = "complete"
    assert after == before
    assert json.loads((pathlib.Path(path) / "band" / ".zarray").read_text())["dtype"] == "|O"
