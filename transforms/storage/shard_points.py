"""Single pixels of a sharded Zarr 3 store, reading only the inner chunks that hold them.

A window read (shard_windows.ShardWindows.read) of the box around a chunk's points reads nearly every
inner chunk once the points are spread out (50 random points in a 1024 px shard of 256 px inner
chunks: a box of the whole shard). Here the shards' indexes are fetched in one round, then the
inner chunks under the points in a second (one ranged request each, concurrently on a remote
store); each is decoded into the reader's buffer and the points' pixels are taken from it as
stored, band first: no transposition, no arithmetic, the values a window read gives.
"""

from __future__ import annotations

import numpy as np

from transforms.storage.shard_windows import EMPTY, ShardWindows


class PointsRead:
    """What `read_points` found: values (n, bands) as stored; the shards that are not there."""

    def __init__(self, values: np.ndarray, missing: list[tuple[str, int, int]]):
        self.values = values
        self.missing = missing  # (object name, shard row, shard col) of absent shards


def read_points(
    shards: ShardWindows, time_index: int, rows: np.ndarray, cols: np.ndarray, on_decode=None
) -> PointsRead:
    """The pixels (rows[k], cols[k]) of one time step, (n, bands) in the stored dtype.

    Pixels of an absent shard or an inner chunk never written hold the fill value.
    `on_decode(object name, exc)` -> an exception to raise for an inner chunk that does not
    decode (default: raise the codec's own)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.empty((len(rows), shards.bands), dtype=shards.dtype)
    if not len(rows):
        return PointsRead(out, [])
    if (
        rows.min() < 0
        or cols.min() < 0
        or rows.max() >= shards.height
        or cols.max() >= shards.width
    ):
        raise IndexError("a point outside the array")
    iy, ix = shards.inner_rows, shards.inner_cols
    gy, gx = shards.grid
    inner_r, inner_c = rows // iy, cols // ix  # the inner chunk of each point, in the array
    chunks = sorted(set(zip(inner_r.tolist(), inner_c.tolist())))
    by_shard: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in chunks:
        by_shard.setdefault((r // gy, c // gx), []).append((r, c))
    names = {s: shards._key(time_index, *s) for s in by_shard}
    ib = shards.index_bytes
    at = (-ib, None) if shards.index_at_end else (0, ib)
    indexes = shards._fetch([(names[s], *at) for s in by_shard])
    missing, requests, wanted = [], [], []  # wanted: (inner row, inner col, object name)
    for (s, inner), data in zip(by_shard.items(), indexes):
        if isinstance(data, FileNotFoundError):
            missing.append((names[s], *s))
            for r, c in inner:
                out[(inner_r == r) & (inner_c == c)] = shards.fill
            continue
        try:
            index = _index(shards, data)
        except ValueError as exc:
            if on_decode is None:
                raise
            raise on_decode(names[s], exc) from None
        for r, c in inner:
            offset, nbytes = index[r - s[0] * gy, c - s[1] * gx]
            if offset == EMPTY:
                out[(inner_r == r) & (inner_c == c)] = shards.fill
            else:
                requests.append((names[s], int(offset), int(offset + nbytes)))
                wanted.append((r, c, names[s]))
    fetched = shards._fetch(requests)
    buffer = shards._buffer()
    for (r, c, name), data in zip(wanted, fetched):
        if isinstance(data, FileNotFoundError):  # gone since its index was read
            raise data
        try:
            shards.codec(data, buffer)
        except Exception as exc:
            if on_decode is None:
                raise
            raise on_decode(name, exc) from None
        pick = np.flatnonzero((inner_r == r) & (inner_c == c))
        out[pick] = buffer[:, rows[pick] - r * iy, cols[pick] - c * ix].T
    return PointsRead(out, missing)


def _index(shards: ShardWindows, data: bytes) -> np.ndarray:
    """A shard's index, its checksum checked (a truncated or damaged object fails here, before
    its garbage offsets are requested)."""
    entries = 16 * shards.grid[0] * shards.grid[1]
    if len(data) < shards.index_bytes:
        raise ValueError(f"a shard index of {len(data)} bytes, not {shards.index_bytes}")
    if shards.index_bytes == entries + 4:  # bytes + crc32c: the checksum of the entries
        import google_crc32c

        tail = bytes(data[-shards.index_bytes :])
        if google_crc32c.value(tail[:entries]) != int.from_bytes(tail[entries:], "little"):
            raise ValueError("the shard index's checksum does not match")
    return shards._parse_index(data)
