"""Small embedding stores in the data contract's layout, with known classes, for tests.

Each class is a distinct random unit direction in the 64-band space plus small noise (then
re-normalised, as real embeddings are unit length); the class of a pixel follows a blocky
pattern that changes from year to year and crosses chunk edges. No-data holes are NaN in
every band (-128 codes in the int8 variant), including a hole across a chunk corner.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import zarr

from transforms.core import quantize
from transforms.core.grid import Grid
from transforms.storage import store

BANDS = tuple(f"A{i:02d}" for i in range(64))


@dataclasses.dataclass
class SyntheticStore:
    path: str
    grid: Grid
    years: list[int]
    dtype: str
    chunk_size: int
    labels: np.ndarray  # (time, y, x) class index, -1 where there is no data
    values: (
        np.ndarray
    )  # (time, y, x, band) float32 as a reader sees them (de-quantised for int8), NaN = no data
    directions: np.ndarray  # (classes, band) unit vectors

    @property
    def valid(self) -> np.ndarray:
        return self.labels >= 0


def class_pattern(time_index: int, height: int, width: int, n_classes: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows // 37) + (cols // 29) * 3 + time_index) % n_classes


def make_store(
    path: str,
    *,
    years=(2021, 2022),
    height: int = 300,
    width: int = 260,
    chunk_size: int = 128,
    dtype: str = "float32",
    n_classes: int = 4,
    noise: float = 0.03,
    crs: str = "EPSG:32631",
    x0: float = 500_000.0,
    y0: float = 5_000_000.0,
    scale: float = 10.0,
    seed: int = 0,
    bands=BANDS,
    layout: str = "convention",
) -> SyntheticStore:
    """layout: "convention" (what efm writes now: Zarr 3, (time, band, y, x)) or "v2" (what
    efm wrote before issue 17: Zarr 2, (time, y, x, band), dates as time; still read)."""
    rng = np.random.default_rng(seed)
    bands = tuple(bands)
    directions = rng.normal(size=(n_classes, len(bands)))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels = np.stack([class_pattern(t, height, width, n_classes) for t in range(len(years))])
    values = directions[labels] + rng.normal(scale=noise, size=labels.shape + (len(bands),))
    values /= np.linalg.norm(values, axis=-1, keepdims=True)
    values = values.astype(np.float32)
    holes = rng.random(labels.shape) < 0.01
    holes[:, chunk_size - 12 : chunk_size + 9, chunk_size - 7 : chunk_size + 15] = (
        True  # across a chunk corner
    )
    holes[-1, : min(height, chunk_size), : min(width, chunk_size)] = (
        True  # a whole chunk of no data (never fetched)
    )
    labels[holes] = -1
    values[holes] = np.nan
    if np.dtype(dtype) == np.int8:
        with np.errstate(invalid="ignore"):  # NaN holes become -128 codes
            stored = quantize.quantize(values)
        values = quantize.dequantize(stored)
    else:
        stored = values
    grid = Grid(crs=crs, scale=scale, x0=x0, y0=y0, width=width, height=height)
    template = store.embedding_template(
        grid, list(years), bands, dtype, chunk_size, {"source": "synthetic:store_factory"}
    )
    if layout == "v2":
        write_v2(path, template)
        zarr.open_group(path, mode="r+", zarr_format=2)["embedding"][...] = stored
    else:
        store.setup(path, template)
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        group["embedding"][...] = np.moveaxis(stored, -1, 1)  # (time, band, y, x)
    store.set_status(path, "complete")
    return SyntheticStore(path, grid, list(years), dtype, chunk_size, labels, values, directions)


def write_v2(path: str, template) -> None:
    """Set up a store as efm wrote them before issue 17 (Zarr 2, `embedding (time, y, x, band)`,
    Blosc-LZ4 chunks, time as 1 January of each year, no geoemb: attributes)."""
    from transforms.storage import zarr_direct

    years = [int(y) for y in template["time"].values]
    old = template.transpose("time", "y", "x", "band").assign_coords(
        time=np.array([f"{y}-01-01" for y in years], dtype="datetime64[ns]")
    )
    old["time"].attrs = {}
    old.attrs = {k: v for k, v in old.attrs.items() if not k.startswith("geoemb:")}
    old.attrs["zarr_conventions"] = [
        c for c in old.attrs["zarr_conventions"] if not c["name"].startswith("geoemb")
    ]
    chunks = dict(zip(old["embedding"].dims, old["embedding"].data.chunksize))
    fill = quantize.fill_value(str(old["embedding"].dtype))
    zarr_direct.create(path, old, chunks, {"embedding": fill}, zarr_format=2)


def pixel_centre(s: SyntheticStore, row: int, col: int) -> tuple[float, float]:
    return s.grid.x0 + (col + 0.5) * s.grid.scale, s.grid.y0 - (row + 0.5) * s.grid.scale


def raw_embedding(path: str) -> np.ndarray:
    """The stored values of a store's `embedding` array, read with zarr alone and put in
    (time, y, x, band) order by its own dimension names (Zarr 3's `dimension_names`, or
    xarray's `_ARRAY_DIMENSIONS` in Zarr 2): an oracle independent of efm's readers."""
    array = zarr.open_group(path, mode="r")["embedding"]
    dims = list(
        getattr(array.metadata, "dimension_names", None) or array.attrs["_ARRAY_DIMENSIONS"]
    )
    return np.transpose(array[...], [dims.index(d) for d in ("time", "y", "x", "band")])
