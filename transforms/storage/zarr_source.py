"""A convention Zarr store as a tile source: `efm extract --source zarr --zarr-root URL`.

Any store `transforms/storage/layouts.py` reads (the public AEF mosaic, a TESSERA zone group,
efm's own stores, old or new) is copied, a region at a time, into a store of ours. The store's
bands and quantisation come from the source (any number of bands, int8 codes or floats).

Two grids (`choose_grid`):

- **source** (the default for a store in a projected CRS): the source's own pixels, a
  pixel-aligned window of its grid (same CRS, same origin and pixel size) around the area,
  clipped to the store: values are copied, never resampled (int8 codes stay the same codes);
- **utm** (the default for a store in degrees, such as the public AEF mosaic in EPSG:4326, and
  what `--tuning grid=utm`, `--crs` or `--tuning scale=` ask for): the grid `--source ee/cog` would plan for the
  area (`grid.plan_grid`: `--crs`, default the UTM zone of its centre, at the `scale` tuning key), each
  target pixel taking the source pixel under its centre, by the COG source's rule
  (`cog_read.read_into_grid`: one implementation for both sources). Where that grid lies on the
  source's own pixels, it is the same plain copy.

A chunk is read through `cog_read.read_into_grid` with the store's **inner chunks** as its
blocks: only the inner chunks that the chunk's pixels touch are read (`layout_view.LayoutReader`),
each decoded once per process while nearby chunks want it (`cog_blocks.BlockCache`, shared with
the fetch threads, keyed by this run). What was read is counted as the decoded size of those
inner chunks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
import uuid

import affine
import numpy as np

from transforms.core import grid as gridlib
from transforms.core import quantize
from transforms.core.chunks import ChunkSpec
from transforms.core.errors import InputError, first_line
from transforms.core.grid import Grid, Window
from transforms.sources import grid_source
from transforms.sources.cog_blocks import BlockCache
from transforms.sources.cog_blocks import Layout as BlockLayout
from transforms.sources.cog_read import RESAMPLING, no_data, read_into_grid
from transforms.sources.fetch import RetryableError
from transforms.sources.grid_source import GridSource
from transforms.storage import layout_view, layouts

FLAG = "--zarr-root"
GRIDS = ("source", "utm")
BLOCK_CACHE_BYTES = 512 * 2**20  # decoded inner chunks kept per process (as the COG source)


# ---------------------------------------------------------------- checks on the launcher


def describe(root: str) -> layouts.Layout:
    """The source store's layout (metadata only); one line for a root that is not one."""
    return layouts.describe(root, flag=FLAG)


def north_up(layout: layouts.Layout) -> BlockLayout:
    """The store's geometry as the COG reader sees a file: inner chunks as blocks, north-up."""
    a, _, c, _, e, f = layout.transform
    bottom_up = e > 0
    transform = (
        affine.Affine(a, 0.0, c, 0.0, -e, f + layout.height * e)
        if bottom_up
        else affine.Affine(a, 0.0, c, 0.0, e, f)
    )
    return BlockLayout(
        layout.width, layout.height, layout.chunk_rows, layout.chunk_cols, bottom_up, transform
    )


def crs_name(wkt: str) -> str:
    """`EPSG:<code>` when the CRS has one, else its WKT."""
    import pyproj

    code = pyproj.CRS.from_user_input(wkt).to_epsg()
    return f"EPSG:{code}" if code else wkt


def extent_lonlat(layout: layouts.Layout) -> tuple[float, float, float, float]:
    import pyproj

    t = north_up(layout).transform
    west, north = t.c, t.f
    east, south = west + layout.width * t.a, north + layout.height * t.e
    to_lonlat = pyproj.Transformer.from_crs(layout.crs, "EPSG:4326", always_xy=True)
    return tuple(to_lonlat.transform_bounds(west, south, east, north))


def coverage_text(layout: layouts.Layout) -> str:
    w, s, e, n = extent_lonlat(layout)
    return f"the source store spans lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}"


def _area_in_store(layout: layouts.Layout, aoi_lonlat, area_flag: str):
    """The area in the store's CRS, cut to the store's extent; refused when it reaches no pixel."""
    import shapely

    t = north_up(layout).transform
    box = shapely.box(
        min(t.c, t.c + layout.width * t.a),
        t.f + layout.height * t.e,
        max(t.c, t.c + layout.width * t.a),
        t.f,
    )
    aoi = gridlib.project(aoi_lonlat, layout.crs)
    inside = aoi.intersection(box) if aoi is not None else None
    if inside is None or inside.is_empty or inside.area <= 0:
        w, s, e, n = aoi_lonlat.bounds
        raise InputError(
            area_flag,
            f"the area lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f} reaches no pixel of "
            f"{layout.path} ({coverage_text(layout)}); pick an area inside it",
        )
    return inside


