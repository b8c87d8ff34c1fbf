"""The sample data written in the public COG mirror's layout: int8 COGs and their index.

`<mirror>/<year>/<zone>/<name>.tiff` for both UTM zones and every year: zone A's files on
the reference grid, zone B's on its own 10 m grid (reaching a little west of the zone
boundary), with classes and textures from the nearest reference pixel. The index is
written as `aef_index.parquet`, `.gpkg` and `.csv`, with the public index's columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import affine
import numpy as np
import pyproj

from sample_data.embedding import BANDS, embedding_codes
from sample_data.world import World, apply, seeded
from transforms.core import quantize
from transforms.sources.cog_paths import zone_crs

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
        return [
            TilePlan(
                zone,
                world.crs,
                affine.Affine(10.0, 0.0, x0 + c * size * 10.0, 0.0, -10.0, y0 - r * size * 10.0),
                r * size,
                c * size,
                size,
            )
            for r in range(nrows)
            for c in range(ncols)
        ]
    crs = zone_crs(zone)
    left, bottom, right, top = _zone_b_bounds(world, crs)
    span = size * 10.0
    gx0 = math.floor(left / span) * span  # tiles on a zone-wide grid of tile_size multiples
    gy0 = math.ceil(top / span) * span
    ncols = math.ceil((right - gx0) / span)
    nrows = math.ceil((gy0 - bottom) / span)
    return [
        TilePlan(
            zone,
            crs,
            affine.Affine(10.0, 0.0, gx0 + c * span, 0.0, -10.0, gy0 - r * span),
            r * size,
            c * size,
            size,
        )
        for r in range(nrows)
        for c in range(ncols)
    ]


def _zone_b_bounds(world: World, crs: str) -> tuple[float, float, float, float]:
    """Bounds, in zone B's CRS, of the part of the area east of (boundary - overlap)."""
    import shapely

    spec = world.spec
    t = world.transform
    area = shapely.segmentize(
        shapely.box(t.c, t.f - spec.rows * 10.0, t.c + spec.cols * 10.0, t.f), 50.0
    )
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True).transform
    east = shapely.transform(area, to_lonlat, interleaved=False) & shapely.box(
        spec.boundary_lon - spec.zone_b_overlap_deg, -90.0, 180.0, 90.0
    )
    to_b = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform
    return shapely.transform(shapely.segmentize(east, 0.001), to_b, interleaved=False).bounds


