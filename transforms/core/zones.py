"""UTM zones as the cells of a collection: which zones an area spans, and which pixels each holds.

The rule (docs/data-contract.md, "Collections"): the Earth between 80 S and 84 N is cut into
cells, one per UTM zone and hemisphere: zone z, north = lon [-180 + 6 (z - 1), -180 + 6 z) x lat
[0, 84); south = the same longitudes x lat [-80, 0). Zones are the plain 6-degree ones (the
Norway / Svalbard exceptions of the MGRS grid are not used).

- **A point belongs to one cell**: the one whose half-open box holds its lon/lat. Everything that
  reads a collection at a place (a sample point, a polygon's pixels, a mosaic's pixel) takes the
  value from that cell's store, so nothing is counted twice.
- **A cell's store holds every pixel of its grid whose footprint touches the cell**, so that a
  point near a seam always finds a pixel with data in its own cell's store (no gap). Pixels
  whose footprint is wholly outside the cell are no data. Both stores hold the pixels that
  straddle a seam (a strip under one pixel wide on each side): a pixel (of one store's grid) is
  written once, in that store; readers pick by the point's cell.
- Counting by pixel centre (efm zonal): a pixel counts in its store's cell only if its centre is
  in the cell, so a polygon across a seam is counted exactly once per place.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyproj
import shapely

from transforms.core.grid import Grid, Window

NORTH_LIMIT, SOUTH_LIMIT = 84.0, -80.0  # UTM's extent; beyond it: polar stereographic, not here
EDGE_SAMPLES = 32  # window edge points checked before a full corner lattice is computed
COLUMN_PAD = 8  # columns beyond the meridian crossings' span whose corners are projected too


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    """One UTM zone and hemisphere: its box in lon/lat (half-open) and its CRS."""

    zone: int
    north: bool

    @property
    def name(self) -> str:
        return f"{self.zone}{'N' if self.north else 'S'}"

    @property
    def crs(self) -> str:
        return f"EPSG:{(32600 if self.north else 32700) + self.zone}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees; a point is in the cell if west <= lon < east
        and south <= lat < north."""
        west = -180.0 + 6.0 * (self.zone - 1)
        return (
            (west, 0.0, west + 6.0, NORTH_LIMIT)
            if self.north
            else (west, SOUTH_LIMIT, west + 6.0, 0.0)
        )

    @property
    def polygon(self) -> shapely.Polygon:
        return shapely.box(*self.box)

    @classmethod
    def from_name(cls, name: str) -> Cell:
        zone, hemisphere = int(name[:-1]), name[-1].upper()
        if not 1 <= zone <= 60 or hemisphere not in "NS":
            raise ValueError(f"not a UTM zone name: {name!r}")
        return cls(zone, hemisphere == "N")


def cell_of(lon: float, lat: float) -> Cell:
    """The cell holding a point (lon 180 is zone 60's east edge, taken by zone 60)."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return Cell(max(zone, 1), lat >= 0.0)


def cells_of(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `cell_of`: (zone numbers, north flags)."""
    zone = np.clip(np.floor((np.asarray(lon, float) + 180.0) / 6.0).astype(int) + 1, 1, 60)
    return zone, np.asarray(lat, float) >= 0.0


def cells_for(area_lonlat: shapely.Geometry) -> list[Cell]:
    """The cells an area touches (in zone order, north before south), each with a part of it of
    positive area (an area that only touches a seam's line does not take the neighbour)."""
    west, south, east, north = area_lonlat.bounds
    first, last = cell_of(west, 0).zone, cell_of(math.nextafter(east, -math.inf), 0).zone
    found = []
    for zone in range(first, last + 1):
        for hemi in (True, False):
            cell = Cell(zone, hemi)
            if shapely.intersection(area_lonlat, cell.polygon).area > 0:
                found.append(cell)
    return found


def part_in(area_lonlat: shapely.Geometry, cell: Cell) -> shapely.Geometry:
    """The part of an area in a cell (what that cell's store is planned over)."""
    return shapely.intersection(area_lonlat, cell.polygon)


