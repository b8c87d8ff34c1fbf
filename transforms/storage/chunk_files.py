"""Whole chunks of a local Zarr v2 array read straight from their files, for the chunk-map path.

Reading a 512 x 512 x 64 float32 chunk through zarr-python costs ~0.13 CPU s, of which the file
read and the blosc decode are half: the rest is its async machinery and one more copy of the
64 MB (benchmarks/RESULTS.md, classify). When a window is exactly one stored chunk of a local
array whose chunks are one compressor and no filters, the file is decoded straight into the
result. Anything else (remote stores, partial or edge windows, a missing chunk file, filters,
Zarr v3) returns None and the caller reads through zarr: the values are the same either way
(tests/test_chunk_files.py).
"""

from __future__ import annotations

import json
import os

import numpy as np


class ChunkFiles:
    """The chunk files of one local Zarr v2 array, or `usable` False."""

    def __init__(self, array_path: str):
        self.usable = False
        try:
            with open(os.path.join(array_path, ".zarray")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return
        if (
            meta.get("zarr_format") != 2
            or meta.get("filters")
            or meta.get("order") != "C"
            or not meta.get("compressor")
        ):
            return
        import numcodecs

        self.path = array_path
        self.codec = numcodecs.get_codec(dict(meta["compressor"]))
        self.dtype = np.dtype(meta["dtype"])
        self.chunks = tuple(meta["chunks"])
        self.shape = tuple(meta["shape"])
        self.separator = meta.get("dimension_separator") or "."
        self.usable = self.dtype.kind in "fiu"

    def read(self, index: tuple[int, slice, slice]) -> np.ndarray | None:
        """array[t, rows, cols, :] (rows, cols, bands) if that is exactly one whole stored chunk (time chunks of 1), else None."""
        if (
            not self.usable
            or len(self.chunks) != 4
            or self.chunks[0] != 1
            or self.chunks[3] != self.shape[3]
        ):
            return None
        t, rows, cols = index
        key = []
        for s, step, total in (
            (rows, self.chunks[1], self.shape[1]),
            (cols, self.chunks[2], self.shape[2]),
        ):
            if (
                s.step not in (None, 1)
                or s.start is None
                or s.start % step
                or s.stop - s.start != step
                or s.stop > total
            ):
                return None
            key.append(s.start // step)
        name = self.separator.join(str(i) for i in (t, *key, 0))
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None  # never written: zarr gives the fill value
        out = np.empty(self.chunks[1:], dtype=self.dtype)
        try:
            self.codec.decode(data, out=out)
        except (
            Exception
        ):  # a codec that cannot decode into `out` (or a size mismatch): let zarr do it
            return None
        return out
