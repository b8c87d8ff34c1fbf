"""Reading one COG of the mirror into a window of the target grid, and the mosaic of files.

On the target grid's own pixels ("native": same CRS, same pixel size, aligned) a window is
copied as is, so int8 codes reach an int8 store bit for bit; otherwise each target pixel takes
the int8 codes of the source pixel under its centre (nearest neighbour; -128 = no data), found
with exact PROJ transforms on a 32 px lattice and bilinear interpolation between them (the
error, ~1e-4 px between neighbouring UTM zones, is far below GDAL's warper's default 0.125 px).
Both read the file's stored blocks through `cog_blocks`, which decodes each block once and
turns it north-up: rows are never assumed to run top-down, the geotransform says which way.
"""

from __future__ import annotations

import re
import threading

import affine
import numpy as np

from transforms.core import quantize
from transforms.sources.cog_blocks import Layout, in_turn

RESAMPLING = "nearest"
MOSAIC_RULE = (
    "files in the grid's CRS first, then the others; each pixel from the first file with data"
)


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


def no_data(dtype) -> float | int:
    """What a pixel no source pixel lies under holds: -128 in int8 codes, NaN in floats (a
    Zarr store of float embeddings, read through the same rule: `zarr_source`)."""
    return quantize.NODATA_CODE if np.dtype(dtype) == np.int8 else np.nan


def _is_native(src_crs, t: affine.Affine, grid_crs, scale: float, left: float, top: float) -> bool:
    """Same CRS, same pixel size, pixel edges aligned (`t` north-up): a window is a plain copy."""
    if t.b != 0 or t.d != 0 or abs(t.a - scale) > 1e-9 * scale or abs(-t.e - scale) > 1e-9 * scale:
        return False
    if src_crs != grid_crs:
        return False
    dx = (left - t.c) / scale
    dy = (top - t.f) / scale
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def read_into_grid(
    layout: Layout,
    block,
    src_crs,
    grid_crs,
    scale: float,
    left: float,
    top: float,
    rows: int,
    cols: int,
    need: np.ndarray | None = None,
) -> np.ndarray | None:
    """One file's int8 codes on a window of the target grid: (rows, cols, bands), -128 = none
    (a float store's values through `zarr_source`: NaN = none).

    `layout`: the file's geometry (`cog_blocks.Layout`); `block(block_row, block_col, wait)`: one of
    its stored blocks, decoded, north-up, (rows, cols, bands) (wait=False: None while another
    thread decodes it, see `cog_blocks.in_turn`). Native grid: the overlapping
    window is copied from the blocks. Otherwise each target pixel takes the source pixel under
    its centre (nearest neighbour). None if the file adds nothing. `need`: (rows, cols) bool,
    the pixels still wanted (earlier files of the mosaic have the others): off the native grid
    only the blocks under those are decoded, so a neighbouring zone's file consulted for a few
    no-data pixels costs a few blocks, not all of them.
    """
    t = layout.transform
    if _is_native(src_crs, t, grid_crs, scale, left, top):
        return _copy_native(
            layout, block, round((t.f - top) / scale), round((left - t.c) / scale), rows, cols
        )
    return _nearest(layout, block, src_crs, grid_crs, scale, left, top, rows, cols, need)


def _copy_native(
    layout: Layout, block, row_off: int, col_off: int, rows: int, cols: int
) -> np.ndarray | None:
    """Rows [row_off, +rows) x cols [col_off, +cols) of the file (north-up), from its blocks."""
    r0, r1 = max(0, row_off), min(layout.height, row_off + rows)
    c0, c1 = max(0, col_off), min(layout.width, col_off + cols)
    if r0 >= r1 or c0 >= c1:
        return None
    out = None
    for (block_row, block_col), data in in_turn(layout.blocks_over(r0, r1, c0, c1), block):
        if out is None:
            covered = (r0, r1, c0, c1) == (row_off, row_off + rows, col_off, col_off + cols)
            shape = (rows, cols, data.shape[-1])
            out = (
                np.empty(shape, dtype=data.dtype)
                if covered
                else np.full(shape, no_data(data.dtype), dtype=data.dtype)
            )
        b0, _ = layout.block_span(block_row)
        bc0 = block_col * layout.block_cols
        i0, i1 = max(r0, b0), min(r1, b0 + data.shape[0])
        j0, j1 = max(c0, bc0), min(c1, bc0 + data.shape[1])
        out[i0 - row_off : i1 - row_off, j0 - col_off : j1 - col_off] = data[
            i0 - b0 : i1 - b0, j0 - bc0 : j1 - bc0
        ]
    return out


