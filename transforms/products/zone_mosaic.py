"""Reading a collection (one store per UTM zone) onto one grid, by the collection's rule.

The rule (transforms/core/zones.py): every output pixel takes the value of the pixel that holds
its centre, in the store of the cell that holds its centre (nearest pixel, no resampling of
values). Pixels whose centre is in no member's cell, or outside that member's grid, are no data.
So nothing is counted twice and, as each store holds every pixel whose footprint touches its
cell, there is no gap at a seam.

Used by `EmbeddingCollection.sel` (efm/collection.py: a grid in one UTM zone), `efm export
--mosaic` (a grid in EPSG:4326) and the VRT `efm export` writes over a collection's COGs.
Memory: `fill` reads, per source, one store chunk's part at a time (the pixels an output window
needs, grouped by the chunk holding them), whatever the output's scale.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
import pyproj
import shapely

from transforms.core.grid import Window
from transforms.core.zones import NORTH_LIMIT, SOUTH_LIMIT, Cell, cells_of

LONLAT = "EPSG:4326"
EDGE_POINTS = 64  # points per bbox edge when projecting it (its edges curve in another CRS)


@dataclasses.dataclass(frozen=True)
class Source:
    """One member store's grid: where its pixels are (affine `transform` as a 6-tuple)."""

    cell: Cell
    crs: str
    transform: tuple  # (a, b, c, d, e, f): x = c + a * col, y = f + e * row (north-up: b = d = 0)
    width: int
    height: int
    chunk_rows: int
    chunk_cols: int


