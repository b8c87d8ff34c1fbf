"""Every store efm writes opens in GDAL's Zarr driver with its CRS and geotransform, and speaks GeoZarr.

Two GDALs read each store: rasterio's bundled GDAL (3.10) through `ZARR:"path":/var`, and Debian's
gdal-bin (3.6; `make test` installs it, scripts/gdal_bin.sh) as subprocesses: `gdalmdiminfo` for the
arrays' CRS and dimensions, `gdalmdimtranslate` to a GeoTIFF for the geotransform and the values.
Expected values come from elsewhere: the CRS from the extract flags, the transform from the store's
own x/y coordinate arrays (and the grid planned from the bbox), the pixel values from zarr-python.
Stores written before the band names were fixed-width (an object `band` coordinate, no GeoZarr
attributes) are still read, sampled, classified and resumed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import affine
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
import zarr
from sklearn.linear_model import Ridge

from pipelines import change, classify, extract, predict, sample, similarity, train
from sample_data import generate as sample_data
from transforms.core import grid as gridlib
from transforms.core.grid import Grid
from transforms.learning import models
from transforms.storage import geozarr, resume, store

FNAPI = ["--runner=FnApiRunner"]
SPEC_PROJ_UUID = (
    "f17cb550-5864-4468-aeb7-f3180cfb622f"  # from the published specs (v0.1), not from the code
)
SPEC_SPATIAL_UUID = "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4"
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
GDAL_BIN_MISSING = "Debian's gdal-bin (gdalmdiminfo, gdalmdimtranslate) is not installed: run `scripts/gdal_bin.sh` as root (`make test` does)"


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
    assert (
        sample.run(
            [
                "--embeddings",
                emb,
                "--points",
                data.points,
                "--label-column",
                "label",
                "--output",
                table,
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        train.run(["--samples", table, "--classifier", "knn", "--folds", "3", "--output", model])
        == 0
    )
    products = {
        name: str(root / f"{name}.zarr")
        for name in ("classes", "change", "similarity", "prediction")
    }
    assert (
        classify.run(
            [
                "--embeddings",
                emb,
                "--model",
                model,
                "--output",
                products["classes"],
                "--confidence",
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        change.run(
            [
                "--embeddings",
                emb,
                "--from-year",
                "2022",
                "--to-year",
                "2023",
                "--threshold",
                "0.8",
                "--output",
                products["change"],
                *FNAPI,
            ]
        )
        == 0
    )
    refs = os.path.join(data.output, "refs.geojson")
    assert (
        similarity.run(
            [
                "--embeddings",
                emb,
                "--points",
                refs,
                "--threshold",
                "0.8",
                "--output",
                products["similarity"],
                *FNAPI,
            ]
        )
        == 0
    )
    regressor = str(root / "ridge.pkl")
    values = xr.open_zarr(emb)["embedding"].isel(time=0).values.reshape(-1, 64)
    values = values[~np.isnan(values).any(axis=1)][:300]
    bands = [str(b) for b in xr.open_zarr(emb)["band"].values]
    sha = models.save_model(
        Ridge().fit(values, values[:, 0] * 100),
        regressor,
        {"kind": "regressor", "bands": bands, "target": "agbd", "units": "Mg/ha"},
    )["sha256"]
    assert (
        predict.run(
            [
                "--embeddings",
                emb,
                "--model",
                regressor,
                "--model-sha256",
                sha,
                "--output",
                products["prediction"],
                *FNAPI,
            ]
        )
        == 0
    )
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
        "--chunk-size",
        "128",
        "--dtype",
        dtype,
        "--scale",
        "10",
        "--max-concurrent-requests",
        "2",
        *FNAPI,
    ]


def stores(w) -> dict[str, str]:
    return {**{f"embeddings-{k}": v for k, v in w["stores"].items()}, **w["products"]}


def variables(path) -> list[str]:
    """The store's data variables with y/x dims (what GDAL should see as rasters), from the raw Zarr metadata."""
    group = zarr.open_group(path, mode="r", zarr_format=2)
    return [
        name
        for name, array in group.arrays()
        if {"y", "x"} <= set(array.attrs.get("_ARRAY_DIMENSIONS", ())) and name not in ("x", "y")
    ]


def coords_transform(path) -> affine.Affine:
    """The grid's affine computed from the stored x/y pixel-centre arrays alone."""
    group = zarr.open_group(path, mode="r", zarr_format=2)
    x, y = group["x"][...].astype(np.float64), group["y"][...].astype(np.float64)
    dx, dy = x[1] - x[0], y[1] - y[0]
    assert np.allclose(np.diff(x), dx) and np.allclose(np.diff(y), dy)
    return affine.Affine(dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2)


