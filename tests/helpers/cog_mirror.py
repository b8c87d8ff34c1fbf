"""The COG mirror's independent reference, and helpers for tests that read a sample mirror.

`lookup`: for every target pixel centre, transform it exactly (pyproj) into each file's CRS, take
the file pixel containing it through the file's own geotransform (whatever its row direction),
mosaic the files the way the contract says (files in the grid's CRS first, then the first with
data). No GDAL warping, no window arithmetic: nothing shared with transforms/sources/cog*.py but
the files (read with rasterio).
"""

from __future__ import annotations

import glob
import itertools
import json
import os

import numpy as np
import pyproj
import rasterio
import xarray as xr

from sample_data import embedding as sample_embedding
from sample_data import generate as sample_data
from sample_data import world as sample_world
from transforms.core import quantize
from transforms.core.chunks import ChunkSpec
from transforms.core.grid import Grid, Window
from transforms.sources import cog, cog_index

BANDS = sample_embedding.BANDS


NODATA = -128


EDGE = 0.01  # file pixels: a target centre this close to a source pixel edge may go either way


def _file_arrays(paths):
    arrays = {}
    for path in paths:
        with rasterio.open(path) as ds:
            arrays[path] = (np.moveaxis(ds.read(), 0, -1), ds.transform, f"EPSG:{ds.crs.to_epsg()}")
    return arrays


_LOOKUP_CACHE: dict = {}  # the last set of files read by lookup(): tests ask for many windows of one set


def lookup(grid: Grid, window: Window, paths: list[str], offset=(0.0, 0.0)):
    """(rows, cols, bands) int8 codes of `window`, and which pixels came from another CRS."""
    key = tuple(sorted(paths))
    if key not in _LOOKUP_CACHE:
        _LOOKUP_CACHE.clear()
        _LOOKUP_CACHE[key] = _file_arrays(paths)
    arrays = _LOOKUP_CACHE[key]
    rows, cols = np.mgrid[
        window.row : window.row + window.rows, window.col : window.col + window.cols
    ]
    xs = grid.x0 + (cols + 0.5) * grid.scale
    ys = grid.y0 - (rows + 0.5) * grid.scale
    n_bands = next(iter(arrays.values()))[0].shape[-1] if arrays else 64
    out = np.full((window.rows, window.cols, n_bands), NODATA, dtype=np.int8)
    foreign = np.zeros((window.rows, window.cols), dtype=bool)
    order = sorted(arrays, key=lambda p: arrays[p][2] != grid.crs)
    for path in order:
        data, transform, crs = arrays[path]
        if crs == grid.crs:
            fx, fy = xs, ys
        else:
            fx, fy = pyproj.Transformer.from_crs(grid.crs, crs, always_xy=True).transform(xs, ys)
        fc, fr = sample_world.apply(~transform, fx, fy)
        c = np.floor(fc + offset[0]).astype(np.intp)
        r = np.floor(fr + offset[1]).astype(np.intp)
        inside = (r >= 0) & (r < data.shape[0]) & (c >= 0) & (c < data.shape[1])
        values = np.full(out.shape, NODATA, dtype=np.int8)
        values[inside] = data[r[inside], c[inside]]
        take = (out[..., 0] == NODATA) & (values != NODATA).all(axis=-1)
        out[take] = values[take]
        foreign |= take & (crs != grid.crs)
    return out, foreign


def check_nearest(got: np.ndarray, grid: Grid, window: Window, paths: list[str]) -> dict:
    """Assert `got` (int8 codes) is the exact nearest-pixel mosaic, allowing only target
    centres within EDGE of a source pixel edge (reprojected pixels) to take the pixel on
    the other side. Returns counts for further assertions."""
    expected, foreign = lookup(grid, window, paths)
    same = (got == expected).all(axis=-1)
    if not same.all():
        variants = [
            lookup(grid, window, paths, (dx, dy))[0]
            for dx, dy in itertools.product((-EDGE, 0.0, EDGE), repeat=2)
        ]
        near_edge_ok = np.zeros_like(same)
        for v in variants:
            near_edge_ok |= (got == v).all(axis=-1)
        bad = ~same & ~(near_edge_ok & foreign)
        assert not bad.any(), (
            f"{bad.sum()} pixels differ from the exact nearest look-up (first at {np.argwhere(bad)[0]})"
        )
    return {
        "pixels": same.size,
        "differ_at_edges": int((~same).sum()),
        "foreign": int(foreign.sum()),
        "nodata": int((expected[..., 0] == NODATA).sum()),
        "expected": expected,
    }