@dataclasses.dataclass(frozen=True)
class Target:
    """A north-up output grid: `width` x `height` pixels of (dx, dy) CRS units from (x0, y0)."""

    crs: str
    x0: float
    y0: float
    dx: float
    dy: float
    width: int
    height: int

    @property
    def transform(self) -> tuple:
        return (self.dx, 0.0, self.x0, 0.0, -self.dy, self.y0)

    def centres(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        """The pixel centres of a window, (rows, cols) arrays in the grid's CRS."""
        xs = self.x0 + (w.col + 0.5 + np.arange(w.cols)) * self.dx
        ys = self.y0 - (w.row + 0.5 + np.arange(w.rows)) * self.dy
        return np.meshgrid(xs, ys)

    def lonlat(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = self.centres(w)
        if pyproj.CRS(self.crs) == pyproj.CRS(LONLAT):
            return xs, ys
        to = pyproj.Transformer.from_crs(self.crs, LONLAT, always_xy=True)
        return to.transform(xs, ys)


def _edge(bbox, n: int = EDGE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    west, south, east, north = bbox
    t = np.linspace(0.0, 1.0, n + 1)
    lon = np.concatenate([west + (east - west) * t, np.full_like(t, east)])
    lon = np.concatenate([lon, east - (east - west) * t, np.full_like(t, west)])
    lat = np.concatenate([np.full_like(t, north), north - (north - south) * t])
    lat = np.concatenate([lat, np.full_like(t, south), south + (north - south) * t])
    return lon, lat


def projected_bounds(bbox_lonlat, crs: str) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a lon/lat box in `crs`, its edges densified."""
    lon, lat = _edge(bbox_lonlat)
    x, y = pyproj.Transformer.from_crs(LONLAT, crs, always_xy=True).transform(lon, lat)
    return float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y))


def snapped_target(bbox_lonlat, crs: str, scale: float) -> Target:
    """A grid in `crs` covering the box, its edges on multiples of `scale` (snapped outward, so a
    10 m grid in a member's zone lines up with that member's pixels)."""
    minx, miny, maxx, maxy = projected_bounds(bbox_lonlat, crs)
    x0, y0 = math.floor(minx / scale) * scale, math.ceil(maxy / scale) * scale
    width = max(1, math.ceil((maxx - x0) / scale - 1e-9))
    height = max(1, math.ceil((y0 - miny) / scale - 1e-9))
    return Target(crs, x0, y0, scale, scale, width, height)


def degrees_for(metres: float, lat: float) -> tuple[float, float]:
    """(dlon, dlat) in degrees of a pixel `metres` wide and high at latitude `lat` (WGS 84: the
    parallel's and the meridian's radius of curvature there)."""
    ellps = pyproj.CRS("EPSG:4326").ellipsoid
    a, f = ellps.semi_major_metre, 1.0 / ellps.inverse_flattening
    e2 = f * (2.0 - f)
    s2 = math.sin(math.radians(lat)) ** 2
    prime = a / math.sqrt(1.0 - e2 * s2)  # N: the parallel's radius is N cos(lat)
    meridian = a * (1.0 - e2) / (1.0 - e2 * s2) ** 1.5
    per_lon = math.radians(1.0) * prime * math.cos(math.radians(lat))
    per_lat = math.radians(1.0) * meridian
    return metres / per_lon, metres / per_lat


def lonlat_target(area_lonlat, dlon: float, dlat: float) -> Target:
    """A grid in EPSG:4326 from the area's north-west corner, covering it."""
    west, south, east, north = area_lonlat
    width = max(1, math.ceil((east - west) / dlon - 1e-9))
    height = max(1, math.ceil((north - south) / dlat - 1e-9))
    return Target(LONLAT, float(west), float(north), float(dlon), float(dlat), width, height)


def cell_block(target: Target, cell: Cell) -> Window | None:
    """On an EPSG:4326 grid: the (rectangular) block of pixels whose centre is in the cell."""
    west, south, east, north = cell.box
    xc = target.x0 + (np.arange(target.width) + 0.5) * target.dx
    yc = target.y0 - (np.arange(target.height) + 0.5) * target.dy  # decreasing
    c0, c1 = np.searchsorted(xc, west, "left"), np.searchsorted(xc, east, "left")
    r0, r1 = np.searchsorted(-yc, -north, "right"), np.searchsorted(-yc, -south, "right")
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(int(r0), int(c0), int(r1 - r0), int(c1 - c0))


@dataclasses.dataclass
class Pick:
    """The output pixels (flat indices) a source gives, and the (row, col) of its pixel for each."""

    source: int
    index: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


def pick(sources: list[Source], lon: np.ndarray, lat: np.ndarray) -> list[Pick]:
    """For flat arrays of points: which source pixel each takes (the rule). Points in no member's
    cell, or outside its grid, are in no Pick."""
    lon, lat = np.ravel(lon), np.ravel(lat)
    ok = np.isfinite(lon) & np.isfinite(lat) & (lat >= SOUTH_LIMIT) & (lat < NORTH_LIMIT)
    ok &= (lon >= -180.0) & (lon <= 180.0)
    zone, north = cells_of(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
    picks = []
    for i, s in enumerate(sources):
        sel = np.flatnonzero(ok & (zone == s.cell.zone) & (north == s.cell.north))
        if not sel.size:
            continue
        to = pyproj.Transformer.from_crs(LONLAT, s.crs, always_xy=True)
        x, y = to.transform(lon[sel], lat[sel])
        a, _, c, _, e, f = s.transform
        cols = np.floor((np.asarray(x) - c) / a).astype(np.int64)
        rows = np.floor((np.asarray(y) - f) / e).astype(np.int64)
        inside = (rows >= 0) & (rows < s.height) & (cols >= 0) & (cols < s.width)
        if inside.any():
            picks.append(Pick(i, sel[inside], rows[inside], cols[inside]))
    return picks


def chunk_groups(s: Source, p: Pick) -> Iterator[tuple[Window, np.ndarray]]:
    """A pick's pixels grouped by the store chunk holding them: (the smallest window of that chunk
    holding them, their positions in the pick)."""
    key = (p.rows // s.chunk_rows) * ((s.width // s.chunk_cols) + 2) + p.cols // s.chunk_cols
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for part in np.split(order, bounds):
        r, c = p.rows[part], p.cols[part]
        r0, c0 = int(r.min()), int(c.min())
        yield Window(r0, c0, int(r.max()) - r0 + 1, int(c.max()) - c0 + 1), part


def fill(
    out: np.ndarray,
    sources: list[Source],
    picks: list[Pick],
    read: Callable[[int, Window], np.ndarray],
) -> np.ndarray:
    """Write into `out` (flat over the points: (n,) or (n, bands)) each point's source pixel value.

    `read(source index, window)` -> the source's values on the window ((rows, cols) or
    (rows, cols, bands)); called once per store chunk the points touch."""
    for p in picks:
        for w, part in chunk_groups(sources[p.source], p):
            block = read(p.source, w)
            out[p.index[part]] = block[p.rows[part] - w.row, p.cols[part] - w.col]
    return out


def window_values(
    target: Target,
    w: Window,
    sources: list[Source],
    read: Callable[[int, Window], np.ndarray],
    fill_value,
    dtype,
    bands: int | None = None,
) -> np.ndarray:
    """One output window by the rule: (rows, cols) or (rows, cols, bands)."""
    lon, lat = target.lonlat(w)
    shape = (w.rows * w.cols,) + ((bands,) if bands else ())
    out = np.full(shape, fill_value, dtype=dtype)
    fill(out, sources, pick(sources, lon, lat), read)
    return out.reshape((w.rows, w.cols) + ((bands,) if bands else ()))


def area_of(boxes) -> tuple[float, float, float, float]:
    """The lon/lat box holding every box of `boxes`."""
    union = shapely.union_all([shapely.box(*b) for b in boxes])
    return tuple(float(v) for v in union.bounds)