def choose_grid(
    layout: layouts.Layout,
    aoi_lonlat,
    rule: str | None,
    crs: str | None,
    scale: float | None,
    area_flag: str = "--bbox",
):
    """(grid, the area in the grid's CRS, the rule used): see the module's docstring."""
    import pyproj

    projected = pyproj.CRS.from_user_input(layout.crs).is_projected
    if rule is None:
        rule = "source" if projected and crs is None and scale is None else "utm"
    for flag, value in (("--crs", crs), ("--tuning", scale)):
        if rule == "source" and value is not None:
            what = "scale: " if flag == "--tuning" else ""
            drop = "scale" if flag == "--tuning" else flag
            raise InputError(
                flag,
                f"{what}grid=source copies the store's own grid (its CRS and pixel size); drop "
                f"{drop}, or pass --tuning grid=utm to reproject",
            )
    inside = _area_in_store(layout, aoi_lonlat, area_flag)
    if rule == "utm":
        grid, aoi = gridlib.plan_grid(aoi_lonlat, crs, 10.0 if scale is None else scale)
        return grid, aoi, rule
    if not projected:
        raise InputError(
            "--tuning",
            f"grid: {layout.path} is in {crs_name(layout.crs)} (degrees); efm's stores are on a "
            "projected grid: use grid=utm (the default for such a store) to reproject it",
        )
    t = north_up(layout).transform
    size = t.a
    if not (size > 0 and math.isclose(-t.e, size, rel_tol=1e-9)):
        raise InputError(
            "--tuning",
            f"grid: {layout.path} has pixels of {t.a:g} x {-t.e:g} (not square, or running east "
            "to west); efm's stores have square north-up pixels: use grid=utm to reproject it",
        )
    minx, miny, maxx, maxy = inside.bounds
    eps = 1e-9  # of a pixel: an edge on a pixel boundary takes no pixel beyond it
    col0 = max(0, math.floor((minx - t.c) / size + eps))
    col1 = min(layout.width, math.ceil((maxx - t.c) / size - eps))
    row0 = max(0, math.floor((t.f - maxy) / size + eps))
    row1 = min(layout.height, math.ceil((t.f - miny) / size - eps))
    grid = Grid(
        crs=crs_name(layout.crs),
        scale=float(size),
        x0=float(t.c + col0 * size),
        y0=float(t.f - row0 * size),
        width=max(1, col1 - col0),
        height=max(1, row1 - row0),
    )
    return grid, gridlib.project(aoi_lonlat, layout.crs), rule


def check_years(layout: layouts.Layout, years: list[int]) -> None:
    missing = [y for y in years if y not in layout.years]
    if missing:
        raise InputError(
            "--years",
            f"{layout.path} holds {', '.join(map(str, layout.years))}, not {missing[0]}; "
            "ask for years it holds",
        )


def check_dtype(layout: layouts.Layout, dtype: str) -> None:
    """int8 output only from AEF (signed-square) codes: those are copied as they are, and any
    other values would be re-quantised by a formula their store does not name."""
    if np.dtype(dtype) == np.int8 and layout.quantization != layouts.SIGNED_SQUARE:
        held = (
            "float values"
            if layout.quantization == "none"
            else f"int8 codes with a {layout.quantization} quantisation"
        )
        raise InputError(
            "--dtype",
            f"{layout.path} holds {held}, not AEF signed-square codes; efm writes int8 only as "
            "those codes: use --dtype float32",
        )


def transfer_itemsize(layout: layouts.Layout) -> int:
    """Bytes per band value read: the codes' 1, or 4 for floats (a per-pixel scale is floats)."""
    return 1 if layout.quantization == layouts.SIGNED_SQUARE else 4


def fingerprint(layout: layouts.Layout) -> str:
    """A hash of what the store's metadata says (everything but where it is): another store at
    the same place, or the same store re-gridded, does not resume a copy of the first."""
    record = {k: v for k, v in dataclasses.asdict(layout).items() if k != "path"}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def store_attrs(root: str, layout: layouts.Layout, rule: str, store_dtype: str) -> dict:
    """What an extraction from a Zarr store records (`--resume` compares `zarr_root` and
    `zarr_metadata_sha256`: transforms/storage/resume.py)."""
    from transforms.sources.cog_paths import canonical

    place = canonical(root)
    attrs = {
        "source": f"zarr:{place}",
        "zarr_root": place,
        "zarr_root_given": root,
        "zarr_array": layout.array,
        "zarr_metadata_sha256": fingerprint(layout),
        "zarr_quantization": layout.quantization,
        "grid_rule": rule,
        "resampling": RESAMPLING if rule == "utm" else "none (the source's grid)",
    }
    if layout.quantization == layouts.SIGNED_SQUARE and np.dtype(store_dtype) != np.int8:
        attrs["dequantization"] = quantize.FORMULA
    return attrs


