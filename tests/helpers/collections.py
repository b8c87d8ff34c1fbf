"""A small two-zone collection for tests: UTM 31N and 32N across the 6 E seam, near 45 N.

Each member is a `store_factory.make_store` store over its part of the area, in its own zone's
CRS, with the pixels whose footprint lies wholly outside its cell set to no data (the rule of
transforms/core/zones.py, computed here directly from each pixel's four corners with pyproj).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pyproj
import rasterio
import zarr

from tests.helpers.store_factory import SyntheticStore, make_store
from transforms.core import quantize
from transforms.core.zones import Cell
from transforms.storage import collection as collectionlib

SEAM_LON = 6.0
AREA = (5.975, 45.0, 6.025, 45.02)  # W, S, E N: about 4 x 2.2 km, half each side of the seam
CELLS = (("31N", "EPSG:32631", 0.0, 6.0), ("32N", "EPSG:32632", 6.0, 12.0))


@dataclasses.dataclass
class TestCollection:
    root: str
    members: dict[str, SyntheticStore]  # cell name -> its store (values with the seam masked)
    owned: dict[str, np.ndarray]  # cell name -> (y, x) True where the pixel's centre is in the cell


def _corner_lonlat(crs: str, x0: float, y0: float, scale: float, height: int, width: int):
    xs = x0 + np.arange(width + 1) * scale
    ys = y0 - np.arange(height + 1) * scale
    return pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        *np.meshgrid(xs, ys)
    )


def make_collection(
    root: str,
    *,
    years=(2021, 2022),
    dtype: str = "float32",
    chunk_size: int = 64,
    area=AREA,
    kind: str = "embeddings",
) -> TestCollection:
    os.makedirs(root, exist_ok=True)
    west, south, east, north = area
    members, owned, index = {}, {}, []
    for i, (name, crs, cell_w, cell_e) in enumerate(CELLS):
        part = (max(west, cell_w), south, min(east, cell_e), north)
        to_crs = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        lon = np.linspace(part[0], part[2], 50)
        lat = np.linspace(part[1], part[3], 50)
        lons, lats = np.meshgrid(lon, lat)
        xs, ys = to_crs.transform(lons, lats)
        x0, y0 = math.floor(xs.min() / 10) * 10, math.ceil(ys.max() / 10) * 10
        width = math.ceil((xs.max() - x0) / 10)
        height = math.ceil((y0 - ys.min()) / 10)
        path = os.path.join(root, collectionlib.member_name(Cell.from_name(name)))
        s = make_store(
            path,
            years=years,
            height=height,
            width=width,
            chunk_size=chunk_size,
            dtype=dtype,
            crs=crs,
            x0=float(x0),
            y0=float(y0),
            seed=i,
        )
        clon, clat = _corner_lonlat(crs, x0, y0, 10.0, height, width)
        corners = [clon[:-1, :-1], clon[:-1, 1:], clon[1:, :-1], clon[1:, 1:]]
        lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
        keep = (hi >= cell_w) & (lo < cell_e)  # the footprint touches the cell (all N of 0)
        # the centre itself, projected, for the counting rule
        cx = x0 + (np.arange(width) + 0.5) * 10
        cy = y0 - (np.arange(height) + 0.5) * 10
        ccl, _ = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            *np.meshgrid(cx, cy)
        )
        owned[name] = (ccl >= cell_w) & (ccl < cell_e)
        group = zarr.open_group(path, mode="r+")
        stored = group["embedding"][...]  # (time, band, y, x)
        fill = quantize.fill_value(dtype)
        stored[:, :, ~keep] = fill
        group["embedding"][...] = stored
        s.values[:, ~keep, :] = np.nan
        s.labels[:, ~keep] = -1
        members[name] = s
        index.append(collectionlib.Member(name, crs, os.path.basename(path), part))
    collectionlib.write(
        collectionlib.Collection(
            root=root, kind=kind, members=tuple(index), years=tuple(years), area_lonlat=area
        )
    )
    return TestCollection(root, members, owned)


def check_vrt(tc, vrt, zone_values):
    """The VRT opens in EPSG:4326 over the whole area; at every pixel centre its value is the
    owning zone's (the zone array indexed by the reference's rule), no data where none has it."""
    with rasterio.open(vrt) as src:
        assert src.crs.to_epsg() == 4326
        w, s, e, nn = src.bounds
        assert w <= 5.975 + 1e-9 and e >= 6.025 - 1e-4 and s <= 45.0 + 1e-4 and nn >= 45.02
        data = src.read(1)
        rows, cols = np.mgrid[0 : src.height, 0 : src.width]
        lon, lat = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
        lon, lat = np.reshape(lon, rows.shape), np.reshape(lat, rows.shape)
        fill = src.nodata
    want = reference_lonlat(tc, zone_values, lon, lat, fill, min_hits=1000, dtype=data.dtype)
    np.testing.assert_array_equal(data, want)


def reference_lonlat(tc, zone_arrays, lon, lat, fill, min_hits: int = 0, dtype=None):
    """zone_arrays[name]: (y, x) of that member; values by the rule at points (lon, lat): each
    point takes the nearest pixel of the zone whose cell holds it (pyproj, the member's grid).
    min_hits: each zone must give more points than this; dtype: the result's (default: the
    zone arrays')."""
    if dtype is None:
        dtype = np.asarray(next(iter(zone_arrays.values()))).dtype
    out = np.full(lon.shape, fill, dtype=dtype)
    for name, cell_crs, west, east in CELLS:
        own = (lon >= west) & (lon < east)
        x, y = pyproj.Transformer.from_crs("EPSG:4326", cell_crs, always_xy=True).transform(
            lon[own], lat[own]
        )
        g = tc.members[name].grid
        col = np.floor((x - g.x0) / g.scale).astype(int)
        row = np.floor((g.y0 - y) / g.scale).astype(int)
        ok = (row >= 0) & (row < g.height) & (col >= 0) & (col < g.width)
        assert ok.sum() > min_hits, (name, int(ok.sum()))
        out[tuple(a[ok] for a in np.nonzero(own))] = zone_arrays[name][row[ok], col[ok]]
    return out
