"""The sample data's world on its reference grid: land-cover classes, textures, no-data.

Each class has a random field summed over several spatial scales, with per-class scale
weights (water and forest form large bodies, built-up and cropland smaller patches); the
class of a pixel is the argmax of the fields, then a river is drawn over them. No-data is
irregular blobs that differ by year. `make_world` also draws each year's class directions
(`sample_embedding`), so the files and the points all come from one `World`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import TYPE_CHECKING

import affine
import numpy as np
import pyproj

from sample_data.embedding import N_BANDS, class_directions, mixing_weights, year_directions
from transforms.sources.cog_paths import zone_crs

if TYPE_CHECKING:
    from sample_data.generate import SampleSpec

CLASS_NAMES = (
    "water",
    "forest",
    "grassland",
    "cropland",
    "built-up",
    "bare",
    "wetland",
    "shrubland",
)
CLASS_COLOURS = (
    "#2b6cb0",
    "#1f5f2e",
    "#9acd32",
    "#e8c547",
    "#c0392b",
    "#b8a89a",
    "#3aa6a0",
    "#7f8c3a",
)
# Relative weight of each spatial scale (sigma in px at 10 m: 50 m to 1.6 km) per class,
# and a bias that sets its share of the map.
_SCALES_PX = (5.0, 16.0, 50.0, 160.0)
_CLASS_SCALE_WEIGHTS = np.array(
    [
        [0.05, 0.15, 0.60, 1.00],  # water: large, smooth lakes
        [0.15, 0.35, 0.90, 0.90],  # forest: large bodies, ragged edges
        [0.15, 0.50, 0.80, 0.50],  # grassland
        [0.10, 0.80, 0.70, 0.40],  # cropland: medium patches
        [0.20, 0.80, 0.50, 0.30],  # built-up: small clusters
        [0.20, 0.40, 0.60, 0.60],  # bare
        [0.25, 0.50, 0.70, 0.40],  # wetland
        [0.30, 0.60, 0.60, 0.40],  # shrubland
    ]
)
_CLASS_BIAS = np.array([-0.35, 0.25, 0.15, 0.10, -0.15, -0.25, -0.30, 0.0])


def seeded(spec: SampleSpec, *keys) -> np.random.Generator:
    """A generator for one use (`keys`): the same for the same seed and keys, whatever else is drawn."""
    digest = hashlib.sha256(repr((spec.seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# ---------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------


def smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise with std 1, at scale `sigma_px` (coarse scales are made
    at low resolution and interpolated up: cheap at any sigma)."""
    from scipy import ndimage

    rows, cols = shape
    factor = max(1, int(sigma_px // 4))
    small = (math.ceil(rows / factor) + 2, math.ceil(cols / factor) + 2)
    field = ndimage.gaussian_filter(
        rng.standard_normal(small).astype(np.float32), sigma_px / factor, mode="wrap"
    )
    if factor > 1:
        field = ndimage.zoom(field, factor, order=3, prefilter=False)
    field = field[:rows, :cols]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def land_cover(shape: tuple[int, int], n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class per pixel (uint8): argmax over per-class multi-scale fields."""
    best = np.full(shape, -np.inf, dtype=np.float32)
    classes = np.zeros(shape, dtype=np.uint8)
    for k in range(n_classes):
        field = np.full(shape, _CLASS_BIAS[k], dtype=np.float32)
        for weight, sigma in zip(_CLASS_SCALE_WEIGHTS[k], _SCALES_PX):
            field += weight * smooth_noise(shape, sigma, rng)
        better = field > best
        classes[better] = k
        best[better] = field[better]
    return classes


def river(shape: tuple[int, int], rng: np.random.Generator, width_px: float = 2.5) -> np.ndarray:
    """A meandering river crossing the area from west to east (bool mask)."""
    from scipy import ndimage

    rows, cols = shape
    steps = cols * 4
    # heading: a slow bend plus meanders, kept within +-70 degrees of east
    bend = ndimage.gaussian_filter1d(rng.standard_normal(steps), 150.0) * 12.0
    meander = ndimage.gaussian_filter1d(rng.standard_normal(steps), 18.0) * 4.0
    heading = np.clip(bend + meander + rng.uniform(-0.3, 0.3), -1.2, 1.2)
    y = rows * rng.uniform(0.3, 0.7) + np.cumsum(np.sin(heading) * 0.5)
    x = np.cumsum(np.cos(heading) * 0.5)
    keep = (x < cols) & (y >= 0) & (y < rows)
    path = np.zeros(shape, dtype=bool)
    path[y[keep].astype(int), x[keep].astype(int)] = True
    width = width_px * (1.0 + 0.4 * np.sin(np.linspace(0, 6, cols)))[np.newaxis, :]
    return ndimage.distance_transform_edt(~path) <= width


def blobs(
    shape: tuple[int, int], fraction: float, rng: np.random.Generator, sigma_px: float = 14.0
) -> np.ndarray:
    """Irregular blobs covering about `fraction` of the area (bool)."""
    if fraction <= 0:
        return np.zeros(shape, dtype=bool)
    field = smooth_noise(shape, sigma_px, rng) + 0.5 * smooth_noise(shape, sigma_px / 3, rng)
    return field > np.quantile(field, 1.0 - fraction)


# ---------------------------------------------------------------------------------------
# The world: reference grid, classes, textures, no-data
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    spec: SampleSpec
    crs: str  # zone A
    transform: affine.Affine  # reference grid, north-up, 10 m
    classes: np.ndarray  # (rows, cols) uint8
    weights: np.ndarray  # (classes, rows, cols) mixing weights at class edges
    texture: np.ndarray  # (T, rows, cols) float32
    nodata: dict[int, np.ndarray]  # year -> (rows, cols) bool
    lon: np.ndarray  # (rows, cols) longitude of pixel centres
    directions: dict[int, np.ndarray]  # year -> (classes, bands)
    texture_dirs: np.ndarray  # (T, classes, bands)
    # the last year's classes and mixing weights where land cover changed (sample_fields)
    later_classes: np.ndarray | None = None
    later_weights: np.ndarray | None = None

    def classes_of(self, year: int) -> tuple[np.ndarray, np.ndarray]:
        if self.later_classes is not None and year == self.spec.years[-1]:
            return self.later_classes, self.later_weights
        return self.classes, self.weights


def apply(t: affine.Affine, cols, rows):
    """Affine transform of arrays of (col, row) -> (x, y)."""
    cols, rows = np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64)
    return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


def reference_grid(spec: SampleSpec) -> tuple[str, affine.Affine]:
    """Zone A grid of spec.rows x spec.cols at 10 m, the zone boundary at boundary_fraction."""
    crs = zone_crs(spec.zone_a)
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    bx, by = to_utm.transform(spec.boundary_lon, spec.centre_lat)
    x0 = math.floor((bx - spec.boundary_fraction * spec.cols * 10.0) / 10.0) * 10.0
    y0 = math.ceil((by + spec.rows * 10.0 / 2) / 10.0) * 10.0
    return crs, affine.Affine(10.0, 0.0, x0, 0.0, -10.0, y0)


def make_world(spec: SampleSpec) -> World:
    crs, transform = reference_grid(spec)
    shape = (spec.rows, spec.cols)
    classes = land_cover(shape, spec.n_classes, seeded(spec, "land-cover"))
    classes[river(shape, seeded(spec, "river"))] = 0  # water
    texture_rng = seeded(spec, "texture")
    texture = np.stack([smooth_noise(shape, s, texture_rng) for s in (3.0, 8.0, 20.0)])
    nodata = {
        year: blobs(shape, spec.nodata_fraction, seeded(spec, "nodata", year))
        for year in spec.years
    }
    cols, rows = np.meshgrid(np.arange(spec.cols) + 0.5, np.arange(spec.rows) + 0.5)
    xs, ys = apply(transform, cols, rows)
    lon, _ = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    rng = seeded(spec, "directions")
    base = class_directions(spec.n_classes, rng, spec.class_similarity)
    drift_dirs = rng.standard_normal(base.shape)
    drift_dirs /= np.linalg.norm(drift_dirs, axis=1, keepdims=True)
    texture_dirs = rng.standard_normal((texture.shape[0], spec.n_classes, N_BANDS))
    texture_dirs *= spec.texture / np.linalg.norm(texture_dirs, axis=-1, keepdims=True)
    directions = {
        y: year_directions(base, drift_dirs, y - spec.years[0], spec.drift) for y in spec.years
    }
    weights = mixing_weights(classes, spec.n_classes, spec.mixing_px)
    world = World(
        spec,
        crs,
        transform,
        classes,
        weights,
        texture,
        nodata,
        np.asarray(lon, dtype=np.float64),
        directions,
        texture_dirs,
    )
    if len(spec.years) > 1:  # a known change between the first and the last year
        from sample_data.fields import change_classes

        world.later_classes, _ = change_classes(world)
        world.later_weights = mixing_weights(world.later_classes, spec.n_classes, spec.mixing_px)
    return world


def inner_bbox(world: World) -> tuple[float, float, float, float]:
    """W,S,E,N (lon/lat) of a box inside the reference grid: extracting it in the reference
    CRS at 10 m gives a grid aligned with (and within) the ground truth."""
    spec = world.spec
    t = world.transform
    margin = 2 * 10.0
    x0, y1 = t.c + margin, t.f - margin
    x1, y0 = t.c + spec.cols * 10.0 - margin, t.f - spec.rows * 10.0 + margin
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    xs = np.concatenate(
        [np.linspace(x0, x1, 50), np.full(50, x1), np.linspace(x0, x1, 50), np.full(50, x0)]
    )
    ys = np.concatenate(
        [np.full(50, y0), np.linspace(y0, y1, 50), np.full(50, y1), np.linspace(y0, y1, 50)]
    )
    lon, lat = to_lonlat.transform(xs, ys)
    # the largest lon/lat box inside the projected rectangle: its corners project inside it
    west, east = np.max(lon[150:200]), np.min(lon[50:100])
    south, north = np.max(lat[:50]), np.min(lat[100:150])
    return (
        round(float(west), 6) + 1e-6,
        round(float(south), 6) + 1e-6,
        round(float(east), 6) - 1e-6,
        round(float(north), 6) - 1e-6,
    )
