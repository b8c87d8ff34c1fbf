"""Reading one COG of the mirror into a window of the target grid, and the mosaic of files.

On the target grid's own pixels ("native": same CRS, same pixel size, aligned) a window is
copied as is, so int8 codes reach an int8 store bit for bit; otherwise the int8 codes are
warped with nearest neighbour (-128 = no data). Rows are never assumed to run top-down:
the geotransform says which way they go and the reader flips.
"""
from __future__ import annotations

import math
import re

import affine
import numpy as np

from transforms.core import quantize


RESAMPLING = "nearest"
MOSAIC_RULE = "files in the grid's CRS first, then the others; each pixel from the first file with data"


def band_indexes(descriptions: tuple, count: int, bands: tuple[str, ...]) -> list[int]:
    """1-based band indexes of `bands` in a file: by band description, else by position (A07 -> 8)."""
    names = {d: i + 1 for i, d in enumerate(descriptions or ()) if d}
    indexes = []
    for band in bands:
        if band in names:
            indexes.append(names[band])
        else:
            match = re.fullmatch(r"A(\d+)", band)
            if not match or int(match[1]) >= count:
                raise ValueError(f"band {band} not found in a file with {count} bands")
            indexes.append(int(match[1]) + 1)
    return indexes


def _is_native(src_crs, t: affine.Affine, grid_crs, scale: float, left: float, top: float) -> bool:
    """Same CRS, same pixel size, pixel edges aligned: a window is a plain copy."""
    if t.b != 0 or t.d != 0 or abs(abs(t.a) - scale) > 1e-9 * scale or abs(abs(t.e) - scale) > 1e-9 * scale or t.a < 0:
        return False
    if src_crs != grid_crs:
        return False
    dx = (left - t.c) / scale
    dy = (top - t.f) / scale
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def _north_up_read(ds, indexes: list[int], row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, affine.Affine]:
    """Rows [row0, row1) x cols [col0, col1) of the file, flipped to north-up if needed.

    Returns (bands, rows, cols) and the north-up transform of that block.
    """
    from rasterio.windows import Window as RioWindow

    t = ds.transform
    data = ds.read(indexes, window=RioWindow(col0, row0, col1 - col0, row1 - row0))
    if t.e > 0:  # bottom-up: row 0 is the southernmost
        data = data[:, ::-1, :]
        block = affine.Affine(t.a, 0.0, t.c + col0 * t.a, 0.0, -t.e, t.f + row1 * t.e)
    else:
        block = affine.Affine(t.a, 0.0, t.c + col0 * t.a, 0.0, t.e, t.f + row0 * t.e)
    return data, block


def _file_rows(t: affine.Affine, height: int, y_low: float, y_high: float) -> tuple[float, float]:
    """Fractional file rows spanning y in [y_low, y_high], whatever the row direction."""
    if t.e > 0:
        return (y_low - t.f) / t.e, (y_high - t.f) / t.e
    return (t.f - y_high) / -t.e, (t.f - y_low) / -t.e


def read_into_grid(ds, indexes: list[int], grid_crs, scale: float, left: float, top: float, rows: int, cols: int) -> np.ndarray | None:
    """One open file's int8 codes on a window of the target grid: (rows, cols, bands), -128 = none.

    Native grid: the overlapping window is copied. Otherwise the codes are warped with
    nearest neighbour (GDAL), -128 as no data on both sides. None if the file adds nothing.
    """
    t = ds.transform
    out = None
    if _is_native(ds.crs, t, grid_crs, scale, left, top):
        bottom, right = top - rows * scale, left + cols * scale
        r_lo, r_hi = _file_rows(t, ds.height, bottom, top)
        c_lo, c_hi = (left - t.c) / t.a, (right - t.c) / t.a
        r0, r1 = max(0, round(r_lo)), min(ds.height, round(r_hi))
        c0, c1 = max(0, round(c_lo)), min(ds.width, round(c_hi))
        if r0 >= r1 or c0 >= c1:
            return None
        data, block = _north_up_read(ds, indexes, r0, r1, c0, c1)
        dst_row = round((top - block.f) / scale)
        dst_col = round((block.c - left) / scale)
        out = np.full((rows, cols, len(indexes)), quantize.NODATA_CODE, dtype=np.int8)
        out[dst_row : dst_row + data.shape[1], dst_col : dst_col + data.shape[2]] = np.moveaxis(data, 0, -1)
        return out
    return _warp_into_grid(ds, indexes, grid_crs, scale, left, top, rows, cols)


def _warp_into_grid(ds, indexes, grid_crs, scale, left, top, rows, cols) -> np.ndarray | None:
    import rasterio.warp
    from rasterio.enums import Resampling

    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise ValueError(f"{ds.name}: rotated geotransforms are not supported")
    bottom, right = top - rows * scale, left + cols * scale
    try:
        sx0, sy0, sx1, sy1 = rasterio.warp.transform_bounds(grid_crs, ds.crs, left, bottom, right, top, densify_pts=21)
    except Exception:
        return None
    if not all(math.isfinite(v) for v in (sx0, sy0, sx1, sy1)):
        return None
    margin = 2  # pixels: nearest neighbour needs the source pixel under every target centre
    c_lo, c_hi = sorted(((sx0 - t.c) / t.a, (sx1 - t.c) / t.a))
    r_lo, r_hi = _file_rows(t, ds.height, sy0, sy1)
    r0, r1 = max(0, math.floor(r_lo) - margin), min(ds.height, math.ceil(r_hi) + margin)
    c0, c1 = max(0, math.floor(c_lo) - margin), min(ds.width, math.ceil(c_hi) + margin)
    if r0 >= r1 or c0 >= c1:
        return None
    data, block = _north_up_read(ds, indexes, r0, r1, c0, c1)
    if (data == quantize.NODATA_CODE).all():
        return None
    destination = np.full((len(indexes), rows, cols), quantize.NODATA_CODE, dtype=np.int8)
    rasterio.warp.reproject(
        source=np.ascontiguousarray(data), destination=destination,
        src_transform=block, src_crs=ds.crs, src_nodata=quantize.NODATA_CODE,
        dst_transform=affine.Affine(scale, 0.0, left, 0.0, -scale, top), dst_crs=grid_crs, dst_nodata=quantize.NODATA_CODE,
        resampling=Resampling.nearest,
    )
    return np.moveaxis(destination, 0, -1)


def mosaic_into(out: np.ndarray, part: np.ndarray) -> None:
    """Fill `out`'s no-data pixels from `part` (first file with data wins).

    The mirror masks a pixel in all bands or none, so band 0 tells.
    """
    take = (out[..., 0] == quantize.NODATA_CODE) & (part[..., 0] != quantize.NODATA_CODE)
    if take.all():
        out[...] = part
    elif take.any():
        out[take] = part[take]
