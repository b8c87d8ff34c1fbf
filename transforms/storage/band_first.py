"""Windows of a sharded store read as they are stored: (bands, rows, cols), no transposition.

efm's stores keep the geo-embedding convention's (time, band, y, x) order. `ShardWindows.read`
moves the bands last for the products that work pixel by pixel (a transposing copy of every
window); a product that works band by band (`efm zonal`: one np.bincount per band) reads the
window here instead: each shard the window touches is fetched whole (`ShardWindows._fetch`, the
shards of a window together on a remote store), its index parsed, and each inner chunk decoded
(the same decoder) and copied band-first into the result. Same values as `ShardWindows.read`
moved band-first (tests/test_zonal_band_first.py).
"""

from __future__ import annotations

import threading

import numpy as np

from transforms.storage.shard_windows import EMPTY, ShardWindows

_BUFFER = threading.local()  # one decode buffer per thread


def _buffer(shards: ShardWindows) -> np.ndarray:
    key = (shards.dtype.str, shards.bands, shards.inner_rows, shards.inner_cols)
    if getattr(_BUFFER, "key", None) != key:
        _BUFFER.key = key
        _BUFFER.array = np.empty((shards.bands, shards.inner_rows, shards.inner_cols), shards.dtype)
    return _BUFFER.array


def read(shards: ShardWindows, time_index: int, rows: slice, cols: slice) -> np.ndarray:
    """The window (rows, cols: unit-step slices) as stored, (bands, rows, cols)."""
    r0, r1 = max(rows.start or 0, 0), min(rows.stop, shards.height)
    c0, c1 = max(cols.start or 0, 0), min(cols.stop, shards.width)
    out = np.empty((shards.bands, max(r1 - r0, 0), max(c1 - c0, 0)), dtype=shards.dtype)
    if out.size == 0:
        return out
    sy, sx = shards.shard_rows, shards.shard_cols
    iy, ix = shards.inner_rows, shards.inner_cols
    found = [
        (shards._key(time_index, i, j), i, j)
        for i in range(r0 // sy, (r1 - 1) // sy + 1)
        for j in range(c0 // sx, (c1 - 1) // sx + 1)
    ]
    blobs = shards._fetch([(name, None, None) for name, _, _ in found])
    for (_, i, j), data in zip(found, blobs):
        index = None if isinstance(data, FileNotFoundError) else shards._parse_index(data)
        for a in range(shards.grid[0]):
            y0 = i * sy + a * iy
            ys, ye = max(r0, y0), min(r1, y0 + iy)
            if ye <= ys:
                continue
            for b in range(shards.grid[1]):
                x0 = j * sx + b * ix
                xs, xe = max(c0, x0), min(c1, x0 + ix)
                if xe <= xs:
                    continue
                target = out[:, ys - r0 : ye - r0, xs - c0 : xe - c0]
                offset, nbytes = (EMPTY, 0) if index is None else index[a, b]
                if offset == EMPTY:
                    target[...] = shards.fill
                    continue
                buffer = _buffer(shards)
                shards.codec(data[int(offset) : int(offset + nbytes)], buffer)
                target[...] = buffer[:, ys - y0 : ye - y0, xs - x0 : xe - x0]
    return out
