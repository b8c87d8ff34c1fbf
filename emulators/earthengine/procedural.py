"""A procedural embedding collection: pixel values computed per request from their position.

The emulator then stays small however large the area (a continent costs no memory), which
is what a memory benchmark of `efm extract` needs. One image per year covers a square in
one UTM zone; values are de-quantised int8 codes like the real collection's, with square
no-data holes, all a pure function of (year, row, col, band): `pixel_values` is the
reference a test compares a store with.

    python -m emulators.earthengine --procedural [--procedural-years 2021,2022] [--latency 0.3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emulators.earthengine.synthetic import BAND_NAMES, COLLECTION_ID, dequantize

CRS = "EPSG:32631"
X0, Y0 = 600_000.0, 5_100_000.0  # top-left corner (about 6.3°E, 46°N), on the 10 m grid
SIZE = 100_000  # pixels a side: 1,000 km at 10 m
SCALE = 10.0
HOLE = 64  # no-data squares of HOLE px, one in 37 of them


def pixel_values(
    year: int, rows: np.ndarray, cols: np.ndarray, bands: Sequence[int] | None = None
) -> np.ndarray:
    """(len(bands), len(rows), len(cols)) float32 values of the image of `year` at those pixels."""
    bands = np.arange(len(BAND_NAMES)) if bands is None else np.asarray(bands)
    r = np.asarray(rows, np.int64)[None, :, None]
    c = np.asarray(cols, np.int64)[None, None, :]
    b = bands.astype(np.int64)[:, None, None]
    codes = (r * 7 + c * 13 + b * 31 + year * 3) % 255 - 127
    values = dequantize(codes.astype(np.int16))
    holes = ((r // HOLE) * 31 + (c // HOLE) * 17 + year) % 37 == 0
    return np.where(holes, np.float32(np.nan), values)


class _Band:
    """One band of one year, sliced like a 2-D array: values are computed for the slice only."""

    def __init__(self, year: int, band: int, shape: tuple[int, int]):
        self.year, self.band, self.shape, self.dtype = year, band, shape, np.dtype(np.float32)
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (
            isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)
        ):
            raise TypeError(
                "the procedural collection serves grids aligned to its pixels (2-D slices) only"
            )
        rows = range(*key[0].indices(self.shape[0]))
        cols = range(*key[1].indices(self.shape[1]))
        return pixel_values(
            self.year,
            np.arange(rows.start, rows.stop, rows.step),
            np.arange(cols.start, cols.stop, cols.step),
            [self.band],
        )[0]


class ProceduralData:
    """Stands in for an image's (bands, H, W) array without holding it."""

    def __init__(self, year: int, size: int = SIZE):
        self.year = year
        self.shape = (len(BAND_NAMES), size, size)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self.nbytes = int(np.prod(self.shape)) * 4

    def __getitem__(self, index: int) -> _Band:
        return _Band(self.year, int(index), self.shape[1:])


def procedural_collection(
    years: Sequence[int] = (2021,), size: int = SIZE, collection: str = COLLECTION_ID
) -> list[dict[str, Any]]:
    """`add_image` keyword dicts: one procedural image per year."""
    return [
        {
            "collection": collection,
            "image_id": f"{collection}/procedural_{year}",
            "data": ProceduralData(year, size),
            "band_names": list(BAND_NAMES),
            "crs": CRS,
            "transform": (SCALE, 0.0, X0, 0.0, -SCALE, Y0),
            "start": f"{year}-01-01",
            "end": f"{year + 1}-01-01",
            "properties": {"UTM_ZONE": "31N"},
            "data_type": "double",
        }
        for year in years
    ]


def bbox(width_px: int, height_px: int, margin_px: int = 1000) -> str:
    """A lon/lat box whose UTM grid is about width x height px, inside the procedural image."""
    import pyproj

    left, top = X0 + margin_px * SCALE, Y0 - margin_px * SCALE
    right, bottom = left + width_px * SCALE, top - height_px * SCALE
    to_lonlat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    (w, s), (e, n) = to_lonlat.transform(left, bottom), to_lonlat.transform(right, top)
    return f"{w},{s},{e},{n}"
