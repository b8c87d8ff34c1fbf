"""A collection member's source: any source, with the pixels its zone's store does not hold set to
no data (transforms/core/zones.py: a store holds the pixels whose footprint touches its cell).

A wrapper around the tile source, so every source (Earth Engine, the COG mirror, a Zarr store)
and everything `FetchChunks` does with it (retries, counts, open-chunk slots) stays as it is;
only the tiles near a seam are touched (`zones.footprint_mask` is None for the others).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transforms.core import quantize, zones
from transforms.core.chunks import ChunkSpec
from transforms.core.grid import Grid, Window


@dataclasses.dataclass
class ZoneMask:
    source: object  # a fetch.TileSource
    grid: Grid
    cell: zones.Cell

    def __getattr__(self, name):  # transfer_itemsize, store_dtype, counts_reads, ...
        if name == "source":  # (unpickling: not set yet)
            raise AttributeError(name)
        return getattr(self.source, name)

    def setup(self) -> None:
        self.source.setup()

    def plan(self, spec: ChunkSpec) -> list[Window]:
        return self.source.plan(spec)

    def fetch(self, spec: ChunkSpec, tile: Window) -> np.ndarray:
        keep = zones.footprint_mask(self.grid, tile, self.cell)
        if keep is not None and getattr(self.source, "takes_wanted", False):
            data = self.source.fetch(spec, tile, wanted=keep)  # (the mirror: no block beyond)
        else:
            data = self.source.fetch(spec, tile)
        if keep is not None and not keep.all():
            data = np.array(data, copy=True) if not data.flags.writeable else data
            data[~keep] = quantize.fill_value(str(data.dtype))
        return data

    def empty_chunk(self, spec: ChunkSpec) -> np.ndarray:
        return self.source.empty_chunk(spec)

    def to_dataset(self, spec: ChunkSpec, data: np.ndarray):
        return self.source.to_dataset(spec, band_first(data))


def band_first(data: np.ndarray) -> np.ndarray:
    """A tile (rows, cols, bands) -> the same values, as a view of a band-first array: the
    store's own order (a Zarr 3 embedding store is (time, band, y, x)), so the writer's transpose
    is a view and zarr encodes it without a copy. Copied a row at a time (each row's (cols, bands)
    block transposed in cache): ~5x less CPU than the strided copy zarr's codec otherwise makes
    of a band-last chunk (0.06 vs 0.3 s for 1024^2 px x 64 bands, int8; the profile of a
    two-zone extract showed it in zarr's bytes codec, a single store pays it in zarr's chunk
    buffer)."""
    if data.ndim != 3 or not data.flags.c_contiguous:
        return data
    out = np.empty((data.shape[2], data.shape[0], data.shape[1]), dtype=data.dtype)
    for r in range(data.shape[0]):
        out[:, r, :] = data[r].T
    return np.moveaxis(out, 0, -1)
