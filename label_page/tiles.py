"""The store as Web Mercator (EPSG:3857) XYZ tiles, for the labelling page's map (Leaflet).

Each of a tile's 256 x 256 pixel centres is transformed to the store's CRS (as GDAL's warper does
by default: pyproj exactly on a 17 x 17 lattice, bilinear in between where that is within 0.125
store px of the exact transform, every pixel exactly elsewhere) and takes the store pixel it falls
in. Zoomed in, many tile pixels show the same store pixel: each is coloured or predicted once. Zoomed out, a tile pixel spans s store
pixels: it then takes the first pixel of its block of L x L, L the largest power of two <= s (the
zoom-dependent stride), so that a zoomed-out tile reads (256 * s / L)^2 pixels at most, not the s^2
times more under it. Strides from `min_level` up are read from one overview of the store at
that stride (store[::L, ::L], built once by decoding every chunk once, held as the store's own
codes, OVERVIEW_BYTES at most), finer ones from the store's chunks under the tile, each decoded once
and kept while used (neighbouring tiles share chunks). The last tiles' codes and chunks are kept
(CACHE_BYTES in all), so a preview redrawn after a click reads nothing again.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import threading

import numpy as np

from transforms.storage import store
from transforms.storage.readers import valid_mask

TILE = 256
HALF = math.pi * 6378137.0  # half the Web Mercator world's width, metres
OVERVIEW_BYTES = 512 << 20
CACHE_BYTES = 512 << 20  # tiles' codes and decoded chunks, least recently used out
GRID = 17  # the exact transform on a 17 x 17 lattice of a tile, interpolated in between
MAX_ERROR = 0.125  # store px: GDAL's warper's default error threshold for that approximation


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of tile z/x/y in EPSG:3857 metres."""
    span = 2 * HALF / 2**z
    left, top = -HALF + x * span, HALF - y * span
    return left, top - span, left + span, top