def expected_epsg(w) -> int:
    return pyproj.CRS.from_user_input(w["data"].crs).to_epsg()


def dims(path, name) -> list[str]:
    return list(zarr.open_group(path, mode="r", zarr_format=2)[name].attrs["_ARRAY_DIMENSIONS"])


def raw(path, name) -> np.ndarray:
    return zarr.open_group(path, mode="r", zarr_format=2)[name][...]


def test_the_stores_are_on_the_planned_grid(world):
    """The reference the GDAL tests use: x/y coords give the grid planned from the bbox."""
    grid, _ = gridlib.plan_grid(gridlib.parse_bbox(world["bbox"]), world["data"].crs, 10.0)
    for name, path in stores(world).items():
        assert coords_transform(path).almost_equals(grid.transform, precision=1e-6), name
        group = zarr.open_group(path, mode="r", zarr_format=2)
        assert (group["y"].shape[0], group["x"].shape[0]) == (grid.height, grid.width), name


# ---------------------------------------------------------------- rasterio's GDAL (3.10)


@pytest.mark.parametrize(
    "name",
    ["embeddings-float32", "embeddings-int8", "classes", "change", "similarity", "prediction"],
)
def test_bundled_gdal_opens_every_variable_with_crs_transform_and_values(world, name):
    path = stores(world)[name]
    assert variables(path), name
    for var in variables(path):
        with rasterio.open(f'ZARR:"{path}":/{var}') as src:
            assert src.crs.to_epsg() == expected_epsg(world), (name, var)
            assert src.transform.almost_equals(coords_transform(path), precision=1e-6), (
                name,
                var,
                src.transform,
            )
            data = src.read()
            tags = [src.tags(i + 1) for i in range(src.count)]
        want = raw(path, var)
        names = dims(path, var)
        assert data.shape[1:] == (want.shape[names.index("y")], want.shape[names.index("x")])
        extra = [d for d in names if d not in ("y", "x")]
        assert src.count == int(np.prod([want.shape[names.index(d)] for d in extra], dtype=int))
        for band, tag in zip(
            data, tags
        ):  # each GDAL band is one index of the extra dims (time, band)
            index = tuple(
                slice(None) if d in ("y", "x") else int(tag[f"DIM_{d}_INDEX"]) for d in names
            )
            expected = want[index]
            if names.index("x") < names.index("y"):
                expected = expected.T
            np.testing.assert_array_equal(band, expected, err_msg=f"{name}/{var} {tag}")


# ---------------------------------------------------------------- Debian's gdal-bin (3.6)


def gdal_bin(*args) -> str:
    if shutil.which(args[0]) is None:
        pytest.fail(GDAL_BIN_MISSING)  # never a silent skip: `make test` installs it
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ERROR" not in done.stderr, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def gdal_bin_version() -> str:
    return gdal_bin("gdalinfo", "--version").split(",")[0]


@pytest.mark.parametrize(
    "name",
    ["embeddings-float32", "embeddings-int8", "classes", "change", "similarity", "prediction"],
)
def test_gdal_bin_mdiminfo_reads_the_store_with_crs_and_xy(world, name):
    path = stores(world)[name]
    info = json.loads(gdal_bin("gdalmdiminfo", "-detailed", path))
    arrays = info["arrays"]
    assert set(variables(path)) <= set(arrays), (name, sorted(arrays))
    for var in variables(path):
        array = arrays[var]
        assert pyproj.CRS.from_wkt(array["srs"]["wkt"]).to_epsg() == expected_epsg(world), (
            name,
            var,
        )
        assert array["dimensions"] == [f"/{d}" for d in dims(path, var)], (name, var)
    types = {d["name"]: d.get("type") for d in info["dimensions"]}  # from x/y's CF attributes
    assert types["x"] == "HORIZONTAL_X" and types["y"] == "HORIZONTAL_Y", (name, types)
    if name.startswith(
        "embeddings"
    ):  # the band coordinate no longer stops it ("unsupported format for dtype: |O")
        assert arrays["band"]["values"] == [f"A{i:02d}" for i in range(64)]


