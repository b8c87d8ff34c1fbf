"""The part of a tile source that every source (Earth Engine, the COG mirror) shares."""

from __future__ import annotations

import dataclasses
import threading
import typing

import numpy as np
import xarray as xr

from transforms.core import quantize
from transforms.core.chunks import ChunkSpec, chunk_dataset
from transforms.core.grid import Grid, Window
from transforms.sources import request_plan


class _ReadMeter(threading.local):
    """Bytes a source actually read in this thread (a fetch thread runs one tile at a time).

    A source that can tell what it read sets `counts_reads` and calls `count_read(n)` inside
    `fetch` (Earth Engine: the response body; the COG mirror: the compressed blocks it decoded);
    `FetchChunks` resets the meter before a tile and takes it after, and falls back to the
    tile's planned size (pixels x bands x transfer itemsize) for a source that does not count.
    """

    total: int | None = None


_meter = _ReadMeter()


def count_read(nbytes: int) -> None:
    _meter.total = (_meter.total or 0) + int(nbytes)


def reset_read() -> None:
    _meter.total = None


def take_read() -> int | None:
    """What this thread's source counted since `reset_read` (None: it counts nothing)."""
    total, _meter.total = _meter.total, None
    return total


@dataclasses.dataclass
class GridSource:
    """Base of tile sources: planning, empty chunks and wrapping are the same for all.

    Subclasses add `setup()` (once per worker) and `fetch(spec, tile)` returning the tile's
    (rows, cols, bands) array in `store_dtype`, raising `fetch.RetryableError` when the
    failure is transient.
    """

    grid: Grid
    years: tuple[int, ...]
    bands: tuple[str, ...]
    store_dtype: str
    transfer_itemsize: int  # bytes per band value in one request
    request_tile_size: int | None = None
    max_request_bytes: int = request_plan.MAX_REQUEST_BYTES
    # True: `fetch` calls `count_read` for every byte it reads, so a tile it counted nothing
    # for read nothing (e.g. outside every file of the mirror).
    counts_reads: typing.ClassVar[bool] = False

    def setup(self) -> None:
        pass

    def plan(self, spec: ChunkSpec) -> list[Window]:
        return request_plan.split_window(
            spec.window,
            len(self.bands),
            self.transfer_itemsize,
            self.request_tile_size,
            self.max_request_bytes,
        )

    def empty_chunk(self, spec: ChunkSpec) -> np.ndarray:
        return np.full(
            (spec.window.rows, spec.window.cols, len(self.bands)),
            quantize.fill_value(self.store_dtype),
            dtype=self.store_dtype,
        )

    def to_dataset(self, spec: ChunkSpec, data: np.ndarray) -> xr.Dataset:
        return chunk_dataset(self.grid, self.years, self.bands, spec, data)
