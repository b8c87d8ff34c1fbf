"""Chunks of the store and the part of a tile source that every source shares."""
from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr
import xarray_beam as xbeam

from transforms.core import quantize
from transforms.sources import request_plan
from transforms.core.grid import Grid, Window


@dataclasses.dataclass(frozen=True, order=True)
class ChunkSpec:
    """One chunk of the store: a year (time step) and a window of the grid."""

    index: int  # position in the plan; deals chunks to shards round-robin
    time_index: int
    year: int
    window: Window

    @property
    def key(self) -> xbeam.Key:
        return xbeam.Key({"time": self.time_index, "y": self.window.row, "x": self.window.col, "band": 0})

    @property
    def marker(self) -> str:
        """Name of the file that records this chunk as written."""
        return f"{self.time_index}.{self.window.row}.{self.window.col}"

    def describe(self) -> str:
        w = self.window
        return f"year {self.year}, rows {w.row}-{w.row + w.rows}, cols {w.col}-{w.col + w.cols}"


def plan_chunks(years: list[int], windows: list[Window]) -> list[ChunkSpec]:
    """Every (year, window) pair, indexed in a stable order."""
    pairs = [(t, year, w) for t, year in enumerate(years) for w in windows]
    return [ChunkSpec(i, t, year, w) for i, (t, year, w) in enumerate(pairs)]


def chunk_dataset(grid: Grid, years: tuple[int, ...], bands: tuple[str, ...], spec: ChunkSpec, data: np.ndarray) -> xr.Dataset:
    """Wrap one chunk's (rows, cols, bands) array with its coords (equal to the template's)."""
    w = spec.window
    return xr.Dataset(
        {"embedding": (("time", "y", "x", "band"), data[np.newaxis])},
        coords={
            "time": np.array([f"{years[spec.time_index]}-01-01"], dtype="datetime64[ns]"),
            "y": np.array(grid.y_centres(w.row, w.row + w.rows), dtype=np.float64),
            "x": np.array(grid.x_centres(w.col, w.col + w.cols), dtype=np.float64),
            "band": np.array(bands, dtype=object),
        },
    )


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
        return request_plan.split_window(spec.window, len(self.bands), self.transfer_itemsize, self.request_tile_size, self.max_request_bytes)

    def empty_chunk(self, spec: ChunkSpec) -> np.ndarray:
        return np.full((spec.window.rows, spec.window.cols, len(self.bands)), quantize.fill_value(self.store_dtype), dtype=self.store_dtype)

    def to_dataset(self, spec: ChunkSpec, data: np.ndarray) -> xr.Dataset:
        return chunk_dataset(self.grid, self.years, self.bands, spec, data)
