"""Chunks of the store: a year and a window of the grid, its marker, and its Dataset."""

from __future__ import annotations

import dataclasses
import pickle

import apache_beam as beam
import numpy as np
import xarray as xr
import xarray_beam as xbeam

from transforms.core.grid import Grid, Window

MARKER_DIR = (
    ".efm/done"  # under the store's root: one empty file per chunk written (ChunkSpec.marker)
)


class DatasetCoder(beam.coders.Coder):
    """xarray Datasets pickled, as Beam's fallback coder does, but sized without encoding them.

    Beam's runners sample element sizes for their counters by encoding the element: always
    the first 10 elements of every step, then about 7 per doubling. For a 64 MB chunk that
    is a 64 MB pickle, costing as much CPU as reading it; `estimate_size` here is its nbytes.
    """

    def encode(self, value: xr.Dataset) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> xr.Dataset:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: xr.Dataset) -> int:
        return int(value.nbytes)


beam.coders.registry.register_coder(xr.Dataset, DatasetCoder)
CHUNK = tuple[
    xbeam.Key, xr.Dataset
]  # the element type of chunk PCollections: `.with_output_types(CHUNK)`


@dataclasses.dataclass(frozen=True, order=True)
class ChunkSpec:
    """One chunk of the store: a year (time step) and a window of the grid."""

    index: int  # position in the plan; deals chunks to shards round-robin
    time_index: int
    year: int
    window: Window

    @property
    def key(self) -> xbeam.Key:
        return xbeam.Key(
            {"time": self.time_index, "y": self.window.row, "x": self.window.col, "band": 0}
        )

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


def chunk_dataset(
    grid: Grid, years: tuple[int, ...], bands: tuple[str, ...], spec: ChunkSpec, data: np.ndarray
) -> xr.Dataset:
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
