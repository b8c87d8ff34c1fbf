"""Points on a collection: each point is read from the member whose cell holds it
(transforms/core/zones.py: a point belongs to the cell whose half-open lon/lat box holds it), at
its pixel in that member's grid. Used by `efm sample` and `efm similarity` on a collection.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyproj

from transforms.core.errors import InputError, first_line
from transforms.core.zones import Cell, cells_of
from transforms.storage.readers import StoreInfo


@dataclasses.dataclass
class MemberPoints:
    """The points a member holds: their indices in the points file and their pixels in its grid."""

    name: str  # the member's path in the collection ("utm-31n.zarr")
    info: StoreInfo
    ids: np.ndarray  # int64 indices of the points
    rows: np.ndarray
    cols: np.ndarray


def lonlat(x: np.ndarray, y: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        transformer = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    except pyproj.exceptions.CRSError as exc:
        raise InputError(
            "--tuning", f"points_crs: unknown CRS {crs!r}: {first_line(exc)}"
        ) from None
    with np.errstate(invalid="ignore"):
        lon, lat = transformer.transform(np.asarray(x, float), np.asarray(y, float), errcheck=False)
    return np.asarray(lon, float), np.asarray(lat, float)


def split(members, points) -> tuple[list[MemberPoints], np.ndarray]:
    """members: [(name, cell, StoreInfo)]; points: labelled_points.Points -> (the points of each member
    with a pixel in its grid, bool mask of the points outside every member's store)."""
    from transforms.learning import (
        sampling,  # noqa: PLC0415
    )

    lon, lat = lonlat(points.x, points.y, points.crs)
    zone, north = cells_of(np.nan_to_num(lon), np.nan_to_num(lat))
    ok = np.isfinite(lon) & np.isfinite(lat)
    outside = np.ones(len(lon), dtype=bool)
    out = []
    for name, cell, info in members:
        cell = cell if isinstance(cell, Cell) else Cell.from_name(cell)
        ids = np.flatnonzero(ok & (zone == cell.zone) & (north == cell.north))
        if len(ids) == 0:
            continue
        part = dataclasses.replace(points, x=points.x[ids], y=points.y[ids])
        rows, cols = sampling.to_pixels(info, part)
        inside = rows >= 0
        outside[ids[inside]] = False
        if inside.any():
            out.append(MemberPoints(name, info, ids[inside], rows[inside], cols[inside]))
    return out, outside


def owned(info: StoreInfo, window, cell) -> np.ndarray | None:
    """Which pixels of `window` (a grid Window of the member's store) count for the member: those
    whose centre is in its cell (zones.centre_mask). None when all of them do (a window wholly
    inside the cell, the usual case: no array is made)."""
    from transforms.core import zones
    from transforms.storage.subset import store_grid

    cell = cell if isinstance(cell, Cell) else Cell.from_name(cell)
    grid = store_grid(info)
    if zones.footprint_mask(grid, window, cell) is None:
        return None
    return zones.centre_mask(grid, window, cell)