# ---------------------------------------------------------------- the source


@dataclasses.dataclass
class ZarrSource(GridSource):
    """Tiles of a convention store, read inner chunk by inner chunk (see the module's docstring)."""

    counts_reads: typing.ClassVar[bool] = True

    layout: layouts.Layout | None = None
    block_cache_bytes: int = BLOCK_CACHE_BYTES
    run_token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def setup(self) -> None:
        import rasterio.crs

        self._reader = layout_view.LayoutReader(self.layout)
        self._geometry = north_up(self.layout)
        self._blocks = BlockCache.for_capacity(self.block_cache_bytes)
        self._src_crs = rasterio.crs.CRS.from_user_input(self.layout.crs)
        self._grid_crs = rasterio.crs.CRS.from_user_input(self.grid.crs)

    def __getstate__(self):  # never pickle open arrays or caches
        state = dict(self.__dict__)
        for key in ("_reader", "_geometry", "_blocks", "_src_crs", "_grid_crs"):
            state.pop(key, None)
        return state

    def plan(self, spec: ChunkSpec) -> list[Window]:
        """One read per chunk (a store has no request-size limit), unless --tuning request_tile_size."""
        if self.request_tile_size:
            return super().plan(spec)
        return [spec.window]

    def _load(self, time_index: int, block_row: int, block_col: int) -> np.ndarray:
        """One inner chunk of the store, decoded, north-up, (rows, cols, bands)."""
        g = self._geometry
        r0, c0 = block_row * g.block_rows, block_col * g.block_cols
        rows = slice(r0, min(g.height, r0 + g.block_rows))
        cols = slice(c0, min(g.width, c0 + g.block_cols))
        path = self.layout.path
        try:
            data = self._reader.read_codes(time_index, rows, cols)
        except (OSError, TimeoutError, ConnectionError) as exc:
            if not layouts_remote(path):
                raise OSError(f"cannot read {path}: {first_line(exc)}") from exc
            raise RetryableError(f"{path}: {type(exc).__name__}: {first_line(exc)}") from exc
        except Exception as exc:
            from transforms.sources.cog import _looks_transient

            if layouts_remote(path) and _looks_transient(exc):
                raise RetryableError(f"{path}: {type(exc).__name__}: {first_line(exc)}") from exc
            raise
        if g.bottom_up:
            data = np.ascontiguousarray(data[::-1])
        grid_source.count_read(data.nbytes)
        return data

    def fetch(self, spec: ChunkSpec, tile: Window) -> np.ndarray:
        left, _, _, top = self.grid.window_bounds(tile)
        time_index = self.layout.years.index(spec.year)

        def block(block_row: int, block_col: int, wait: bool = True) -> np.ndarray | None:
            key = (self.layout.path, self.run_token, time_index, block_row, block_col)
            return self._blocks.get(key, lambda: self._load(time_index, block_row, block_col), wait)

        values = read_into_grid(
            self._geometry,
            block,
            self._src_crs,
            self._grid_crs,
            self.grid.scale,
            left,
            top,
            tile.rows,
            tile.cols,
        )
        if values is None:  # no pixel of the store under the tile
            read = np.int8 if self.layout.quantization == layouts.SIGNED_SQUARE else np.float32
            values = np.full((tile.rows, tile.cols, len(self.bands)), no_data(read), dtype=read)
        if np.dtype(self.store_dtype) == np.int8:
            return values  # AEF codes (check_dtype), copied as they are
        if values.dtype == np.int8:
            return quantize.dequantize(values)
        return values.astype(np.float32, copy=False)


def layouts_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def make_source(
    grid: Grid,
    years: list[int],
    layout: layouts.Layout,
    store_dtype: str,
    request_tile_size: int | None = None,
    block_cache_bytes: int = BLOCK_CACHE_BYTES,
) -> ZarrSource:
    return ZarrSource(
        grid=grid,
        years=tuple(years),
        bands=tuple(layout.bands),
        store_dtype=store_dtype,
        transfer_itemsize=transfer_itemsize(layout),
        request_tile_size=request_tile_size,
        layout=layout,
        block_cache_bytes=block_cache_bytes,
    )