@pytest.mark.parametrize("name", ["embeddings-float32", "embeddings-int8", "classes", "change"])
def test_gdal_bin_translates_to_geotiff_with_crs_transform_and_values(world, name, tmp_path):
    """GDAL 3.6 reads each variable (every year) into a GeoTIFF: georeferenced as planned, same values as zarr."""
    path = stores(world)[name]
    for var in variables(path):
        names, want = dims(path, var), raw(path, var)
        times = range(want.shape[0]) if names[0] == "time" else [None]
        for t in times:
            out = str(tmp_path / f"{var}-{t}.tif")
            spec = f"name={var}"
            if names == ["time", "y", "x", "band"]:
                spec += f",transpose=[0,3,1,2],view=[{t},:,:,:]"  # bands first, then one year: (band, y, x)
            elif t is not None:
                spec += f",view=[{t},:,:]"
            gdal_bin("gdalmdimtranslate", "-q", path, out, "-array", spec)
            info = json.loads(gdal_bin("gdalinfo", "-json", out))
            assert pyproj.CRS.from_wkt(info["coordinateSystem"]["wkt"]).to_epsg() == expected_epsg(
                world
            ), (name, var)
            assert affine.Affine.from_gdal(*info["geoTransform"]).almost_equals(
                coords_transform(path), precision=1e-6
            ), (name, var, info["geoTransform"])
            with rasterio.open(out) as src:
                got = src.read()
            expected = want if t is None else want[t]
            expected = np.moveaxis(expected, -1, 0) if expected.ndim == 3 else expected[np.newaxis]
            np.testing.assert_array_equal(
                got, expected, err_msg=f"{name}/{var} year {t} ({gdal_bin_version()})"
            )


# ---------------------------------------------------------------- the proj:/spatial: conventions


def check_conventions(
    attrs: dict, crs: pyproj.CRS, transform: affine.Affine, shape: tuple[int, int], where: str
) -> None:
    registered = {c["uuid"]: c for c in attrs["zarr_conventions"]}
    assert set(registered) == {SPEC_PROJ_UUID, SPEC_SPATIAL_UUID}, where
    assert (
        registered[SPEC_PROJ_UUID]["name"] == "proj"
        and registered[SPEC_SPATIAL_UUID]["name"] == "spatial"
    ), where
    for (
        convention
    ) in registered.values():  # the spec allows these fields only; the URLs name the tagged release
        assert set(convention) <= {"uuid", "schema_url", "spec_url", "name", "description"}, where
        assert convention["schema_url"].endswith("/refs/tags/v0.1/schema.json") and convention[
            "spec_url"
        ].endswith("/blob/v0.1/README.md"), where
    assert pyproj.CRS.from_user_input(attrs["proj:code"]) == crs, where
    assert attrs["proj:code"] == f"EPSG:{crs.to_epsg()}", where
    assert pyproj.CRS.from_wkt(attrs["proj:wkt2"]) == crs, where
    assert attrs["spatial:dimensions"] == ["y", "x"], where
    a, b, c, d, e, f = attrs[
        "spatial:transform"
    ]  # rasterio/Affine order: x = a*col + b*row + c, y = d*col + e*row + f
    assert affine.Affine(a, b, c, d, e, f).almost_equals(transform, precision=1e-6), where
    assert attrs["spatial:shape"] == list(shape), where
    height, width = shape
    left, top = transform.c, transform.f
    np.testing.assert_allclose(
        attrs["spatial:bbox"],
        [left, top + height * transform.e, left + width * transform.a, top],
        err_msg=where,
    )
    assert (
        attrs.get("spatial:registration", "pixel") == "pixel"
        and attrs.get("spatial:transform_type", "affine") == "affine"
    ), where


@pytest.mark.parametrize(
    "name",
    ["embeddings-float32", "embeddings-int8", "classes", "change", "similarity", "prediction"],
)
def test_proj_and_spatial_attributes_agree_with_spatial_ref_and_coords(world, name):
    path = stores(world)[name]
    metadata = json.loads((pathlib.Path(path) / ".zmetadata").read_text())[
        "metadata"
    ]  # what any reader sees, raw
    spatial_ref = metadata["spatial_ref/.zattrs"]
    crs = pyproj.CRS.from_wkt(spatial_ref["crs_wkt"])
    assert crs.to_epsg() == expected_epsg(world)
    transform = coords_transform(path)
    assert affine.Affine.from_gdal(*map(float, spatial_ref["GeoTransform"].split())).almost_equals(
        transform, precision=1e-6
    )
    shape = (len(raw(path, "y")), len(raw(path, "x")))
    check_conventions(metadata[".zattrs"], crs, transform, shape, f"{name} group")
    for var in variables(path):
        attrs = metadata[f"{var}/.zattrs"]
        check_conventions(attrs, crs, transform, shape, f"{name}/{var}")
        assert set(attrs["spatial:dimensions"]) <= set(
            attrs["_ARRAY_DIMENSIONS"]
        )  # Zarr 2's dimension names
        assert pyproj.CRS.from_wkt(attrs["_CRS"]["wkt"]) == crs
    for coord in ("x", "y", "spatial_ref") + (("time",) if "time/.zattrs" in metadata else ()):
        assert not set(GEOZARR_KEYS) & set(metadata[f"{coord}/.zattrs"]), coord
    assert (
        metadata["x/.zattrs"]["standard_name"] == "projection_x_coordinate"
        and metadata["y/.zattrs"]["axis"] == "Y"
    )


