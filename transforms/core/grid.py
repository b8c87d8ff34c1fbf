"""Grid planning: area of interest -> target CRS -> snapped pixel grid -> chunks.

Pure functions (no Beam, no Earth Engine). The grid is snapped outward to multiples of
the pixel size, so a 10 m grid in the data's own UTM zone lines up with the native pixels
and Earth Engine returns them unresampled.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import numbers
import re
from collections.abc import Iterator

import affine
import pyproj
import shapely
import shapely.geometry
import shapely.ops

from transforms.core.errors import InputError, first_line

FIRST_YEAR = 2017  # the collection starts in 2017
MIN_CHUNK_SIZE = 128  # below this, per-chunk overhead dominates (and Zarr holds too many files)
# How far (degrees of longitude) an AOI may reach beyond its CRS's area of use: one half
# UTM zone, where the scale error is still < 0.2%.
AREA_OF_USE_MARGIN_DEG = 3.0


@dataclasses.dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: `width` x `height` pixels of `scale` CRS units from (x0, y0)."""

    crs: str
    scale: float
    x0: float  # left edge
    y0: float  # top edge
    width: int
    height: int

    @property
    def transform(self) -> affine.Affine:
        return affine.Affine(self.scale, 0.0, self.x0, 0.0, -self.scale, self.y0)

    def x_centres(self, start: int = 0, stop: int | None = None) -> list[float]:
        stop = self.width if stop is None else stop
        return [self.x0 + (i + 0.5) * self.scale for i in range(start, stop)]

    def y_centres(self, start: int = 0, stop: int | None = None) -> list[float]:
        stop = self.height if stop is None else stop
        return [self.y0 - (j + 0.5) * self.scale for j in range(start, stop)]

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of a window, in the grid's CRS."""
        left = self.x0 + window.col * self.scale
        top = self.y0 - window.row * self.scale
        return (left, top - window.rows * self.scale, left + window.cols * self.scale, top)