def tile_pixels(world: World, tile: TilePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest reference pixel (rows, cols) of each of a tile's pixels, and which of them
    are inside the area and on the tile's side of the zone boundary: the same every year."""
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
    return r, c, inside & in_zone


def tile_fields(
    world: World, tile: TilePlan, year: int, pixels=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes, textures and validity of a tile's pixels, from the nearest reference pixel
    (`pixels`: `tile_pixels` of the tile, when already computed for another year)."""
    r, c, kept = pixels if pixels is not None else tile_pixels(world, tile)
    valid = kept & ~world.nodata[year][r, c]
    classes, weights = world.classes_of(year)
    return classes[r, c], weights[:, r, c], world.texture[:, r, c], valid


def file_name(zone: str, year: int, row_off: int, col_off: int) -> str:
    """Like the mirror's: an opaque prefix, then the file's pixel offsets in its zone."""
    prefix = "x" + hashlib.sha1(f"aef-sample/{zone}/{year}".encode()).hexdigest()[:16]
    return f"{prefix}-{row_off:010d}-{col_off:010d}.tiff"


MIRROR_BLOCK = 1024  # the public mirror's blocks: 1024 x 1024 px of one band (planar-separate)


def write_cog(
    path: str,
    codes: np.ndarray,
    crs: str,
    transform: affine.Affine,
    bottom_up: bool = True,
    block_size: int = MIRROR_BLOCK,
) -> affine.Affine:
    """(rows, cols, bands) int8 -> a COG laid out like the mirror's; returns the transform written.

    Like the public files: int8, nodata -128, bands planar-separate (INTERLEAVE=BAND: each
    block holds one band), blocks of 1024 px (smaller files: one block a side), rows
    bottom-up (positive y resolution, blocks from the south-west corner) unless asked
    otherwise, DEFLATE. `block_size` other than 1024 is for tests (files of many blocks). Unlike them: no overviews (efm reads full resolution only). GDAL
    3.10's COG driver cannot write planar-separate files, so the GTiff driver copies a
    memory dataset with COPY_SRC_OVERVIEWS=YES, which gives the COG byte order (IFD first).
    """
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    rows, cols, bands = codes.shape
    data = np.moveaxis(codes, -1, 0)
    if bottom_up:
        data = data[:, ::-1, :]
        transform = affine.Affine(
            transform.a, 0.0, transform.c, 0.0, -transform.e, transform.f + rows * transform.e
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = min(block_size, -(-max(rows, cols) // 16) * 16)  # GTiff blocks are multiples of 16 px
    with MemoryFile() as memory:
        with memory.open(
            driver="MEM",
            width=cols,
            height=rows,
            count=bands,
            dtype="int8",
            crs=crs,
            transform=transform,
            nodata=quantize.NODATA_CODE,
        ) as mem:
            mem.write(np.ascontiguousarray(data))
            mem.descriptions = BANDS[:bands]
            rasterio.shutil.copy(
                mem,
                path,
                driver="GTiff",
                tiled=True,
                blockxsize=block,
                blockysize=block,
                interleave="band",
                compress="DEFLATE",
                zlevel=1,  # level 1: as small for noise-like codes, less CPU
                copy_src_overviews=True,
                bigtiff="IF_SAFER",
            )
    return transform


def write_mirror(world: World, mirror_dir: str) -> list[dict]:
    """All COG files of both zones and years; returns the index rows."""
    from concurrent.futures import ThreadPoolExecutor

    spec = world.spec
    tiles = {zone: zone_tiles(world, zone) for zone in (spec.zone_a, spec.zone_b)}
    jobs = [
        (year, zone, tile)
        for year in spec.years
        for zone in (spec.zone_a, spec.zone_b)
        for tile in tiles[zone]
    ]
    # One file per thread: numpy, the generators and GDAL release the GIL, and every file's
    # draws are seeded by the file alone, so the files are the same whatever the order.
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(os.sched_getaffinity(0))))) as pool:
        unique = list(dict.fromkeys(tile for _, _, tile in jobs))
        pixels = dict(
            zip(unique, pool.map(lambda tile: tile_pixels(world, tile), unique))
        )  # the same every year
        written = list(
            pool.map(lambda job: _write_file(world, mirror_dir, *job, pixels[job[2]]), jobs)
        )
    rows_out = [row for row in written if row is not None]
    for fid, row in enumerate(rows_out, start=1):
        row["fid"] = fid
    return rows_out


def _write_file(
    world: World, mirror_dir: str, year: int, zone: str, tile: TilePlan, pixels
) -> dict | None:
    """One COG file; its index row (without fid), or None where the tile holds no data."""
    from rasterio.warp import transform_bounds

    spec = world.spec
    classes, weights, texture, valid = tile_fields(world, tile, year, pixels)
    if not valid.any():
        return None  # the mirror has no file where there is no data
    rng = seeded(spec, "pixels", year, zone, tile.row_off, tile.col_off)
    persistent = seeded(spec, "pixels", zone, tile.row_off, tile.col_off)
    codes = embedding_codes(
        classes,
        weights,
        texture,
        valid,
        world.directions[year],
        world.texture_dirs,
        spec.noise,
        rng,
        persistent,
        spec.noise_persistence,
    )
    name = file_name(zone, year, tile.row_off, tile.col_off)
    path = os.path.join(mirror_dir, str(year), zone, name)
    write_cog(
        path, codes, tile.crs, tile.transform, bottom_up=spec.bottom_up, block_size=spec.block_size
    )
    t = tile.transform
    west, north = t.c, t.f
    east, south = t.c + tile.size * t.a, t.f + tile.size * t.e
    lon_lat = transform_bounds(tile.crs, "EPSG:4326", west, south, east, north, densify_pts=21)
    footprint = _footprint_lonlat(tile.crs, west, south, east, north)
    return {
        "fid": 0,
        "path": os.path.abspath(path),
        "year": year,
        "crs": tile.crs,
        "utm_zone": zone,
        "utm_west": west,
        "utm_south": south,
        "utm_east": east,
        "utm_north": north,
        "wgs84_west": lon_lat[0],
        "wgs84_south": lon_lat[1],
        "wgs84_east": lon_lat[2],
        "wgs84_north": lon_lat[3],
        "geometry": footprint,
    }


def _footprint_lonlat(crs: str, west: float, south: float, east: float, north: float):
    import shapely

    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    return shapely.transform(
        shapely.segmentize(shapely.box(west, south, east, north), 100.0),
        to_lonlat,
        interleaved=False,
    )


def write_index(rows: list[dict], mirror_dir: str) -> dict[str, str]:
    """aef_index.parquet (GeoParquet), .gpkg and .csv (geometry as WKT), like the mirror's."""
    import geopandas

    frame = geopandas.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    paths = {
        ext: os.path.join(mirror_dir, f"aef_index.{ext}") for ext in ("parquet", "gpkg", "csv")
    }
    frame.to_parquet(paths["parquet"], index=False)
    frame.to_file(paths["gpkg"], driver="GPKG", layer="aef_index")
    table = frame.drop(columns="geometry").assign(
        geometry=frame.geometry.to_wkt(rounding_precision=-1)
    )
    table.to_csv(paths["csv"], index=False)
    return paths
