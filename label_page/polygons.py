"""Polygons drawn on the labelling page, sampled into the points `efm sample` reads.

A polygon arrives as a ring of (lon, lat) (EPSG:4326). It is transformed to the store's CRS; one
that is not valid (a ring crossing itself, a bow-tie) is FIXED with shapely's make_valid, not
refused: its polygonal parts are kept (a bow-tie becomes two triangles) and the page says so.
Its pixels are the store pixels whose centre lies inside it (GDAL's rasterize rule, as
rasterio.features.rasterize); `per_polygon` of them are taken (all when 0), MAX_PER_POLYGON at
most, picked at random with a seed of the polygon's id, so the same polygon gives the same points.
In the points file it is a Polygon feature (`efm_role: "polygon"`) followed by its points
(`efm_polygon: <id>`); `efm sample` reads the points and passes over the outline.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

MAX_PER_POLYGON = 1000
MAX_VERTICES = 2000
MAX_BBOX_PIXELS = 64_000_000  # a polygon's bounding box in store pixels (its mask: 64 MB)


class PolygonError(ValueError):
    """A polygon that cannot be sampled (the message says why)."""


@dataclasses.dataclass
class Sampled:
    id: str
    label: str
    ring: list  # [[lon, lat], ...] as drawn
    geometry: dict  # GeoJSON (EPSG:4326) of what was sampled: the ring, or its make_valid fix
    fixed: bool
    pixels: int  # store pixels inside
    rows: np.ndarray
    cols: np.ndarray


def sample(pid: str, label: str, ring: list, info, per_polygon: int = 0) -> Sampled:
    import pyproj
    import rasterio.features
    import shapely
    from affine import Affine
    from shapely.geometry import Polygon, mapping

    if len(ring) < 3:
        raise PolygonError("a polygon needs three corners at least")
    if len(ring) > MAX_VERTICES:
        raise PolygonError(f"{len(ring)} corners, {MAX_VERTICES} at most")
    lon, lat = np.array(ring, dtype=np.float64).T
    if not (np.all(np.abs(lon) <= 180) and np.all(np.abs(lat) <= 90)):
        raise PolygonError("corners must be lon -180..180, lat -90..90")
    x, y = pyproj.Transformer.from_crs("EPSG:4326", info.crs, always_xy=True).transform(lon, lat)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise PolygonError("a corner has no place in the store's CRS")
    shape = Polygon(np.column_stack([x, y]))
    fixed = not shape.is_valid
    if fixed:
        parts = shapely.get_parts(shapely.make_valid(shape))
        polys = [p for p in parts if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
        if not polys:
            raise PolygonError("it encloses no area (its corners are on one line)")
        shape = shapely.union_all(polys)
    if shape.area <= 0:
        raise PolygonError("it encloses no area")
    fwd = Affine(*info.transform[:6])
    inv = ~fwd
    minx, miny, maxx, maxy = shape.bounds
    cs, rs = inv * (np.array([minx, maxx, minx, maxx]), np.array([miny, miny, maxy, maxy]))
    r0, r1 = max(0, int(np.floor(rs.min()))), min(info.height, int(np.ceil(rs.max())))
    c0, c1 = max(0, int(np.floor(cs.min()))), min(info.width, int(np.ceil(cs.max())))
    if r1 <= r0 or c1 <= c0:
        rows = cols = np.zeros(0, dtype=np.int64)
    else:
        if (r1 - r0) * (c1 - c0) > MAX_BBOX_PIXELS:
            raise PolygonError(
                f"it spans {r1 - r0} x {c1 - c0} store pixels; "
                f"{MAX_BBOX_PIXELS:,} in its bounding box at most: draw smaller ones"
            )
        mask = rasterio.features.rasterize(
            [shape],
            out_shape=(r1 - r0, c1 - c0),
            transform=fwd * Affine.translation(c0, r0),
            all_touched=False,
            dtype="uint8",
        )
        rr, cc = np.nonzero(mask)
        rows, cols = rr.astype(np.int64) + r0, cc.astype(np.int64) + c0
    pixels = len(rows)
    want = min(per_polygon or MAX_PER_POLYGON, MAX_PER_POLYGON)
    if pixels > want:
        rng = np.random.default_rng(zlib.crc32(pid.encode()))
        keep = np.sort(rng.choice(pixels, want, replace=False))
        rows, cols = rows[keep], cols[keep]
    back = pyproj.Transformer.from_crs(info.crs, "EPSG:4326", always_xy=True)
    geometry = mapping(shapely.transform(shape, lambda xy: np.column_stack(back.transform(*xy.T))))
    return Sampled(pid, label, ring, _lists(geometry), fixed, pixels, rows, cols)


def _lists(value):
    """shapely's mapping() (tuples) -> plain lists, as JSON writes them back."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
