"""A synthetic stand-in for GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL.

Values are de-quantised int8 codes exactly like the real collection:
``value = float32(((c / 127.5) ** 2) * sign(c))`` for codes c in [-127, 127], so
``round(sign(v) * sqrt(|v|) * 127.5)`` gives c back. Vectors are roughly unit
length and cluster around a few "land cover" centroids laid out on a 250 m
checkerboard in map coordinates (so a classifier has something to learn), with
NaN holes (all bands) for no-data. Everything is deterministic from ``seed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

COLLECTION_ID = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
BAND_NAMES = [f"A{i:02d}" for i in range(64)]
N_CLASSES = 6
_CELL_M = 250.0  # size of the land-cover checkerboard cells


@dataclasses.dataclass(frozen=True)
class TileSpec:
    """One UTM tile: top-left corner (x0, y0) in its CRS, north-up, ``scale`` metre pixels."""

    name: str
    crs: str
    utm_zone: str
    x0: float
    y0: float
    width: int
    height: int
    scale: float = 10.0

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        return (self.scale, 0.0, self.x0, 0.0, -self.scale, self.y0)


def default_tiles(cross_zone: bool = False, width: int = 300, height: int = 400) -> list[TileSpec]:
    """Two side-by-side tiles in UTM 31N near 5.8°E, 45.1°N; optionally one in 32N just east of them.

    The 32N tile overlaps the east edge of tile ``31N_b`` by about 50 pixels so that
    mosaics and cross-zone requests have real work to do.
    """
    x0, y0 = 720_000.0, 5_000_000.0
    tiles = [
        TileSpec("31N_a", "EPSG:32631", "31N", x0, y0, width, height),
        TileSpec("31N_b", "EPSG:32631", "31N", x0 + width * 10.0, y0, width, height),
    ]
    if cross_zone:
        import pyproj  # pylint: disable=import-outside-toplevel

        to_32n = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:32632", always_xy=True)
        east_x, top_y = to_32n.transform(x0 + 2 * width * 10.0, y0)
        cx = np.floor(east_x / 10.0) * 10.0 - 50 * 10.0
        cy = np.floor(top_y / 10.0) * 10.0 + 20 * 10.0
        tiles.append(TileSpec("32N_a", "EPSG:32632", "32N", float(cx), float(cy), width, height))
    return tiles


def quantize(values: np.ndarray) -> np.ndarray:
    """Float embedding values to int8 codes in [-127, 127] (the published COG encoding)."""
    codes = np.round(np.sign(values) * np.sqrt(np.abs(values)) * 127.5)
    return np.clip(codes, -127, 127).astype(np.int8)


def _dequantize_table() -> np.ndarray:
    c = np.arange(-128, 128, dtype=np.float64)
    return (((c / 127.5) ** 2) * np.sign(c)).astype(np.float32)


_DEQUANTIZED = _dequantize_table()


def dequantize(codes: np.ndarray) -> np.ndarray:
    """int8 codes to float32 values, computed in float64 like Earth Engine's served values."""
    return _DEQUANTIZED[codes.astype(np.int16) + 128]


def _centroids(seed: int, year: int) -> np.ndarray:
    base = np.random.default_rng([seed, 0]).standard_normal((N_CLASSES, len(BAND_NAMES)))
    drift = (
        np.random.default_rng([seed, year]).standard_normal(base.shape) * 0.25
    )  # years differ a bit
    vectors = base + drift
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def land_cover(tile: TileSpec, seed: int = 0) -> np.ndarray:
    """The (H, W) class index of each pixel: a checkerboard of 250 m cells in map coordinates."""
    xs = tile.x0 + (np.arange(tile.width) + 0.5) * tile.scale
    ys = tile.y0 - (np.arange(tile.height) + 0.5) * tile.scale
    ix = np.floor(xs / _CELL_M).astype(np.int64)[None, :]
    iy = np.floor(ys / _CELL_M).astype(np.int64)[:, None]
    zone = int(tile.utm_zone[:-1]) if tile.utm_zone[:-1].isdigit() else 0
    mixed = (ix * 73856093) ^ (iy * 19349663) ^ (seed * 83492791 + zone * 2654435761)
    return (mixed % N_CLASSES).astype(np.int64)


def _holes(rng: np.random.Generator, height: int, width: int, fraction: float) -> np.ndarray:
    """Boolean (H, W) no-data mask: one irregular blob plus rectangles, about ``fraction`` of pixels."""
    holes = np.zeros((height, width), bool)
    target = fraction * height * width
    if target <= 0:
        return holes
    rr, cc = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    radius = np.sqrt(0.4 * target / np.pi)
    angle = np.arctan2(rr - cy, cc - cx)
    wobble = 1.0 + 0.3 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi))  # irregular edge
    holes |= np.hypot(rr - cy, cc - cx) < radius * wobble
    for _ in range(50):
        if holes.sum() >= target:
            break
        h = int(rng.integers(3, max(4, height // 8)))
        w = int(rng.integers(3, max(4, width // 8)))
        r0, c0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        holes[r0 : r0 + h, c0 : c0 + w] = True
    return holes


def make_tile_values(
    tile: TileSpec, year: int, seed: int = 0, nodata_fraction: float = 0.05, tile_index: int = 0
) -> np.ndarray:
    """(64, H, W) float32 de-quantised embedding values with NaN holes for one tile and year."""
    rng = np.random.default_rng([seed, year, tile_index, 1])
    classes = land_cover(tile, seed)
    noise = rng.standard_normal((tile.height, tile.width, len(BAND_NAMES)), dtype=np.float32)
    vectors = _centroids(seed, year).astype(np.float32)[classes] + noise * np.float32(0.35)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    values = dequantize(quantize(vectors)).transpose(2, 0, 1).copy()
    values[:, _holes(rng, tile.height, tile.width, nodata_fraction)] = np.nan
    return values


def make_embedding_collection(
    years: Sequence[int] = (2021, 2022),
    tiles: Sequence[TileSpec] | None = None,
    seed: int = 0,
    nodata_fraction: float = 0.05,
    cross_zone: bool = False,
    collection: str = COLLECTION_ID,
) -> list[dict[str, Any]]:
    """``add_image`` keyword dicts for a synthetic 64-band annual collection, year-major order.

    Bands are declared EE ``double`` (like the real collection) though stored as float32.
    """
    tiles = list(tiles) if tiles is not None else default_tiles(cross_zone=cross_zone)
    images = []
    for year in years:
        for index, tile in enumerate(tiles):
            images.append(
                {
                    "collection": collection,
                    "image_id": f"{collection}/{tile.name}_{year}",
                    "data": make_tile_values(tile, year, seed, nodata_fraction, index),
                    "band_names": list(BAND_NAMES),
                    "crs": tile.crs,
                    "transform": tile.transform,
                    "start": f"{year}-01-01",
                    "end": f"{year + 1}-01-01",
                    "properties": {"UTM_ZONE": tile.utm_zone},
                    "data_type": "double",
                }
            )
    return images