def tile_centres(z: int, x: int, y: int, size: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """The EPSG:3857 coordinates of a tile's pixel centres, (size, size) each, row 0 at the top."""
    left, _, right, top = tile_bounds(z, x, y)
    px = (right - left) / size
    offsets = (np.arange(size) + 0.5) * px
    return np.meshgrid(left + offsets, top - offsets)


def _bilinear(a: np.ndarray, lattice: np.ndarray, size: int) -> np.ndarray:
    """(n, n) values at tile pixel indices `lattice` (both axes) -> (size, size), bilinearly."""
    at = np.arange(size, dtype=np.float64)
    i = np.clip(np.searchsorted(lattice, at, side="right") - 1, 0, len(lattice) - 2)
    t = (at - lattice[i]) / (lattice[i + 1] - lattice[i])
    across = a[:, i] * (1 - t) + a[:, i + 1] * t  # (n, size): along x at each lattice row
    return across[i] * (1 - t)[:, None] + across[i + 1] * t[:, None]


def check_tile(z: int, x: int, y: int) -> str | None:
    if not 0 <= z <= 30:
        return f"zoom {z}: must be 0..30"
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        return f"tile {z}/{x}/{y} is not on the map (x and y must be 0..{2**z - 1})"
    return None


class TileGrid:
    """The store's pixel grid seen from Web Mercator tiles."""

    def __init__(self, info):
        import pyproj
        from affine import Affine

        self.height, self.width = info.height, info.width
        self.inverse = ~Affine(*info.transform[:6])
        self.to_store = pyproj.Transformer.from_crs("EPSG:3857", info.crs, always_xy=True)
        to_web = pyproj.Transformer.from_crs(info.crs, "EPSG:3857", always_xy=True)
        # the store's outline in EPSG:3857 (its edges densified): tiles outside it are not read
        t = np.linspace(0, 1, 65)
        edge_c = np.concatenate([t * self.width, np.full(65, self.width), t * self.width, 0 * t])
        edge_r = np.concatenate([0 * t, t * self.height, np.full(65, self.height), t * self.height])
        fwd = Affine(*info.transform[:6])
        xs, ys = fwd * (edge_c, edge_r)
        wx, wy = to_web.transform(xs, ys)
        ok = np.isfinite(wx) & np.isfinite(wy)
        self.web_bounds = (wx[ok].min(), wy[ok].min(), wx[ok].max(), wy[ok].max())

    def overlaps(self, z: int, x: int, y: int) -> bool:
        left, bottom, right, top = tile_bounds(z, x, y)
        b = self.web_bounds
        return left < b[2] and right > b[0] and bottom < b[3] and top > b[1]

    def fractional(self, z: int, x: int, y: int, size: int = TILE):
        """(row, col) of each tile pixel centre in store pixel units (fractional; NaN off the CRS).

        As GDAL's approximate transformer: the exact transform on a GRID x GRID lattice of the
        tile, interpolated bilinearly in between, used only where it agrees with the exact
        transform at every cell's midpoint to MAX_ERROR store px; otherwise every pixel exactly."""
        if size < 4 * GRID:
            return self._exact(*tile_centres(z, x, y, size))
        lattice = np.linspace(0, size - 1, GRID)  # tile pixel indices of the lattice
        left, _, right, top = tile_bounds(z, x, y)
        px = (right - left) / size

        def exact_at(i: np.ndarray):
            return self._exact(*np.meshgrid(left + (i + 0.5) * px, top - (i + 0.5) * px))

        row_i, col_i = (_bilinear(a, lattice, size) for a in exact_at(lattice))
        mid = np.rint((lattice[:-1] + lattice[1:]) / 2).astype(int)  # the cells' middle pixels
        row_c, col_c = exact_at(mid.astype(np.float64))
        cells = np.ix_(mid, mid)
        err = np.maximum(np.abs(row_i[cells] - row_c), np.abs(col_i[cells] - col_c))
        if not np.isfinite(err).all() or err.max() > MAX_ERROR:
            return self._exact(*tile_centres(z, x, y, size))
        return row_i, col_i

    def _exact(self, wx: np.ndarray, wy: np.ndarray):
        sx, sy = self.to_store.transform(wx, wy)
        col, row = self.inverse * (np.asarray(sx), np.asarray(sy))
        bad = ~(np.isfinite(col) & np.isfinite(row))
        return np.where(bad, np.nan, row), np.where(bad, np.nan, col)

    def pixels(self, z: int, x: int, y: int, size: int = TILE):
        """(rows, cols, level): the store pixel each tile pixel shows (-1: none), on the grid of
        stride `level` (rows and cols are multiples of it)."""
        row, col = self.fractional(z, x, y, size)
        span = np.hypot(np.diff(col, axis=1), np.diff(row, axis=1))  # store px per tile px
        ratio = float(np.nanmedian(span)) if np.isfinite(span).any() else 1.0
        level = 1 << max(0, int(math.floor(math.log2(max(1.0, ratio)))))
        with np.errstate(invalid="ignore"):
            inside = (row >= 0) & (row < self.height) & (col >= 0) & (col < self.width)
        r = np.where(inside, np.floor(np.where(inside, row, 0) / level) * level, -1)
        c = np.where(inside, np.floor(np.where(inside, col, 0) / level) * level, -1)
        return r.astype(np.int64), c.astype(np.int64), level


class TileSource:
    """Tiles of one StoreView: the values under a tile (thread-safe, memory bounded)."""

    def __init__(self, view, overview_bytes: int = OVERVIEW_BYTES, cache_bytes: int = CACHE_BYTES):
        self.view = view
        self.grid = TileGrid(view.info)
        info = view.info
        self.pixel_bytes = len(info.bands) * np.dtype(info.dtype).itemsize
        self.min_level = 2
        while -(-info.height // self.min_level) * -(-info.width // self.min_level) * (
            self.pixel_bytes
        ) > overview_bytes and self.min_level < max(info.height, info.width):
            self.min_level *= 2
        self.cache_bytes = cache_bytes
        self._overview = None
        self._overview_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cached = 0

    # ------------------------------------------------------------ reading
    def overview(self) -> np.ndarray:
        """store[::min_level, ::min_level] of the view's year, as stored codes; built once."""
        with self._overview_lock:
            if self._overview is None:
                self._overview = self._build_overview(self.min_level)
            return self._overview

    def _build_overview(self, level: int) -> np.ndarray:
        info, reader, t = self.view.info, self.view.reader, self.view.time_index
        out = None
        for win in info.windows():
            ra = -(-win.row // level) * level
            ca = -(-win.col // level) * level
            rb, cb = win.row + win.rows, win.col + win.cols
            if ra >= rb or ca >= cb:
                continue
            codes = reader.read_codes(t, slice(ra, rb, level), slice(ca, cb, level))
            if out is None:
                shape = (-(-info.height // level), -(-info.width // level), codes.shape[-1])
                fill = np.nan if codes.dtype.kind == "f" else np.iinfo(codes.dtype).min
                out = np.full(shape, fill, dtype=codes.dtype)
            i, j = ra // level, ca // level
            out[i : i + codes.shape[0], j : j + codes.shape[1]] = codes
        return out

    def codes_at(self, rows: np.ndarray, cols: np.ndarray, level: int) -> np.ndarray:
        """The stored codes (n, bands) of store pixels on the stride-`level` grid."""
        if level >= self.min_level:
            return self.overview()[rows // self.min_level, cols // self.min_level]
        info = self.view.info
        cr, cc = info.chunk_rows, info.chunk_cols
        out = np.empty((len(rows), len(info.bands)), dtype=np.dtype(info.dtype))
        chunk = (rows // cr) * (-(-info.width // cc)) + cols // cc
        for k in np.unique(chunk):
            at = np.flatnonzero(chunk == k)
            i, j = divmod(int(k), -(-info.width // cc))
            out[at] = self._chunk(i, j)[rows[at] - i * cr, cols[at] - j * cc]
        return out

    def _chunk(self, i: int, j: int) -> np.ndarray:
        """Chunk (i, j) of the view's year, decoded (stored codes), from a bounded LRU: the tiles
        of a zoomed-in view share chunks (a 512-px chunk spans about 3 x 3 tiles at zoom 14)."""
        key = ("chunk", i, j)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key][1]
        info = self.view.info
        cr, cc = info.chunk_rows, info.chunk_cols
        codes = self.view.reader.read_codes(
            self.view.time_index,
            slice(i * cr, min(info.height, (i + 1) * cr)),
            slice(j * cc, min(info.width, (j + 1) * cc)),
        )
        self._remember(key, (None, codes, codes.nbytes))
        return codes

    def _remember(self, key, entry) -> None:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = entry
                self._cached += entry[2]
            while self._cached > self.cache_bytes and len(self._cache) > 1:
                _, (_, _, nbytes) = self._cache.popitem(last=False)
                self._cached -= nbytes

    def values(self, z: int, x: int, y: int) -> TileValues | None:
        """What tile z/x/y shows (TileValues), None off the store. Each store pixel the tile
        shows is read and dequantised once, however many tile pixels show it."""
        key = (z, x, y)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key][1]
        if not self.grid.overlaps(z, x, y):
            return None
        rows, cols, level = self.grid.pixels(z, x, y)
        where = np.flatnonzero(rows.ravel() >= 0)
        if not len(where):
            return None
        flat = rows.ravel()[where] * self.grid.width + cols.ravel()[where]
        distinct, index = np.unique(flat, return_inverse=True)
        codes = self.codes_at(distinct // self.grid.width, distinct % self.grid.width, level)
        got = TileValues.of(where, index, store.as_float(codes))
        self._remember(key, (None, got, got.values.nbytes + got.index.nbytes + TILE * TILE))
        return got


@dataclasses.dataclass(frozen=True)
class TileValues:
    """A tile's store pixels: `mask` (256, 256) True where the tile shows a store pixel with data;
    `values` (n, bands) float32 of the distinct such store pixels; `index` the row of `values`
    each True pixel of `mask` shows (row-major order). `values[index]` is the tile, pixel by pixel."""

    mask: np.ndarray
    values: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, where: np.ndarray, index: np.ndarray, values: np.ndarray) -> TileValues:
        ok = valid_mask(values)
        renumber = np.cumsum(ok) - 1  # distinct pixel -> its row among the valid ones
        shown = ok[index]
        mask = np.zeros(TILE * TILE, dtype=bool)
        mask[where[shown]] = True
        return cls(
            mask.reshape(TILE, TILE),
            np.ascontiguousarray(values[ok]),
            renumber[index[shown]].astype(np.int32),
        )

    def paint(self, colours: np.ndarray) -> np.ndarray:
        """(n, 4) uint8 colours of `values` -> the (256, 256, 4) RGBA tile."""
        return paint(self.mask, colours[self.index])


def png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def paint(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(256, 256) mask and (n, 4) uint8 colours of its True pixels -> a (256, 256, 4) RGBA tile."""
    rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
    rgba[mask] = colours
    return rgba


def read_pixels(view, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The embeddings (n, bands) float32 of store pixels: each chunk they fall in is read once
    (the smallest window around its pixels), so memory holds one chunk at a time."""
    info = view.info
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.full((len(rows), len(info.bands)), np.nan, dtype=np.float32)
    chunk = (rows // info.chunk_rows) * (
        -(-info.width // info.chunk_cols)
    ) + cols // info.chunk_cols
    for k in np.unique(chunk):
        at = np.flatnonzero(chunk == k)
        r, c = rows[at], cols[at]
        r0, c0 = int(r.min()), int(c.min())
        codes = view.reader.read_codes(
            view.time_index, slice(r0, int(r.max()) + 1), slice(c0, int(c.max()) + 1)
        )
        out[at] = store.as_float(codes[r - r0, c - c0])
    return out