def test_rioxarray_still_reads_crs_and_transform(world):
    import rioxarray  # noqa: F401

    for name, path in stores(world).items():
        ds = xr.open_zarr(path)
        assert ds.rio.crs.to_epsg() == expected_epsg(world) and ds.rio.transform().almost_equals(
            coords_transform(path), precision=1e-6
        ), name


def test_geographic_crs_axes():
    """A lon/lat store's x/y are longitude/latitude for GDAL, and the code is EPSG:4326."""
    attrs = geozarr.axis_attrs(pyproj.CRS("EPSG:4326"))
    assert attrs["x"]["standard_name"] == "longitude" and attrs["y"]["standard_name"] == "latitude"
    got = geozarr.convention_attrs("EPSG:4326", affine.Affine(0.5, 0, -10, 0, -0.5, 50), 4, 6)
    assert got["proj:code"] == "EPSG:4326" and got["spatial:bbox"] == [-10.0, 48.0, -7.0, 50.0]


# ---------------------------------------------------------------- stores written before (object band, no GeoZarr attrs)


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
    path = str(
        shutil.copytree(
            world["stores"]["float32"], tmp_path_factory.mktemp("previous") / "emb.zarr"
        )
    )
    to_previous_layout(path)
    return path


def test_previous_stores_are_read_sampled_and_classified(world, previous, tmp_path):
    ds = store.open_embeddings(previous)
    assert [str(b) for b in ds["band"].values] == [
        f"A{i:02d}" for i in range(64)
    ]  # (xarray reads |O as StringDType or object)
    table, model = str(tmp_path / "t.parquet"), str(tmp_path / "m.skops")
    assert (
        sample.run(
            [
                "--embeddings",
                previous,
                "--points",
                world["data"].points,
                "--label-column",
                "label",
                "--output",
                table,
                *FNAPI,
            ]
        )
        == 0
    )
    assert (
        train.run(["--samples", table, "--classifier", "knn", "--folds", "3", "--output", model])
        == 0
    )
    out = str(tmp_path / "classes.zarr")
    assert (
        classify.run(
            ["--embeddings", previous, "--model", model, "--output", out, "--confidence", *FNAPI]
        )
        == 0
    )
    np.testing.assert_array_equal(
        raw(out, "class"), raw(world["products"]["classes"], "class")
    )  # same data, same map
    check_conventions(
        xr.open_zarr(out).attrs,
        pyproj.CRS(world["data"].crs),
        coords_transform(out),
        (len(raw(out, "y")), len(raw(out, "x"))),
        "product of a previous store",
    )


def test_previous_store_resumes_as_it_was_written(world, previous, tmp_path, capsys):
    """Not refused for its band dtype, finished with the same values, and left in its own layout (no half-new metadata)."""
    path = str(shutil.copytree(previous, tmp_path / "emb.zarr"))
    done = pathlib.Path(path) / ".efm" / "done"
    for marker in sorted(os.listdir(done))[::2]:
        (done / marker).unlink()
    store.set_status(path, "incomplete")
    before = json.loads((pathlib.Path(path) / ".zmetadata").read_text())["metadata"]
    existing = xr.open_zarr(path, mask_and_scale=False)
    t = coords_transform(path)
    grid = Grid(
        crs=existing.attrs["crs"],
        scale=t.a,
        x0=t.c,
        y0=t.f,
        width=existing.sizes["x"],
        height=existing.sizes["y"],
    )
    template = store.embedding_template(
        grid, [2022, 2023], [f"A{i:02d}" for i in range(64)], "float32", 128, dict(existing.attrs)
    )
    assert (
        template["band"].dtype != existing["band"].dtype
        and resume.differences(existing, template) == []
    )
    capsys.readouterr()
    assert extract.run(extract_argv(world, path) + ["--resume"]) == 0, capsys.readouterr().err
    assert "chunks already done (resume)" in capsys.readouterr().out
    np.testing.assert_array_equal(
        raw(path, "embedding"), raw(world["stores"]["float32"], "embedding")
    )
    after = json.loads((pathlib.Path(path) / ".zmetadata").read_text())["metadata"]
    before[".zattrs"][store.STATUS_ATTR] = "complete"
    assert after == before
    assert json.loads((pathlib.Path(path) / "band" / ".zarray").read_text())["dtype"] == "|O"