@dataclasses.dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels: `rows` x `cols` starting at (row, col) of a grid."""

    row: int
    col: int
    rows: int
    cols: int


def parse_bbox(text: str) -> shapely.Polygon:
    """`W,S,E,N` in degrees -> polygon in EPSG:4326 (lon/lat)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise InputError(
            "--bbox", f"expected W,S,E,N as four numbers in degrees, got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise InputError("--bbox", f"coordinates must be finite numbers, got {text!r}")
    if not (
        -180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90
    ):
        raise InputError(
            "--bbox",
            f"out of range: longitudes must be in [-180, 180] and latitudes in [-90, 90], got {text!r}",
        )
    if west >= east or south >= north:
        raise InputError(
            "--bbox", f"inverted or empty box {text!r}: expected W < E and S < N (W,S,E,N order)"
        )
    return shapely.geometry.box(west, south, east, north)


GEOJSON_SUFFIXES = (".geojson", ".json", ".geojsonl", ".geojsons")


def check_degrees(
    bounds: tuple[float, float, float, float],
    crs,
    path: str,
    flag: str,
    crs_from: str = "file",
    crs_flag: str | None = None,
) -> None:
    """Refuse coordinates outside lon [-180, 180] / lat [-90, 90] when the CRS they are read in is
    geographic: e.g. a GeoJSON written in metres without a CRS (GeoJSON is WGS84 by its spec, so
    readers take it as lon/lat), which would otherwise be blamed on the area or the grid.

    `bounds`: (min x, min y, max x, max y) of the finite coordinates; `crs_from`: "file" (the
    file's own CRS), "flag" (given by `crs_flag`) or "default" (lon/lat assumed, e.g. a CSV)."""
    minx, miny, maxx, maxy = bounds
    if not all(math.isfinite(v) for v in bounds):
        return  # no finite coordinate: other checks say so
    if -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90:
        return
    try:
        geographic = pyproj.CRS.from_user_input(crs).is_geographic
    except pyproj.exceptions.CRSError:
        return  # an unknown CRS is refused where it is used
    if not geographic:
        return
    span = f"x {minx:.10g}..{maxx:.10g}, y {miny:.10g}..{maxy:.10g}"
    if crs_from == "flag":
        why = (
            f"{crs_flag}={crs} is in degrees; give the CRS the coordinates are in, e.g. "
            f"{crs_flag}=EPSG:32631"
        )
    elif crs_from == "default":
        why = (
            "lon/lat columns are read as degrees (WGS84); for other coordinates give their CRS, "
            f"e.g. {crs_flag or '--tuning points_crs'}=EPSG:32631"
        )
    elif path.lower().endswith(GEOJSON_SUFFIXES):
        why = (
            "GeoJSON is WGS84 (RFC 7946); reproject it or give a file with its CRS "
            "(GeoPackage/GeoParquet)"
        )
    else:
        why = f"the file says its CRS is {crs}, in degrees; fix the file's CRS"
    raise InputError(flag, f"{path}: coordinates are not degrees ({span}): {why}")


def read_aoi(path: str) -> shapely.Geometry:
    """Any OGR vector file (GeoJSON, GeoPackage, Shapefile, ...) -> one geometry in lon/lat."""
    import geopandas  # heavy; only needed for --aoi

    try:
        frame = geopandas.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(
            "--aoi", f"cannot read {path!r} as a vector file: {first_line(exc)}"
        ) from None
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InputError("--aoi", f"{path!r} holds no geometry")
    if frame.crs is None:
        raise InputError(
            "--aoi", f"{path!r} has no CRS; save it with one (GeoJSON is lon/lat by definition)"
        )
    check_degrees(tuple(frame.total_bounds), frame.crs, path, "--aoi")
    geometry = shapely.union_all(frame.to_crs("EPSG:4326").geometry.values)
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise InputError("--aoi", f"{path!r} must contain polygons, found {geometry.geom_type}")
    return geometry


def parse_years(text: str, today: datetime.date | None = None, flag: str = "--years") -> list[int]:
    """`2021,2022` or `2019-2024` (or a mix) -> sorted unique years, each a full calendar year."""
    today = today or datetime.date.today()
    years: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d{4})(?:\s*-\s*(\d{4}))?", part)
        if not match:
            raise InputError(flag, f"expected years like 2021,2022 or 2019-2024, got {text!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise InputError(flag, f"range {part!r} runs backwards")
        years.update(range(first, last + 1))
    too_early = sorted(y for y in years if y < FIRST_YEAR)
    if too_early:
        raise InputError(
            flag, f"{too_early[0]} is before {FIRST_YEAR}, the first year of the embeddings"
        )
    future = sorted(y for y in years if y > today.year)
    if future:
        raise InputError(flag, f"{future[0]} is in the future (today is {today.isoformat()})")
    return sorted(years)


def years_value(value, flag: str = "years") -> list[int] | None:
    """The Python API's `years`: None (every year), an int, a list of ints, or the command line's
    text (`"2022"`, `"2021,2022"`, `"2019-2024"`, parsed by `parse_years`) -> sorted years."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_years(value, flag=flag)
    if isinstance(value, (list, tuple, set, frozenset)) or (
        hasattr(value, "__iter__") and hasattr(value, "dtype")
    ):
        items = list(value)
        if not items:
            return None
        years: set[int] = set()
        for item in items:
            years.update(years_value(item, flag) or [])
        return sorted(years)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return parse_years(str(int(value)), flag=flag)
    raise InputError(
        flag,
        f"expected a year or years as an int, a list of ints or text like '2021,2022' or '2019-2024', "
        f"got {value!r} ({type(value).__name__})",
    )


def one_year(value, flag: str) -> int:
    """The Python API's single-year parameters (`from_year`, `reference_year`): an int, or its text ("2022")."""
    if isinstance(value, str) and not re.fullmatch(r"\s*\d{4}\s*", value):
        raise InputError(flag, f"expected one year, e.g. 2022, got {value!r}")
    if not isinstance(value, (str, numbers.Integral)) or isinstance(value, bool):
        raise InputError(
            flag, f"expected one year as an int, e.g. 2022, got {value!r} ({type(value).__name__})"
        )
    return years_value(value, flag)[0]


def utm_crs_for(lon: float, lat: float) -> str:
    """EPSG code of the WGS 84 / UTM zone containing (lon, lat)."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def normalise_crs(text: str) -> str:
    """`EPSG:32631`, `epsg:32631` or `32631` -> canonical `EPSG:32631`."""
    try:
        crs = pyproj.CRS.from_user_input(text.strip() if isinstance(text, str) else text)
    except pyproj.exceptions.CRSError:
        raise InputError(
            "--crs", f"unknown CRS {text!r}; give an EPSG code such as EPSG:32631"
        ) from None
    epsg = crs.to_epsg()
    if epsg is None:
        raise InputError("--crs", f"{text!r} has no EPSG code; give one such as EPSG:32631")
    if crs.is_geographic:
        raise InputError(
            "--crs",
            f"{text!r} is geographic (degrees); use a projected CRS in metres, e.g. the UTM zone",
        )
    return f"EPSG:{epsg}"


def _check_area_of_use(aoi_lonlat: shapely.Geometry, crs: str) -> None:
    area = pyproj.CRS.from_user_input(crs).area_of_use
    if area is None:
        return
    west, south, east, north = aoi_lonlat.bounds
    m = AREA_OF_USE_MARGIN_DEG
    if (
        west < area.west - m
        or east > area.east + m
        or south < area.south - m
        or north > area.north + m
    ):
        raise InputError(
            "--bbox/--aoi",
            f"area lon {west:.2f}..{east:.2f}, lat {south:.2f}..{north:.2f} is too large for {crs}, "
            f"usable within lon {area.west - m:.1f}..{area.east + m:.1f}, lat {max(area.south - m, -90):.1f}..{min(area.north + m, 90):.1f}; "
            "split the area into one run per UTM zone or pass --crs with a CRS that covers it",
        )


def fits_crs(aoi_lonlat: shapely.Geometry, crs: str) -> bool:
    """Does `crs` hold the area (within its area of use and the margin)? What plan_grid checks."""
    try:
        _check_area_of_use(aoi_lonlat, crs)
    except InputError:
        return False
    return True


def project(aoi_lonlat: shapely.Geometry, crs: str) -> shapely.Geometry | None:
    """A lon/lat area in `crs` (None if it cannot be projected there)."""
    to_crs = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform
    # Densify first so that box edges, which are curves in the target CRS, bound correctly.
    aoi = shapely.ops.transform(to_crs, shapely.segmentize(aoi_lonlat, 0.01))
    return aoi if all(math.isfinite(v) for v in aoi.bounds) else None


def plan_grid(
    aoi_lonlat: shapely.Geometry, crs: str | None = None, scale: float = 10.0
) -> tuple[Grid, shapely.Geometry]:
    """Snap the AOI's bounds in `crs` (default: UTM zone of its centre) outward to `scale`.

    Returns the grid and the AOI in the grid's CRS (to skip chunks that miss it).
    """
    if not (scale > 0 and math.isfinite(scale)):
        raise InputError("--tuning", f"scale: must be a positive number of CRS units, got {scale}")
    if crs is None:
        centre = aoi_lonlat.centroid
        crs = utm_crs_for(centre.x, centre.y)
    else:
        crs = normalise_crs(crs)
    _check_area_of_use(aoi_lonlat, crs)
    aoi = project(aoi_lonlat, crs)
    if aoi is None:
        raise InputError(
            "--bbox/--aoi",
            f"the area cannot be projected to {crs}; pass --crs with one that covers it",
        )
    minx, miny, maxx, maxy = aoi.bounds
    x0 = math.floor(minx / scale) * scale
    y0 = math.ceil(maxy / scale) * scale
    width = max(1, math.ceil((maxx - x0) / scale - 1e-9))
    height = max(1, math.ceil((y0 - miny) / scale - 1e-9))
    return Grid(
        crs=crs, scale=float(scale), x0=float(x0), y0=float(y0), width=width, height=height
    ), aoi


def check_chunk_size(chunk_size: int, request_tile_size: int | None = None) -> None:
    """`efm extract --tuning chunk_size=N` (with request_tile_size): refused naming the key."""
    if chunk_size < MIN_CHUNK_SIZE:
        raise InputError(
            "--tuning",
            f"chunk_size: {chunk_size} is too small; use at least {MIN_CHUNK_SIZE} (default 1024)",
        )
    if request_tile_size is not None and chunk_size % request_tile_size:
        raise InputError(
            "--tuning",
            f"chunk_size: {chunk_size} is not a multiple of the request tile size "
            f"{request_tile_size} (request_tile_size); use e.g. chunk_size="
            f"{max(1, chunk_size // request_tile_size) * request_tile_size}",
        )


def chunk_windows(grid: Grid, chunk_size: int) -> Iterator[Window]:
    """The grid cut into chunk_size x chunk_size windows (smaller at the right/bottom edges)."""
    return tile_windows(grid.height, grid.width, chunk_size, chunk_size)


def tile_windows(height: int, width: int, chunk_rows: int, chunk_cols: int) -> Iterator[Window]:
    """A height x width raster cut into chunk_rows x chunk_cols windows, row by row (smaller at the right/bottom
    edges): the one list of chunk windows (the store's, a product's, an export's)."""
    for row in range(0, height, chunk_rows):
        for col in range(0, width, chunk_cols):
            yield Window(row, col, min(chunk_rows, height - row), min(chunk_cols, width - col))


def windows_touching(
    grid: Grid, windows: list[Window], aoi: shapely.Geometry
) -> tuple[list[Window], int]:
    """Keep the windows whose footprint intersects the AOI (in the grid's CRS); count the rest."""
    if not windows:
        return [], 0
    boxes = shapely.box(*zip(*(grid.window_bounds(w) for w in windows)))
    shapely.prepare(aoi)
    hits = shapely.intersects(aoi, boxes)
    kept = [w for w, hit in zip(windows, hits) if hit]
    return kept, len(windows) - len(kept)