_transformers = threading.local()  # pyproj transformers, per thread (one PROJ context each)
LATTICE_STEP = (
    32  # px: exact transforms on this lattice, bilinear between (error ~1e-4 px between UTM zones)
)


def _transformer(src, dst):
    import pyproj

    cache = _transformers.__dict__.setdefault("cache", {})
    key = (str(src), str(dst))
    if key not in cache:
        cache[key] = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return cache[key]


def _interpolate(
    lattice: np.ndarray, li: np.ndarray, lj: np.ndarray, rows: int, cols: int
) -> np.ndarray:
    """Bilinear interpolation of values on lattice rows `li` x cols `lj` to every pixel."""
    along_cols = np.stack([np.interp(np.arange(cols), lj, row) for row in lattice])
    if len(li) == 1:
        return np.repeat(along_cols, rows, axis=0)
    r = np.arange(rows)
    k = np.clip(np.searchsorted(li, r, side="right") - 1, 0, len(li) - 2)
    w = ((r - li[k]) / (li[k + 1] - li[k]))[:, None]
    return along_cols[k] * (1 - w) + along_cols[k + 1] * w


def source_pixels(
    layout: Layout, src_crs, grid_crs, scale: float, left: float, top: float, rows: int, cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """North-up (row, col) of the file's pixel under each target pixel centre; -1 where none."""
    li = np.unique(np.r_[np.arange(0, rows, LATTICE_STEP), rows - 1])
    lj = np.unique(np.r_[np.arange(0, cols, LATTICE_STEP), cols - 1])
    xs, ys = np.meshgrid(left + (lj + 0.5) * scale, top - (li + 0.5) * scale)
    sx, sy = _transformer(grid_crs, src_crs).transform(xs, ys)
    t = layout.transform
    fc = _interpolate((np.asarray(sx) - t.c) / t.a, li, lj, rows, cols)
    fr = _interpolate((np.asarray(sy) - t.f) / t.e, li, lj, rows, cols)
    inside = (
        np.isfinite(fc)
        & np.isfinite(fr)
        & (fc >= 0)
        & (fc < layout.width)
        & (fr >= 0)
        & (fr < layout.height)
    )
    return np.where(inside, np.floor(fr), -1).astype(np.int64), np.where(
        inside, np.floor(fc), -1
    ).astype(np.int64)


def _nearest(
    layout: Layout, block, src_crs, grid_crs, scale, left, top, rows, cols, need=None
) -> np.ndarray | None:
    """Each (wanted) target pixel from the source pixel under its centre, gathered block by block."""
    src_rows, src_cols = source_pixels(layout, src_crs, grid_crs, scale, left, top, rows, cols)
    found = src_rows.ravel() >= 0
    pixels = np.flatnonzero(found if need is None else found & need.ravel())
    if pixels.size == 0:
        return None
    r, c = src_rows.ravel()[pixels], src_cols.ravel()[pixels]
    block_rows, block_cols = layout.block_rows_of(r), c // layout.block_cols
    wanted = {}
    for block_row in range(int(block_rows.min()), int(block_rows.max()) + 1):
        in_row = block_rows == block_row
        for block_col in range(int(block_cols.min()), int(block_cols.max()) + 1):
            take = np.flatnonzero(in_row & (block_cols == block_col))
            if take.size:
                wanted[(block_row, block_col)] = take
    out = None
    for (block_row, block_col), data in in_turn(list(wanted), block):
        take = wanted[(block_row, block_col)]
        if out is None:
            out = np.full((rows * cols, data.shape[-1]), no_data(data.dtype), dtype=data.dtype)
        b0, _ = layout.block_span(block_row)
        local = (r[take] - b0) * data.shape[1] + (c[take] - block_col * layout.block_cols)
        out[pixels[take]] = data.reshape(-1, data.shape[-1])[local]
    return out.reshape(rows, cols, -1)


def mosaic_into(out: np.ndarray, part: np.ndarray) -> None:
    """Fill `out`'s no-data pixels from `part` (first file with data wins).

    The mirror masks a pixel in all bands or none, so band 0 tells.
    """
    take = (out[..., 0] == quantize.NODATA_CODE) & (part[..., 0] != quantize.NODATA_CODE)
    if take.all():
        out[...] = part
    elif take.any():
        out[take] = part[take]
