"""The part of a tile source that every source (Earth Engine, the COG mirror) shares."""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from transforms.core import quantize
from transforms.core.chunks import ChunkSpec, chunk_dataset
from transforms.core.grid import Grid, Window
from transforms.sources import request_plan


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