YEARS = (2022, 2023)


SPEC = sample_data.SampleSpec(**sample_data.SMALL)


def reference_grid(data) -> Grid:
    manifest = json.load(open(data.manifest))
    a, _, c, _, e, f = manifest["transform"]
    spec = manifest["spec"]
    return Grid(crs=manifest["crs"], scale=a, x0=c, y0=f, width=spec["cols"], height=spec["rows"])


def make_source(root: str, grid: Grid, dtype: str, years=YEARS) -> cog.CogSource:
    index = cog_index.read_index(root)
    source = cog.make_source(
        grid, list(years), BANDS, dtype, root, index[index["year"].isin(years)]
    )
    source.setup()
    return source


def fetch(source: cog.CogSource, window: Window, year: int) -> np.ndarray:
    return source.fetch(ChunkSpec(0, source.years.index(year), year, window), window)


def files_of(source: cog.CogSource, year: int) -> list[str]:
    return [f.path for f in source.files if f.year == year]


def files_touching(
    source: cog.CogSource, window: Window, year: int, native_only: bool = False
) -> set[str]:
    bounds = source.grid.window_bounds(window)
    return {
        f.path
        for f in source.files
        if f.year == year and f.intersects(bounds) and (f.crs == source.grid.crs or not native_only)
    }


def assert_reads_match_files(root: str, grid: Grid, window: Window, year: int) -> dict:
    """int8 codes are the exact nearest-pixel mosaic; float32 is their de-quantisation."""
    codes = fetch(make_source(root, grid, "int8"), window, year)
    assert codes.dtype == np.int8 and codes.shape == (window.rows, window.cols, 64)
    paths = files_of(make_source(root, grid, "int8"), year)
    counts = check_nearest(codes, grid, window, paths)
    values = fetch(make_source(root, grid, "float32"), window, year)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(
        values, quantize.dequantize(codes)
    )  # NaN where -128, in the same places
    expected_values = quantize.dequantize(counts["expected"])
    exact = (codes == counts["expected"]).all(axis=-1)
    np.testing.assert_array_equal(values[exact], expected_values[exact])
    return counts


def sample_data_aoi(data):
    from transforms.core import grid as gridlib

    return gridlib.parse_bbox(bbox_arg(data))


def bbox_arg(data) -> str:
    return ",".join(repr(v) for v in data.bbox)


def grid_of(ds: xr.Dataset) -> Grid:
    x, y = ds["x"].values, ds["y"].values
    scale = float(x[1] - x[0])
    return Grid(
        crs=ds.attrs["crs"],
        scale=scale,
        x0=float(x[0] - scale / 2),
        y0=float(y[0] + scale / 2),
        width=len(x),
        height=len(y),
    )


def mirror_files(root: str, year: int) -> list[str]:
    """The mirror's files of one year, found on disk (`<root>/<year>/<zone>/*.tiff`), not through
    the index reader under test."""
    return sorted(glob.glob(os.path.join(root, str(year), "*", "*.tif*")))


def dequantize_reference(codes: np.ndarray) -> np.ndarray:
    """AEF's published de-quantisation, written out here: (code / 127.5)^2 * sign(code), -128 NaN."""
    c = np.asarray(codes, dtype=np.float64)
    return np.where(c == NODATA, np.nan, np.sign(c) * (c / 127.5) ** 2).astype(np.float32)


def assert_store_is_the_mirror(path: str, root: str, years) -> None:
    """Every pixel of the float32 embedding store at `path` is the nearest mirror pixel of its year,
    de-quantised (codes from the files via `check_nearest`, values by `dequantize_reference`)."""
    ds = xr.open_zarr(path, mask_and_scale=False).transpose("time", "y", "x", "band")
    grid = grid_of(ds)
    whole = Window(0, 0, grid.height, grid.width)
    assert [int(str(t)[:4]) for t in ds["time"].values] == list(years)
    for t, year in enumerate(years):
        values = ds["embedding"].isel(time=t).values
        codes = quantize.quantize(values)
        np.testing.assert_array_equal(dequantize_reference(codes), values)  # a code per value
        counts = check_nearest(codes, grid, whole, mirror_files(root, year))
        assert counts["pixels"] - counts["nodata"] > 0  # not a store of no data