def _lonlat(grid: Grid, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    to_lonlat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    return to_lonlat.transform(xs, ys)


def _window_edges(grid: Grid, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Points along a window's outer edge (its pixels' outer corners), in the grid's CRS."""
    left, bottom, right, top = grid.window_bounds(window)
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES + 1)
    xs = np.concatenate([left + (right - left) * t, np.full_like(t, right)])
    xs = np.concatenate([xs, right - (right - left) * t, np.full_like(t, left)])
    ys = np.concatenate([np.full_like(t, top), top - (top - bottom) * t])
    ys = np.concatenate([ys, np.full_like(t, bottom), bottom + (top - bottom) * t])
    return xs, ys


def footprint_mask(grid: Grid, window: Window, cell: Cell) -> np.ndarray | None:
    """Which pixels of `window` a cell's store holds: True where the pixel's footprint touches
    the cell. None when every pixel does (most windows: no array is made)."""
    west, south, east, north = cell.box
    lon, lat = _lonlat(grid, *_window_edges(grid, window))
    # Within a UTM zone's reach, lon grows with x along a row and lat with y along a column, so
    # a window's extremes are on its edge: all inside by a margin means every pixel is.
    margin = 1e-9
    if (
        lon.min() >= west + margin
        and lon.max() < east - margin
        and lat.min() >= south + margin
        and lat.max() < north - margin
    ):
        return None
    xs = grid.x0 + (window.col + np.arange(window.cols + 1)) * grid.scale
    ys = grid.y0 - (window.row + np.arange(window.rows + 1)) * grid.scale
    if lat.min() >= south + margin and lat.max() < north - margin:
        # Only meridians cross the window: the pixel corners' lons are needed only in the columns
        # a crossing spans: between where it meets the top and the bottom row, or the window's
        # side where it leaves through one (searchsorted gives 0 / the width there); the meridians
        # are near-straight over a window (COLUMN_PAD more); the other columns are wholly on one
        # side of it.
        lon_lo, lon_hi = lon.min(), lon.max()
        top, bottom = (
            _lonlat(grid, xs, np.full_like(xs, ys[0]))[0],
            _lonlat(grid, xs, np.full_like(xs, ys[-1]))[0],
        )
        cross = [
            int(np.searchsorted(edge, bound))
            for bound in (west, east)
            if lon_lo < bound <= lon_hi
            for edge in (top, bottom)
        ]
        if not cross:  # (wholly on one side of a cell's edge, by the top row)
            cross = [0]
        lo = max(0, min(cross) - COLUMN_PAD)
        hi = min(len(xs), max(cross) + COLUMN_PAD + 1)
        keep = np.repeat(((top[1:] >= west) & (top[:-1] < east))[None, :], window.rows, axis=0)
        if hi - lo >= 2:
            lon = _lonlat(grid, *np.meshgrid(xs[lo:hi], ys))[0]
            keep[:, lo : hi - 1] = _touches(lon, None, west, east, None, None)
        return keep
    lon, lat = _lonlat(grid, *np.meshgrid(xs, ys))
    return _touches(lon, lat, west, east, south, north)


def _touches(lon, lat, west, east, south, north) -> np.ndarray:
    """Pixels (between the corner lattices' points) whose corners' box touches the cell's."""
    corners = [(slice(0, -1), slice(0, -1)), (slice(0, -1), slice(1, None))]
    corners += [(slice(1, None), slice(0, -1)), (slice(1, None), slice(1, None))]
    lon_min = np.minimum.reduce([lon[c] for c in corners])
    lon_max = np.maximum.reduce([lon[c] for c in corners])
    keep = (lon_max >= west) & (lon_min < east)
    if lat is not None:
        lat_min = np.minimum.reduce([lat[c] for c in corners])
        lat_max = np.maximum.reduce([lat[c] for c in corners])
        keep &= (lat_max >= south) & (lat_min < north)
    return keep


def centre_mask(grid: Grid, window: Window, cell: Cell) -> np.ndarray:
    """Which pixels of `window` have their centre in the cell (the counting rule)."""
    xs = grid.x0 + (window.col + 0.5 + np.arange(window.cols)) * grid.scale
    ys = grid.y0 - (window.row + 0.5 + np.arange(window.rows)) * grid.scale
    lon, lat = _lonlat(grid, *np.meshgrid(xs, ys))
    west, south, east, north = cell.box
    return (lon >= west) & (lon < east) & (lat >= south) & (lat < north)
