"""Work on part of a store: an area (`--bbox` / `--aoi`, lon/lat) -> a window of the store's grid ->
the output chunks to compute. One implementation for every product command and for export.

The rule (README, "Work on part of a store"):
* the area is transformed to the store's CRS; the output grid is the area's pixel window of the
  input grid (every pixel the area's bounds reach into, edges that fall on a pixel boundary
  excluded), clipped to the store: same CRS and pixel size, origin on an input pixel corner, so
  outputs of different runs line up pixel for pixel with each other and with the input;
* output chunks have the input's chunk size, counted from the window's origin; only those whose
  footprint touches the area (the polygon, for --aoi) are computed, the others stay fill, as
  `efm extract --aoi` leaves the chunks it does not request (`grid.windows_touching`); pixels
  inside a computed chunk are all computed, in the area or not (extract fetches whole chunks too);
* an area that reaches no pixel of the store is refused (InputError, before anything is written).

Pure functions and small dataclasses: no Beam, no I/O but reading an --aoi file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re

import affine
import numpy as np
import pyproj
import shapely
import shapely.ops

from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.core.grid import Grid, Window

EDGE_TOLERANCE = (
    1e-6  # pixels: an area edge this close to a pixel boundary is on it (reprojection round-off)
)
# What --resume compares (pipelines/product.check_resume_attrs): attr -> what it is in the message.
RESUME_ATTRS = {
    "subset_window": "area window (--bbox/--aoi)",
    "subset_bbox": "--bbox",
    "subset_aoi_sha256": "--aoi polygon",
}


AREA_FLAGS = ("--bbox", "--aoi")
_BBOX_SHAPE = re.compile(r"^[\s\d.,+eE-]+$")  # only numbers and commas: a W,S,E,N box


class _Area(argparse.Action):
    """`--bbox` and `--aoi` are one option: W,S,E,N in degrees, or a vector file, whichever
    spelling is used. The value's form says which (sets `bbox` or `aoi`); a box-shaped value
    naming an existing file is ambiguous and refused, and so is a second area."""

    def __call__(self, parser, namespace, value, option_string=None):
        if getattr(namespace, "bbox", None) or getattr(namespace, "aoi", None):
            raise InputError(option_string, "the area is given twice (one --bbox or --aoi)")
        text = value.strip()
        if _BBOX_SHAPE.match(text):
            if os.path.exists(text):
                raise InputError(
                    option_string,
                    f"{value!r} is both a W,S,E,N box and an existing file: rename the file",
                )
            namespace.bbox = value
        else:
            namespace.aoi = value


def add_flags(container, what: str = "compute", required: bool = False, help: str = "") -> None:
    """The area (`--bbox` = `--aoi`, one option: a W,S,E,N box or a vector file), with the syntax
    of `efm extract`; optional unless `required`."""
    container.add_argument(
        *AREA_FLAGS,
        action=_Area,
        dest="area",
        metavar="W,S,E,N|FILE",
        required=required,
        help=help
        or f"{what} only this area: W,S,E,N in degrees (lon/lat), e.g. 5.9,45.8,6.2,46.0, or a "
        "vector file (GeoJSON, GeoPackage, ...: chunks that miss its polygons stay no data); the "
        "output is the area's window of the input grid (same pixels)",
    )
    container.set_defaults(bbox=None, aoi=None)


@dataclasses.dataclass(frozen=True, eq=False)
class Subset:
    """The part of a store a run works on: `window` of the input grid, cut into chunks from its origin."""

    window: Window
    chunk_rows: int
    chunk_cols: int
    touched: np.ndarray  # bool (chunk rows, chunk cols) of the window: the chunks to compute
    store_chunks: int  # chunks (one year) of a run over the whole store
    clipped: bool = False  # the area reached beyond the store
    attrs: dict = dataclasses.field(
        default_factory=dict
    )  # what the output store records (empty: the whole store)

    @property
    def active(self) -> bool:
        return bool(self.attrs)

    @property
    def offset(self) -> tuple[int, int]:
        """(row, col) of the window's origin in the input grid."""
        return self.window.row, self.window.col

    def plan(self, years):
        """The output store's ChunkPlan: the window's chunks the area touches, for each year."""
        from transforms.core.chunk_plan import ChunkPlan

        return ChunkPlan(
            self.window.rows,
            self.window.cols,
            self.chunk_rows,
            self.chunk_cols,
            tuple(years),
            self.touched,
        )

    def windows(self) -> list[tuple[Window, bool]]:
        """(output chunk window, computed?) for every chunk of the window."""
        n_cols = self.touched.shape[1]
        return [
            (w, bool(self.touched[i // n_cols, i % n_cols]))
            for i, w in enumerate(
                gridlib.tile_windows(
                    self.window.rows, self.window.cols, self.chunk_rows, self.chunk_cols
                )
            )
        ]

    def skipped(self, n_years: int = 1) -> int:
        """Chunks of the whole-store run that this run does not compute."""
        return (self.store_chunks - int(self.touched.sum())) * n_years

    def transform(self, base: tuple) -> tuple:
        """The input's affine coefficients (a, b, c, d, e, f) translated by whole pixels to the window's origin."""
        return tuple(
            affine.Affine(*base[:6]) * affine.Affine.translation(self.window.col, self.window.row)
        )[:6]

    def summary_rows(self, n_years: int = 1) -> list[tuple[str, object]]:
        """The rows a run summary gains (none without --bbox/--aoi)."""
        if not self.active:
            return []
        w = self.window
        clipped = " (the area reaches beyond the store: clipped to it)" if self.clipped else ""
        return [
            (
                "subset window",
                f"{w.cols} x {w.rows} px at row {w.row}, col {w.col} of the input grid{clipped}",
            ),
            ("chunks skipped (outside the area)", self.skipped(n_years)),
        ]


def store_grid(g) -> Grid:
    """A StoreInfo / export Layer (crs, transform, width, height) as a north-up Grid."""
    a, b, c, d, e, f = g.transform[:6]
    if b or d or not math.isclose(e, -a) or a <= 0:
        raise InputError(
            "--bbox/--aoi",
            f"{g.path} has a grid that is not north-up with square pixels (transform {tuple(g.transform[:6])}); "
            "work on the whole store",
        )
    return Grid(
        crs=str(g.crs),
        scale=float(a),
        x0=float(c),
        y0=float(f),
        width=int(g.width),
        height=int(g.height),
    )


def whole(g) -> Subset:
    """The whole store (no --bbox/--aoi): the full window, every chunk."""
    n = (math.ceil(g.height / g.chunk_rows), math.ceil(g.width / g.chunk_cols))
    return Subset(
        Window(0, 0, g.height, g.width),
        g.chunk_rows,
        g.chunk_cols,
        np.ones(n, dtype=bool),
        n[0] * n[1],
    )


def area_window(grid: Grid, area: shapely.Geometry) -> tuple[Window | None, bool]:
    """The window of `grid` that the bounds of `area` (in the grid's CRS) reach into, clipped to the grid,
    and whether it was clipped. None when the area reaches no pixel of the grid."""
    minx, miny, maxx, maxy = area.bounds
    c0 = math.floor((minx - grid.x0) / grid.scale + EDGE_TOLERANCE)
    c1 = math.ceil((maxx - grid.x0) / grid.scale - EDGE_TOLERANCE)
    r0 = math.floor((grid.y0 - maxy) / grid.scale + EDGE_TOLERANCE)
    r1 = math.ceil((grid.y0 - miny) / grid.scale - EDGE_TOLERANCE)
    c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)  # a line or a point still covers the pixel it lies in
    clipped = c0 < 0 or r0 < 0 or c1 > grid.width or r1 > grid.height
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, grid.width), min(r1, grid.height)
    if c1 <= c0 or r1 <= r0:
        return None, clipped
    return Window(r0, c0, r1 - r0, c1 - c0), clipped


def _lonlat_bounds(geometry: shapely.Geometry, crs: str) -> str:
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    west, south, east, north = shapely.ops.transform(
        to_lonlat, shapely.segmentize(geometry, geometry.length / 400 or 1)
    ).bounds
    return f"lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}"


def select(g, area_lonlat: shapely.Geometry, flag: str, attrs: dict | None = None) -> Subset:
    """The part of the store `g` (StoreInfo or export Layer) that `area_lonlat` covers; InputError if none."""
    grid = store_grid(g)
    area = gridlib.project(area_lonlat, grid.crs)
    if area is None:
        raise InputError(
            flag,
            f"the area cannot be projected to the store's CRS {grid.crs}; choose an area that overlaps {g.path}",
        )
    window, clipped = area_window(grid, area)
    touched = None
    if window is not None:
        sub_grid = Grid(
            grid.crs,
            grid.scale,
            grid.x0 + window.col * grid.scale,
            grid.y0 - window.row * grid.scale,
            window.cols,
            window.rows,
        )
        windows = list(gridlib.tile_windows(window.rows, window.cols, g.chunk_rows, g.chunk_cols))
        kept, _ = gridlib.windows_touching(sub_grid, windows, area)
        kept = set(kept)
        n_cols = math.ceil(window.cols / g.chunk_cols)
        touched = np.array([w in kept for w in windows], dtype=bool).reshape(-1, n_cols)
    if touched is None or not touched.any():
        west, south, east, north = area_lonlat.bounds
        footprint = shapely.box(*grid.window_bounds(Window(0, 0, grid.height, grid.width)))
        raise InputError(
            flag,
            f"the area (lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}) lies outside {g.path}, "
            f"which covers {_lonlat_bounds(footprint, grid.crs)}; choose an area that overlaps the store",
        )
    full = whole(g)
    attrs = {"subset_window": [window.row, window.col, window.rows, window.cols], **(attrs or {})}
    return Subset(window, g.chunk_rows, g.chunk_cols, touched, full.store_chunks, clipped, attrs)


def from_args(args, g, cell=None) -> Subset | None:
    """--bbox / --aoi of a command (parsed as `efm extract` parses them) -> its Subset; the whole store without them.

    `cell` (a collection's member, transforms/core/zones.py): the part of the area in the cell, or
    None when that part reaches no pixel of the member's store (the member is left out)."""
    if getattr(args, "bbox", None):
        area = gridlib.parse_bbox(args.bbox)
        flag, attrs = "--bbox", {"subset_bbox": [float(v) for v in area.bounds]}
    elif getattr(args, "aoi", None):
        area = gridlib.read_aoi(args.aoi)
        # the polygon decides which chunks are computed: --resume compares it by hash, not by file name
        digest = hashlib.sha256(shapely.to_wkb(shapely.normalize(area))).hexdigest()
        flag, attrs = "--aoi", {"subset_aoi": args.aoi, "subset_aoi_sha256": digest}
    else:
        return whole(g)
    if cell is None:
        return select(g, area, flag, attrs)
    from transforms.core import zones

    part = zones.part_in(area, cell)
    if part.is_empty or part.area == 0:
        return None
    try:
        return select(g, part, flag, attrs)
    except InputError:  # the area's part in this cell lies beyond the member's store
        return None


def geotransform_attrs(spatial_ref_attrs: dict, window: Window | None) -> dict:
    """A `spatial_ref` coordinate's attrs with its GeoTransform moved to `window`'s origin (rioxarray's format)."""
    attrs = dict(spatial_ref_attrs)
    if window is None or (window.row, window.col) == (0, 0) or "GeoTransform" not in attrs:
        return attrs
    c, a, b, f, d, e = (float(v) for v in str(attrs["GeoTransform"]).split())
    moved = affine.Affine(a, b, c, d, e, f) * affine.Affine.translation(window.col, window.row)
    attrs["GeoTransform"] = " ".join(str(v) for v in moved.to_gdal())
    return attrs
