"""Realistic sample data in the public COG mirror's layout: pure generator functions.

What `efm make-sample-data` (and `efm demo`) writes under one folder:

    mirror/aef_index.parquet|.gpkg|.csv    the index, with the public index's columns
    mirror/<year>/<zone>/<name>.tiff       int8 COGs, 64 bands A00..A63, nodata -128,
                                           in two adjacent UTM zones, for two years
    ground_truth.tif                       the land-cover classes (uint8, 255 = none)
                                           on the reference grid (zone A, 10 m)
    labels.geojson                         labelled points (lon/lat), a few dozen a class
    colors.json                            {label: colour} (for `efm export --colors`)
    sample_data.json                       what was generated: grid, classes, files

How the data is made, so that it looks and behaves like the real thing:

* land cover: each class has a random field summed over several spatial scales
  (smoothed noise, 40 m to 1.6 km), with per-class scale weights (water and forest form
  large bodies, built-up and cropland smaller patches); the class of a pixel is the
  argmax of the fields: irregular, nested shapes at several scales;
* embedding: each class is a direction on the unit sphere in 64-d (distinct, but not
  orthogonal: they share a common component), moved within a class by a few spatially
  smooth "texture" fields, plus per-pixel noise, and drifting a little from one year to
  the next; each vector is normalised to unit length, then quantised with the mirror's
  formula (code = round(sign(x) sqrt(|x|) 127.5));
* no-data: irregular blobs that differ by year (as gaps in the real data do);
* two UTM zones: the reference grid is in zone A; each zone's files hold the pixels
  on its side of the zone boundary (zone B a little past it), zone B's on its own
  10 m grid, with classes and textures taken from the nearest reference pixel;
* labelled points: clustered in the interior of a few patches per class, the way a
  person digitises training points, never in no-data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import affine
import numpy as np
import pyproj

from transforms import quantize

N_BANDS = 64
BANDS = tuple(f"A{i:02d}" for i in range(N_BANDS))
CLASS_NAMES = ("water", "forest", "grassland", "cropland", "built-up", "bare", "wetland", "shrubland")
CLASS_COLOURS = ("#2b6cb0", "#1f5f2e", "#9acd32", "#e8c547", "#c0392b", "#b8a89a", "#3aa6a0", "#7f8c3a")
# Relative weight of each spatial scale (sigma in px at 10 m: 50 m to 1.6 km) per class,
# and a bias that sets its share of the map.
_SCALES_PX = (5.0, 16.0, 50.0, 160.0)
_CLASS_SCALE_WEIGHTS = np.array([
    [0.05, 0.15, 0.60, 1.00],  # water: large, smooth lakes
    [0.15, 0.35, 0.90, 0.90],  # forest: large bodies, ragged edges
    [0.15, 0.50, 0.80, 0.50],  # grassland
    [0.10, 0.80, 0.70, 0.40],  # cropland: medium patches
    [0.20, 0.80, 0.50, 0.30],  # built-up: small clusters
    [0.20, 0.40, 0.60, 0.60],  # bare
    [0.25, 0.50, 0.70, 0.40],  # wetland
    [0.30, 0.60, 0.60, 0.40],  # shrubland
])
_CLASS_BIAS = np.array([-0.35, 0.25, 0.15, 0.10, -0.15, -0.25, -0.30, 0.0])
NODATA_CLASS = 255
MIRROR_DIR = "mirror"


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """What to generate. Sizes are in 10 m pixels of the reference grid."""

    rows: int = 1024
    cols: int = 1280
    tile_size: int = 512  # side of each COG file (the public mirror's: 8192)
    years: tuple[int, ...] = (2022, 2023)
    zone_a: str = "10N"  # the reference grid's zone; zone B is the next one east
    boundary_fraction: float = 0.6  # where the zone boundary crosses the area, from the west
    centre_lat: float = 39.0
    n_classes: int = 8
    points_per_class: int = 36
    noise: float = 0.15  # per-band std of per-pixel noise (|noise| ~ 1.2 before normalising)
    noise_persistence: float = 0.8  # share of the noise variance a pixel keeps from year to year
    texture: float = 0.38  # amplitude of the smooth within-class variation
    drift: float = 0.12  # year-to-year drift of each class direction
    class_similarity: float = 0.65  # cosine shared by every pair of class directions
    mixing_px: float = 0.8  # class edges blur over about this many pixels (mixed pixels)
    nodata_fraction: float = 0.03  # of the area, per year
    zone_b_overlap_deg: float = 0.004  # zone B's files reach this far west of the boundary
    bottom_up: bool = False  # write rows bottom-up (positive y resolution), like some mirrors
    seed: int = 7

    def __post_init__(self):
        if not 2 <= self.n_classes <= len(CLASS_NAMES):
            raise ValueError(f"n_classes must be in 2..{len(CLASS_NAMES)}")
        if self.rows < 64 or self.cols < 64 or self.tile_size < 64:
            raise ValueError("rows, cols and tile_size must be at least 64 px")

    @property
    def zone_b(self) -> str:
        number, hemisphere = int(self.zone_a[:-1]), self.zone_a[-1].upper()
        return f"{number % 60 + 1}{hemisphere}"

    @property
    def boundary_lon(self) -> float:
        return -180.0 + 6.0 * int(self.zone_a[:-1])


SMALL = dict(rows=256, cols=320, tile_size=128, points_per_class=24)


def zone_crs(zone: str) -> str:
    return f"EPSG:{(32600 if zone[-1].upper() == 'N' else 32700) + int(zone[:-1])}"


def _seeded(spec: SampleSpec, *keys) -> np.random.Generator:
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
    field = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma_px / factor, mode="wrap")
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


def blobs(shape: tuple[int, int], fraction: float, rng: np.random.Generator, sigma_px: float = 14.0) -> np.ndarray:
    """Irregular blobs covering about `fraction` of the area (bool)."""
    if fraction <= 0:
        return np.zeros(shape, dtype=bool)
    field = smooth_noise(shape, sigma_px, rng) + 0.5 * smooth_noise(shape, sigma_px / 3, rng)
    return field > np.quantile(field, 1.0 - fraction)


def class_directions(n_classes: int, rng: np.random.Generator, similarity: float, n_bands: int = N_BANDS) -> np.ndarray:
    """(classes, bands) unit vectors, pairwise cosine ~ `similarity`: distinct, not orthogonal."""
    common = rng.standard_normal(n_bands)
    common /= np.linalg.norm(common)
    own = rng.standard_normal((n_classes, n_bands))
    own -= np.outer(own @ common, common)  # orthogonal to the common part
    q, _ = np.linalg.qr(own.T)  # and to each other
    own = q.T[:n_classes]
    directions = math.sqrt(similarity) * common + math.sqrt(1 - similarity) * own
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def year_directions(base: np.ndarray, drift_dirs: np.ndarray, year_offset: int, drift: float) -> np.ndarray:
    moved = base + drift * year_offset * drift_dirs
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def mixing_weights(classes: np.ndarray, n_classes: int, sigma_px: float) -> np.ndarray:
    """(classes, rows, cols) float32 weights summing to 1: the one-hot classes blurred by
    `sigma_px`, so that pixels on a class edge mix the two classes, as real pixels do."""
    from scipy import ndimage

    weights = np.stack([ndimage.gaussian_filter((classes == k).astype(np.float32), sigma_px, mode="nearest") for k in range(n_classes)])
    weights /= weights.sum(axis=0, keepdims=True)
    return weights


def embedding_codes(classes: np.ndarray, weights: np.ndarray, texture: np.ndarray, valid: np.ndarray, directions: np.ndarray,
                    texture_dirs: np.ndarray, noise: float, rng: np.random.Generator,
                    persistent_rng: np.random.Generator | None = None, persistence: float = 0.0) -> np.ndarray:
    """int8 codes (rows, cols, bands): mixed class directions + texture + noise, unit length, quantised.

    classes (rows, cols) uint8; weights (classes, rows, cols) mixing weights; texture (T, rows,
    cols); valid (rows, cols) bool; directions (classes, bands); texture_dirs (T, classes, bands).
    A share `persistence` of the noise variance comes from `persistent_rng` (the same draw
    every year: a pixel keeps its character), the rest from `rng` (this year's).
    """
    c = np.where(valid, classes, 0).astype(np.intp)
    vectors = np.tensordot(np.moveaxis(weights, 0, -1), directions.astype(np.float32), axes=1).astype(np.float32)
    for t in range(texture.shape[0]):
        vectors += texture[t][..., np.newaxis] * texture_dirs[t].astype(np.float32)[c]
    if persistent_rng is not None and persistence > 0:
        vectors += persistent_rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(noise * math.sqrt(persistence))
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(noise * math.sqrt(1 - persistence))
    else:
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(noise)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    codes = quantize.quantize(vectors)
    codes[~valid] = quantize.NODATA_CODE
    return codes


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
    classes = land_cover(shape, spec.n_classes, _seeded(spec, "land-cover"))
    classes[river(shape, _seeded(spec, "river"))] = 0  # water
    texture_rng = _seeded(spec, "texture")
    texture = np.stack([smooth_noise(shape, s, texture_rng) for s in (3.0, 8.0, 20.0)])
    nodata = {year: blobs(shape, spec.nodata_fraction, _seeded(spec, "nodata", year)) for year in spec.years}
    cols, rows = np.meshgrid(np.arange(spec.cols) + 0.5, np.arange(spec.rows) + 0.5)
    xs, ys = apply(transform, cols, rows)
    lon, _ = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    rng = _seeded(spec, "directions")
    base = class_directions(spec.n_classes, rng, spec.class_similarity)
    drift_dirs = rng.standard_normal(base.shape)
    drift_dirs /= np.linalg.norm(drift_dirs, axis=1, keepdims=True)
    texture_dirs = rng.standard_normal((texture.shape[0], spec.n_classes, N_BANDS))
    texture_dirs *= spec.texture / np.linalg.norm(texture_dirs, axis=-1, keepdims=True)
    directions = {y: year_directions(base, drift_dirs, y - spec.years[0], spec.drift) for y in spec.years}
    weights = mixing_weights(classes, spec.n_classes, spec.mixing_px)
    return World(spec, crs, transform, classes, weights, texture, nodata, np.asarray(lon, dtype=np.float64), directions, texture_dirs)


# ---------------------------------------------------------------------------------------
# Files of one zone
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TilePlan:
    zone: str
    crs: str
    transform: affine.Affine  # north-up transform of the tile
    row_off: int  # offset in the zone's tile grid (for the file name)
    col_off: int
    size: int


def zone_tiles(world: World, zone: str) -> list[TilePlan]:
    """Tiles (tile_size squares on the zone's 10 m grid) covering the zone's part of the area."""
    spec = world.spec
    size = spec.tile_size
    if zone == spec.zone_a:
        x0, y0 = world.transform.c, world.transform.f
        ncols, nrows = math.ceil(spec.cols / size), math.ceil(spec.rows / size)
        return [TilePlan(zone, world.crs, affine.Affine(10.0, 0.0, x0 + c * size * 10.0, 0.0, -10.0, y0 - r * size * 10.0), r * size, c * size, size)
                for r in range(nrows) for c in range(ncols)]
    crs = zone_crs(zone)
    left, bottom, right, top = _zone_b_bounds(world, crs)
    span = size * 10.0
    gx0 = math.floor(left / span) * span  # tiles on a zone-wide grid of tile_size multiples
    gy0 = math.ceil(top / span) * span
    ncols = math.ceil((right - gx0) / span)
    nrows = math.ceil((gy0 - bottom) / span)
    return [TilePlan(zone, crs, affine.Affine(10.0, 0.0, gx0 + c * span, 0.0, -10.0, gy0 - r * span), r * size, c * size, size)
            for r in range(nrows) for c in range(ncols)]


def _zone_b_bounds(world: World, crs: str) -> tuple[float, float, float, float]:
    """Bounds, in zone B's CRS, of the part of the area east of (boundary - overlap)."""
    import shapely
    
    spec = world.spec
    t = world.transform
    area = shapely.segmentize(shapely.box(t.c, t.f - spec.rows * 10.0, t.c + spec.cols * 10.0, t.f), 50.0)
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True).transform
    east = shapely.transform(area, to_lonlat, interleaved=False) & shapely.box(spec.boundary_lon - spec.zone_b_overlap_deg, -90.0, 180.0, 90.0)
    to_b = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform
    return shapely.transform(shapely.segmentize(east, 0.001), to_b, interleaved=False).bounds


def tile_fields(world: World, tile: TilePlan, year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes, textures and validity of a tile's pixels, from the nearest reference pixel."""
    spec = world.spec
    n = tile.size
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    xs, ys = apply(tile.transform, cols, rows)
    if tile.crs != world.crs:
        xs, ys = pyproj.Transformer.from_crs(tile.crs, world.crs, always_xy=True).transform(xs, ys)
    inverse = ~world.transform
    fc, fr = apply(inverse, xs, ys)
    r, c = np.floor(fr).astype(np.intp), np.floor(fc).astype(np.intp)
    inside = (r >= 0) & (r < spec.rows) & (c >= 0) & (c < spec.cols)
    r, c = np.where(inside, r, 0), np.where(inside, c, 0)
    lon = world.lon[r, c]
    if tile.zone == spec.zone_a:
        in_zone = lon < spec.boundary_lon
    else:
        in_zone = lon >= spec.boundary_lon - spec.zone_b_overlap_deg
    valid = inside & in_zone & ~world.nodata[year][r, c]
    return world.classes[r, c], world.weights[:, r, c], world.texture[:, r, c], valid


def file_name(zone: str, year: int, row_off: int, col_off: int) -> str:
    """Like the mirror's: an opaque prefix, then the file's pixel offsets in its zone."""
    prefix = "x" + hashlib.sha1(f"aef-sample/{zone}/{year}".encode()).hexdigest()[:16]
    return f"{prefix}-{row_off:010d}-{col_off:010d}.tiff"


def write_cog(path: str, codes: np.ndarray, crs: str, transform: affine.Affine, bottom_up: bool = False) -> affine.Affine:
    """(rows, cols, bands) int8 -> a COG like the mirror's; returns the transform written."""
    import rasterio

    rows, cols, bands = codes.shape
    data = np.moveaxis(codes, -1, 0)
    if bottom_up:
        data = data[:, ::-1, :]
        transform = affine.Affine(transform.a, 0.0, transform.c, 0.0, -transform.e, transform.f + rows * transform.e)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = 256 if min(rows, cols) >= 256 else 128
    with rasterio.open(path, "w", driver="COG", width=cols, height=rows, count=bands, dtype="int8", crs=crs,
                       transform=transform, nodata=quantize.NODATA_CODE, compress="DEFLATE", blocksize=block,
                       overviews="NONE") as dst:
        dst.write(np.ascontiguousarray(data))
        dst.descriptions = BANDS[:bands]
    return transform


def write_mirror(world: World, mirror_dir: str) -> list[dict]:
    """All COG files of both zones and years; returns the index rows."""
    from rasterio.warp import transform_bounds

    spec = world.spec
    rows_out = []
    for year in spec.years:
        for zone in (spec.zone_a, spec.zone_b):
            for tile in zone_tiles(world, zone):
                classes, weights, texture, valid = tile_fields(world, tile, year)
                if not valid.any():
                    continue  # the mirror has no file where there is no data
                rng = _seeded(spec, "pixels", year, zone, tile.row_off, tile.col_off)
                persistent = _seeded(spec, "pixels", zone, tile.row_off, tile.col_off)
                codes = embedding_codes(classes, weights, texture, valid, world.directions[year], world.texture_dirs, spec.noise, rng,
                                        persistent, spec.noise_persistence)
                name = file_name(zone, year, tile.row_off, tile.col_off)
                path = os.path.join(mirror_dir, str(year), zone, name)
                write_cog(path, codes, tile.crs, tile.transform, bottom_up=spec.bottom_up)
                t = tile.transform
                west, north = t.c, t.f
                east, south = t.c + tile.size * t.a, t.f + tile.size * t.e
                lon_lat = transform_bounds(tile.crs, "EPSG:4326", west, south, east, north, densify_pts=21)
                footprint = _footprint_lonlat(tile.crs, west, south, east, north)
                rows_out.append({
                    "fid": len(rows_out) + 1,
                    "path": os.path.abspath(path),
                    "year": year,
                    "crs": tile.crs,
                    "utm_zone": zone,
                    "utm_west": west, "utm_south": south, "utm_east": east, "utm_north": north,
                    "wgs84_west": lon_lat[0], "wgs84_south": lon_lat[1], "wgs84_east": lon_lat[2], "wgs84_north": lon_lat[3],
                    "geometry": footprint,
                })
    return rows_out


def _footprint_lonlat(crs: str, west: float, south: float, east: float, north: float):
    import shapely
    
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    return shapely.transform(shapely.segmentize(shapely.box(west, south, east, north), 100.0), to_lonlat, interleaved=False)


def write_index(rows: list[dict], mirror_dir: str) -> dict[str, str]:
    """aef_index.parquet (GeoParquet), .gpkg and .csv (geometry as WKT), like the mirror's."""
    import geopandas

    frame = geopandas.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    paths = {ext: os.path.join(mirror_dir, f"aef_index.{ext}") for ext in ("parquet", "gpkg", "csv")}
    frame.to_parquet(paths["parquet"], index=False)
    frame.to_file(paths["gpkg"], driver="GPKG", layer="aef_index")
    table = frame.drop(columns="geometry").assign(geometry=frame.geometry.to_wkt(rounding_precision=-1))
    table.to_csv(paths["csv"], index=False)
    return paths


# ---------------------------------------------------------------------------------------
# Ground truth and labelled points
# ---------------------------------------------------------------------------------------

def write_ground_truth(world: World, path: str) -> None:
    """The class raster on the reference grid (uint8, 255 = none), with a colour table."""
    import rasterio

    spec = world.spec
    colormap = {k: tuple(int(CLASS_COLOURS[k][i : i + 2], 16) for i in (1, 3, 5)) + (255,) for k in range(spec.n_classes)}
    with rasterio.open(path, "w", driver="GTiff", width=spec.cols, height=spec.rows, count=1, dtype="uint8", crs=world.crs,
                       transform=world.transform, nodata=NODATA_CLASS, compress="DEFLATE", tiled=True) as dst:
        dst.write(world.classes, 1)
        dst.write_colormap(1, colormap)
        dst.update_tags(classes=json.dumps(list(CLASS_NAMES[: spec.n_classes])))
        dst.set_band_description(1, "land cover class (index into the 'classes' tag)")


def labelled_points(world: World, rng: np.random.Generator, min_edge_px: float = 4.0) -> list[dict]:
    """A few dozen points a class, clustered inside a few patches, away from edges and no-data.

    Returns dicts with row, col (reference grid), lon, lat, class_id, label.
    """
    from scipy import ndimage

    spec = world.spec
    any_nodata = np.zeros((spec.rows, spec.cols), dtype=bool)
    for mask in world.nodata.values():
        any_nodata |= mask
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    points = []
    for k in range(spec.n_classes):
        mask = world.classes == k
        interior = ndimage.distance_transform_edt(mask) >= min_edge_px
        interior &= ~ndimage.binary_dilation(any_nodata, iterations=3)
        interior[:3, :] = interior[-3:, :] = False
        interior[:, :3] = interior[:, -3:] = False
        if not interior.any():
            interior = mask & ~any_nodata
        if not interior.any():
            continue
        patches, n_patches = ndimage.label(interior)
        sizes = np.bincount(patches.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        # like a person: several patches, the bigger ones more often, a handful of clicks in each
        chosen = order[: max(1, min(n_patches, spec.points_per_class // 4))]
        weights = np.sqrt(sizes[chosen].astype(float))
        counts = rng.multinomial(spec.points_per_class, weights / weights.sum())
        for patch, count in zip(chosen, counts):
            rr, cc = np.nonzero(patches == patch + 1)
            centre = rng.integers(len(rr))  # clicks cluster around a spot in the patch
            distance = (rr - rr[centre]) ** 2 + (cc - cc[centre]) ** 2
            nearby = np.argsort(distance)[: max(count * 60, 100)]
            picks = rng.choice(nearby, size=min(count, len(nearby)), replace=False)
            for i in picks:
                x, y = apply(world.transform, cc[i] + rng.uniform(0.2, 0.8), rr[i] + rng.uniform(0.2, 0.8))
                lon, lat = to_lonlat.transform(x, y)
                points.append({"row": int(rr[i]), "col": int(cc[i]), "lon": float(lon), "lat": float(lat), "class_id": k, "label": CLASS_NAMES[k]})
    return points


def write_points(points: list[dict], path: str) -> None:
    features = [{
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(p["lon"], 8), round(p["lat"], 8)]},
        "properties": {"label": p["label"], "class_id": p["class_id"]},
    } for p in points]
    with open(path, "w") as f:
        json.dump({"type": "FeatureCollection", "features": features}, f)


# ---------------------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class SampleData:
    output: str
    mirror: str
    ground_truth: str
    points: str
    colors: str
    manifest: str
    index: dict[str, str]
    files: list[str]
    bbox: tuple[float, float, float, float]  # W,S,E,N of the reference grid (lon/lat)
    crs: str
    n_points: int
    spec: SampleSpec


def generate(output: str, spec: SampleSpec = SampleSpec()) -> SampleData:
    """Write the mirror, its index, the ground truth and the labelled points under `output`."""
    os.makedirs(output, exist_ok=True)
    world = make_world(spec)
    mirror = os.path.join(output, MIRROR_DIR)
    rows = write_mirror(world, mirror)
    index = write_index(rows, mirror)
    ground_truth = os.path.join(output, "ground_truth.tif")
    write_ground_truth(world, ground_truth)
    points = labelled_points(world, _seeded(spec, "points"))
    points_path = os.path.join(output, "labels.geojson")
    write_points(points, points_path)
    colors = os.path.join(output, "colors.json")
    with open(colors, "w") as f:
        json.dump(dict(zip(CLASS_NAMES[: spec.n_classes], CLASS_COLOURS)), f, indent=1)
    bbox = inner_bbox(world)
    manifest = os.path.join(output, "sample_data.json")
    with open(manifest, "w") as f:
        json.dump({
            "spec": dataclasses.asdict(spec),
            "crs": world.crs,
            "transform": list(world.transform)[:6],
            "bbox": bbox,
            "zones": [spec.zone_a, spec.zone_b],
            "classes": list(CLASS_NAMES[: spec.n_classes]),
            "colours": list(CLASS_COLOURS[: spec.n_classes]),
            "files": [r["path"] for r in rows],
            "points": len(points),
        }, f, indent=1)
    return SampleData(output, mirror, ground_truth, points_path, colors, manifest, index, [r["path"] for r in rows], bbox, world.crs, len(points), spec)


def inner_bbox(world: World) -> tuple[float, float, float, float]:
    """W,S,E,N (lon/lat) of a box inside the reference grid: extracting it in the reference
    CRS at 10 m gives a grid aligned with (and within) the ground truth."""
    spec = world.spec
    t = world.transform
    margin = 2 * 10.0
    x0, y1 = t.c + margin, t.f - margin
    x1, y0 = t.c + spec.cols * 10.0 - margin, t.f - spec.rows * 10.0 + margin
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    xs = np.concatenate([np.linspace(x0, x1, 50), np.full(50, x1), np.linspace(x0, x1, 50), np.full(50, x0)])
    ys = np.concatenate([np.full(50, y0), np.linspace(y0, y1, 50), np.full(50, y1), np.linspace(y0, y1, 50)])
    lon, lat = to_lonlat.transform(xs, ys)
    # the largest lon/lat box inside the projected rectangle: its corners project inside it
    west, east = np.max(lon[150:200]), np.min(lon[50:100])
    south, north = np.max(lat[:50]), np.min(lat[100:150])
    return (round(float(west), 6) + 1e-6, round(float(south), 6) + 1e-6, round(float(east), 6) - 1e-6, round(float(north), 6) - 1e-6)


# ---------------------------------------------------------------------------------------
# Scoring a class map against the ground truth
# ---------------------------------------------------------------------------------------

def read_ground_truth(path: str) -> tuple[np.ndarray, affine.Affine, str, list[str]]:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, f"EPSG:{ds.crs.to_epsg()}", json.loads(ds.tags()["classes"])


def truth_on_grid(truth_path: str, crs: str, transform: affine.Affine, shape: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """The ground-truth classes on another grid (nearest neighbour; exact when aligned)."""
    import rasterio.warp
    from rasterio.enums import Resampling

    classes, t, truth_crs, names = read_ground_truth(truth_path)
    out = np.full(shape, NODATA_CLASS, dtype=np.uint8)
    rasterio.warp.reproject(classes, out, src_transform=t, src_crs=truth_crs, src_nodata=NODATA_CLASS,
                            dst_transform=transform, dst_crs=crs, dst_nodata=NODATA_CLASS, resampling=Resampling.nearest)
    return out, names


def point_pixels(points_path: str, crs: str, transform: affine.Affine, shape: tuple[int, int], radius_px: int = 1) -> np.ndarray:
    """Pixels within `radius_px` of a labelled point (bool): what held-out scoring leaves out."""
    with open(points_path) as f:
        coords = np.array([feat["geometry"]["coordinates"][:2] for feat in json.load(f)["features"]], dtype=float).reshape(-1, 2)
    mask = np.zeros(shape, dtype=bool)
    if not len(coords):
        return mask
    xs, ys = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(coords[:, 0], coords[:, 1])
    cols, rows = apply(~transform, xs, ys)
    for r, c in zip(np.floor(rows).astype(int), np.floor(cols).astype(int)):
        mask[max(0, r - radius_px) : r + radius_px + 1, max(0, c - radius_px) : c + radius_px + 1] = True
    return mask


def score(predicted: np.ndarray, predicted_labels: list[str], fill: int, truth: np.ndarray, truth_names: list[str],
          exclude: np.ndarray | None = None) -> dict:
    """Held-out accuracy of a class map against the ground truth (both on one grid).

    `predicted` holds indices into `predicted_labels` (`fill` = no data); pixels in `exclude`
    (the labelled points) and pixels without data on either side are left out.
    """
    lookup = np.full(max(int(predicted.max(initial=0)), fill, len(predicted_labels)) + 1, -1, dtype=np.int64)
    for value, label in enumerate(predicted_labels):
        lookup[value] = truth_names.index(label) if label in truth_names else -2
    mapped = lookup[predicted]
    scored = (predicted != fill) & (truth != NODATA_CLASS) & (mapped != -1)
    if exclude is not None:
        scored &= ~exclude
    hits = (mapped == truth) & scored
    per_class = {}
    for k, name in enumerate(truth_names):
        of_class = scored & (truth == k)
        if of_class.any():
            per_class[name] = float(hits[of_class].sum() / of_class.sum())
    n = int(scored.sum())
    return {"accuracy": float(hits.sum() / n) if n else float("nan"), "pixels": n, "recall": per_class}
