"""The public int8 COG mirror as a tile source: index look-up, windowed reads, mosaic.

The mirror is laid out as `<root>/<year>/<zone, e.g. 10N>/<name>.tiff` (8192 x 8192 px,
64 int8 bands, nodata -128) with an index table next to the year folders
(`aef_index.parquet`, `.gpkg` or `.csv`) that lists every file's footprint. Files are
found through that index only: the bucket is never listed.

For each request tile of a chunk, `CogSource.fetch`:

1. picks the files of the chunk's year whose footprint intersects the tile (from the
   index rows the launcher selected for the grid, so workers never read the index);
2. reads only the window each file contributes. When the file lies on the target grid
   (same CRS, same pixel size, aligned: the "native" grid), the window is copied as is,
   so int8 codes reach an int8 store bit for bit. Otherwise the int8 codes are warped
   to the target grid with nearest neighbour (-128 = no data), then de-quantised;
3. mosaics: files in the grid's own CRS first, then the others; each pixel takes the
   first file that has data there;
4. returns int8 codes for an int8 store, or float32 de-quantised in float64 for a
   float32 store (NaN = no data).

Rows are never assumed to run top-down: some mirrors store them bottom-up (positive
y resolution); the geotransform says which and the reader flips.

Remote roots (`gs://...`, any fsspec URL) are read through fsspec file objects handed
to GDAL (`rasterio.open(..., opener=fs)`): credentials follow fsspec/gcsfs's usual
rules, anonymous access included (`FSSPEC_GCS_TOKEN=anon`).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import math
import re
import threading
import warnings

import affine
import numpy as np
import pyproj
import shapely

from transforms import quantize
from transforms.chunks import ChunkSpec, GridSource
from transforms.errors import InputError
from transforms.fetch import RetryableError
from transforms.grid import Grid, Window


INDEX_NAMES = ("aef_index.parquet", "aef_index.gpkg", "aef_index.csv")
RESAMPLING = "nearest"
MOSAIC_RULE = "files in the grid's CRS first, then the others; each pixel from the first file with data"
FLAG = "--cog-root"
HANDLES_PER_THREAD = 16  # open datasets kept per fetch thread (LRU)
# GDAL settings for every read: never list a folder (the index says where files are),
# never look for side-car files.
GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_PAM_ENABLED": "NO", "GDAL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------
# Paths and filesystems
# ---------------------------------------------------------------------------------------

def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _fs(root: str):
    import fsspec

    fs, stripped = fsspec.core.url_to_fs(root)
    return fs, stripped.rstrip("/")


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def zone_crs(zone: str) -> str:
    """`10N` -> EPSG:32610, `33S` -> EPSG:32733."""
    match = re.fullmatch(r"\s*(\d{1,2})\s*([NSns])\s*", str(zone))
    if not match or not 1 <= int(match[1]) <= 60:
        raise ValueError(f"not a UTM zone like 10N: {zone!r}")
    return f"EPSG:{(32600 if match[2].upper() == 'N' else 32700) + int(match[1])}"


def crs_zone(crs: str) -> str:
    """EPSG:32610 -> `10N` (the mirror's folder name)."""
    epsg = pyproj.CRS.from_user_input(crs).to_epsg()
    if epsg is None or not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ValueError(f"{crs} is not a WGS 84 / UTM zone")
    return f"{epsg % 100}{'N' if epsg < 32700 else 'S'}"


_LAYOUT = re.compile(r"(?:^|/)(\d{4})/(\d{1,2}[NSns])/([^/]+\.tiff?)$")


def resolve_path(root: str, listed: str) -> str:
    """Where a file the index lists lives under `root`.

    The index of the public mirror lists absolute URLs of the original bucket; a copy of
    the mirror keeps the layout `<year>/<zone>/<name>.tiff`, so that tail is joined to
    `root`. A relative path is joined as is.
    """
    listed = str(listed)
    match = _LAYOUT.search(listed)
    if match:
        return join(root, match[1], match[2], match[3])
    if "://" in listed or listed.startswith("/"):
        raise InputError(FLAG, f"the index lists {listed!r}, which is not laid out as <year>/<zone>/<name>.tiff")
    return join(root, listed)


# ---------------------------------------------------------------------------------------
# The index table
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CogFile:
    """One file of the mirror, as the workers need it (small: pickled with the source)."""

    path: str  # resolved under the root
    year: int
    crs: str  # the file's own CRS (its UTM zone)
    bounds: tuple[float, float, float, float]  # footprint in the *grid's* CRS (minx, miny, maxx, maxy)

    def intersects(self, bounds: tuple[float, float, float, float]) -> bool:
        minx, miny, maxx, maxy = bounds
        return self.bounds[0] < maxx and minx < self.bounds[2] and self.bounds[1] < maxy and miny < self.bounds[3]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def find_index(root: str) -> str:
    """The index table's path under `root`, or a clear error. Looks at three names, lists nothing."""
    fs, base = _fs(root)
    for name in INDEX_NAMES:
        try:
            if fs.exists(f"{base}/{name}"):
                return join(root, name)
        except Exception as exc:  # auth, network: say so now
            raise InputError(FLAG, f"cannot reach {root}: {_first_line(exc)}") from None
    raise InputError(
        FLAG,
        f"no index table in {root} (looked for {', '.join(INDEX_NAMES)}); point --cog-root at the mirror's root, "
        "the folder that holds the index next to the <year>/<zone>/ folders",
    )


def _read_table(path: str):
    """The raw index as a pandas DataFrame (geometry, if any, left as WKB/WKT/shapely)."""
    import pandas as pd

    fs, stripped = _fs(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(stripped, "rb") as f:
            return pq.read_table(f).to_pandas()
    if path.endswith(".gpkg"):
        import pyogrio

        if not is_remote(path):
            return pyogrio.read_dataframe(stripped)
        with fs.open(stripped, "rb") as f:
            data = f.read()
        with warnings.catch_warnings():  # GDAL names the in-memory copy without .gpkg
            warnings.filterwarnings("ignore", message=".*non conformant file extension")
            return pyogrio.read_dataframe(io.BytesIO(data))
    with fs.open(stripped, "rb") as f:
        return pd.read_csv(f)


def _geometry_lonlat(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, shapely.Geometry):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return shapely.from_wkb(bytes(value))
    return shapely.from_wkt(str(value))


def read_index(root: str):
    """The mirror's index as a DataFrame with normalised columns.

    Columns: `path` (resolved under root), `year`, `crs`, `west/south/east/north` (the
    footprint in the file's CRS) and `footprint` (shapely, lon/lat). Accepts the public
    index's columns (`path`, `year`, `crs`, `utm_zone`, `utm_west..utm_north`,
    `wgs84_west..wgs84_north`, geometry); only `path` is strictly required.
    """
    import pandas as pd

    index_path = find_index(root)
    try:
        raw = _read_table(index_path)
    except Exception as exc:
        raise InputError(FLAG, f"cannot read the index {index_path}: {_first_line(exc)}") from None
    columns = {c.lower(): c for c in raw.columns}
    if "path" not in columns:
        raise InputError(FLAG, f"the index {index_path} has no 'path' column (columns: {', '.join(map(str, raw.columns))})")
    paths = raw[columns["path"]].astype(str)
    layout = paths.str.extract(_LAYOUT.pattern)
    if "year" in columns:
        years = pd.to_numeric(raw[columns["year"]], errors="coerce")
    else:
        years = pd.to_numeric(layout[0], errors="coerce")
    if "crs" in columns:
        crs = raw[columns["crs"]].astype(str)
    elif "utm_zone" in columns:
        crs = raw[columns["utm_zone"]].astype(str).map(zone_crs)
    else:
        crs = layout[1].map(lambda z: zone_crs(z) if isinstance(z, str) else None)
    if years.isna().any() or crs.isna().any():
        raise InputError(FLAG, f"the index {index_path} has rows without a year or a CRS (columns: {', '.join(map(str, raw.columns))})")
    geometry_column = next((columns[c] for c in ("geometry", "geom", "footprint", "wkt") if c in columns), None)
    footprints = [_geometry_lonlat(v) for v in raw[geometry_column]] if geometry_column else [None] * len(raw)
    has_wgs84 = all(f"wgs84_{side}" in columns for side in ("west", "south", "east", "north"))
    has_utm = all(f"utm_{side}" in columns for side in ("west", "south", "east", "north"))
    frame = pd.DataFrame({
        "path": [resolve_path(root, p) for p in paths],
        "year": years.astype(int).to_numpy(),
        "crs": [_normalise_crs(c) for c in crs],
    })
    for i, fp in enumerate(footprints):
        if fp is None and has_wgs84:
            footprints[i] = shapely.box(*(float(raw[columns[f"wgs84_{s}"]].iloc[i]) for s in ("west", "south", "east", "north")))
    if has_utm:
        for side in ("west", "south", "east", "north"):
            frame[side] = raw[columns[f"utm_{side}"]].astype(float).to_numpy()
    else:  # the lon/lat footprint projected to the file's zone: approximate, enough to pick files
        if any(fp is None for fp in footprints):
            raise InputError(FLAG, f"the index {index_path} gives no footprint (utm_west.., wgs84_west.. or a geometry) for some files")
        bounds = [_project(fp, "EPSG:4326", c).bounds for fp, c in zip(footprints, frame["crs"])]
        frame["west"], frame["south"], frame["east"], frame["north"] = (np.array(b) for b in zip(*bounds))
    if any(fp is None for fp in footprints):  # lon/lat footprint from the zone bounds
        footprints = [fp if fp is not None else _project(shapely.box(w, s, e, n), c, "EPSG:4326")
                      for fp, w, s, e, n, c in zip(footprints, frame["west"], frame["south"], frame["east"], frame["north"], frame["crs"])]
    frame["footprint"] = footprints
    frame.attrs["index_path"] = index_path
    return frame


_transformers: dict[tuple[str, str], pyproj.Transformer] = {}
_crs_names: dict[str, str] = {}


def _normalise_crs(value) -> str:
    """`EPSG:32610`, `epsg:32610`, `32610` or a WKT -> `EPSG:32610` (or the WKT if it has no code)."""
    key = str(value)
    if key not in _crs_names:
        try:
            crs = pyproj.CRS.from_user_input(int(key) if key.isdigit() else key)
        except pyproj.exceptions.CRSError:
            raise InputError(FLAG, f"the index names an unknown CRS {key!r}") from None
        epsg = crs.to_epsg()
        _crs_names[key] = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    return _crs_names[key]


def _project(geometry, src: str, dst: str):
    if src == dst:
        return geometry
    key = (src, dst)
    if key not in _transformers:
        _transformers[key] = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    densified = shapely.segmentize(geometry, max_segment_length=(0.01 if pyproj.CRS.from_user_input(src).is_geographic else 500.0))
    return shapely.transform(densified, _transformers[key].transform, interleaved=False)


def check_cog_root(root: str, years: list[int], aoi_lonlat: shapely.Geometry):
    """Fail fast: an index must exist, list files for every year, and cover the area.

    Returns the index rows of `years` whose footprint intersects the area (a DataFrame as
    `read_index` gives), having checked that those files exist.
    """
    index = read_index(root)
    index_path = index.attrs["index_path"]
    available = sorted(set(int(y) for y in index["year"]))
    missing = [y for y in years if y not in available]
    if missing:
        have = ", ".join(map(str, available)) if available else "none"
        raise InputError("--years", f"{index_path} lists no files for {', '.join(map(str, missing))} (it has: {have}); pick years the mirror holds")
    index = index[index["year"].isin(years)]
    shapely.prepare(aoi_lonlat)
    hits = np.array([fp is not None and aoi_lonlat.intersects(fp) for fp in index["footprint"]], dtype=bool)
    selected = index[hits]
    west, south, east, north = aoi_lonlat.bounds
    for year in years:
        if not (selected["year"] == year).any():
            cover = shapely.union_all(list(index[index["year"] == year]["footprint"])).bounds
            raise InputError(
                "--bbox/--aoi",
                f"the area lon {west:.3f}..{east:.3f}, lat {south:.3f}..{north:.3f} is outside the mirror's coverage for {year}: "
                f"no file in {index_path} intersects it (its files span lon {cover[0]:.3f}..{cover[2]:.3f}, lat {cover[1]:.3f}..{cover[3]:.3f})",
            )
    _check_files_exist(root, list(selected["path"]))
    return selected


def _check_files_exist(root: str, paths: list[str]) -> None:
    fs, _ = _fs(root)

    def exists(path: str) -> bool:
        return fs.exists(_fs(path)[1])

    with concurrent.futures.ThreadPoolExecutor(min(16, max(1, len(paths)))) as pool:
        found = list(pool.map(exists, paths))
    absent = [p for p, ok in zip(paths, found) if not ok]
    if absent:
        raise InputError(
            FLAG,
            f"{len(absent)} of {len(paths)} files the index lists for this area are missing, e.g. {absent[0]}; "
            "is --cog-root the mirror's root (the folder holding <year>/<zone>/<name>.tiff)?",
        )


def files_for_grid(index, grid: Grid) -> tuple[CogFile, ...]:
    """Index rows -> the files whose footprint meets the grid, footprints in the grid's CRS."""
    grid_box = shapely.box(grid.x0, grid.y0 - grid.height * grid.scale, grid.x0 + grid.width * grid.scale, grid.y0)
    files = []
    for row in index.itertuples(index=False):
        footprint = shapely.box(row.west, row.south, row.east, row.north)
        in_grid = _project(footprint, row.crs, grid.crs)
        if not in_grid.is_valid or in_grid.is_empty or not math.isfinite(in_grid.area):
            continue
        if in_grid.intersects(grid_box):
            files.append(CogFile(path=row.path, year=int(row.year), crs=row.crs, bounds=tuple(float(v) for v in in_grid.bounds)))
    files.sort(key=lambda f: (f.year, f.crs != grid.crs, f.path))
    return tuple(files)


# ---------------------------------------------------------------------------------------
# Reading one file into a window of the target grid
# ---------------------------------------------------------------------------------------

def band_indexes(descriptions: tuple, count: int, bands: tuple[str, ...]) -> list[int]:
    """1-based band indexes of `bands` in a file: by band description, else by position (A07 -> 8)."""
    names = {d: i + 1 for i, d in enumerate(descriptions or ()) if d}
    indexes = []
    for band in bands:
        if band in names:
            indexes.append(names[band])
        else:
            match = re.fullmatch(r"A(\d+)", band)
            if not match or int(match[1]) >= count:
                raise ValueError(f"band {band} not found in a file with {count} bands")
            indexes.append(int(match[1]) + 1)
    return indexes


def _is_native(src_crs, t: affine.Affine, grid_crs, scale: float, left: float, top: float) -> bool:
    """Same CRS, same pixel size, pixel edges aligned: a window is a plain copy."""
    if t.b != 0 or t.d != 0 or abs(abs(t.a) - scale) > 1e-9 * scale or abs(abs(t.e) - scale) > 1e-9 * scale or t.a < 0:
        return False
    if src_crs != grid_crs:
        return False
    dx = (left - t.c) / scale
    dy = (top - t.f) / scale
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def _north_up_read(ds, indexes: list[int], row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, affine.Affine]:
    """Rows [row0, row1) x cols [col0, col1) of the file, flipped to north-up if needed.

    Returns (bands, rows, cols) and the north-up transform of that block.
    """
    from rasterio.windows import Window as RioWindow

    t = ds.transform
    data = ds.read(indexes, window=RioWindow(col0, row0, col1 - col0, row1 - row0))
    if t.e > 0:  # bottom-up: row 0 is the southernmost
        data = data[:, ::-1, :]
        block = affine.Affine(t.a, 0.0, t.c + col0 * t.a, 0.0, -t.e, t.f + row1 * t.e)
    else:
        block = affine.Affine(t.a, 0.0, t.c + col0 * t.a, 0.0, t.e, t.f + row0 * t.e)
    return data, block


def _file_rows(t: affine.Affine, height: int, y_low: float, y_high: float) -> tuple[float, float]:
    """Fractional file rows spanning y in [y_low, y_high], whatever the row direction."""
    if t.e > 0:
        return (y_low - t.f) / t.e, (y_high - t.f) / t.e
    return (t.f - y_high) / -t.e, (t.f - y_low) / -t.e


def read_into_grid(ds, indexes: list[int], grid_crs, scale: float, left: float, top: float, rows: int, cols: int) -> np.ndarray | None:
    """One open file's int8 codes on a window of the target grid: (rows, cols, bands), -128 = none.

    Native grid: the overlapping window is copied. Otherwise the codes are warped with
    nearest neighbour (GDAL), -128 as no data on both sides. None if the file adds nothing.
    """
    t = ds.transform
    out = None
    if _is_native(ds.crs, t, grid_crs, scale, left, top):
        bottom, right = top - rows * scale, left + cols * scale
        r_lo, r_hi = _file_rows(t, ds.height, bottom, top)
        c_lo, c_hi = (left - t.c) / t.a, (right - t.c) / t.a
        r0, r1 = max(0, round(r_lo)), min(ds.height, round(r_hi))
        c0, c1 = max(0, round(c_lo)), min(ds.width, round(c_hi))
        if r0 >= r1 or c0 >= c1:
            return None
        data, block = _north_up_read(ds, indexes, r0, r1, c0, c1)
        dst_row = round((top - block.f) / scale)
        dst_col = round((block.c - left) / scale)
        out = np.full((rows, cols, len(indexes)), quantize.NODATA_CODE, dtype=np.int8)
        out[dst_row : dst_row + data.shape[1], dst_col : dst_col + data.shape[2]] = np.moveaxis(data, 0, -1)
        return out
    return _warp_into_grid(ds, indexes, grid_crs, scale, left, top, rows, cols)


def _warp_into_grid(ds, indexes, grid_crs, scale, left, top, rows, cols) -> np.ndarray | None:
    import rasterio.warp
    from rasterio.enums import Resampling

    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise ValueError(f"{ds.name}: rotated geotransforms are not supported")
    bottom, right = top - rows * scale, left + cols * scale
    try:
        sx0, sy0, sx1, sy1 = rasterio.warp.transform_bounds(grid_crs, ds.crs, left, bottom, right, top, densify_pts=21)
    except Exception:
        return None
    if not all(math.isfinite(v) for v in (sx0, sy0, sx1, sy1)):
        return None
    margin = 2  # pixels: nearest neighbour needs the source pixel under every target centre
    c_lo, c_hi = sorted(((sx0 - t.c) / t.a, (sx1 - t.c) / t.a))
    r_lo, r_hi = _file_rows(t, ds.height, sy0, sy1)
    r0, r1 = max(0, math.floor(r_lo) - margin), min(ds.height, math.ceil(r_hi) + margin)
    c0, c1 = max(0, math.floor(c_lo) - margin), min(ds.width, math.ceil(c_hi) + margin)
    if r0 >= r1 or c0 >= c1:
        return None
    data, block = _north_up_read(ds, indexes, r0, r1, c0, c1)
    if (data == quantize.NODATA_CODE).all():
        return None
    destination = np.full((len(indexes), rows, cols), quantize.NODATA_CODE, dtype=np.int8)
    rasterio.warp.reproject(
        source=np.ascontiguousarray(data), destination=destination,
        src_transform=block, src_crs=ds.crs, src_nodata=quantize.NODATA_CODE,
        dst_transform=affine.Affine(scale, 0.0, left, 0.0, -scale, top), dst_crs=grid_crs, dst_nodata=quantize.NODATA_CODE,
        resampling=Resampling.nearest,
    )
    return np.moveaxis(destination, 0, -1)


def mosaic_into(out: np.ndarray, part: np.ndarray) -> None:
    """Fill `out`'s no-data pixels from `part` (first file with data wins).

    The mirror masks a pixel in all bands or none, so band 0 tells.
    """
    take = (out[..., 0] == quantize.NODATA_CODE) & (part[..., 0] != quantize.NODATA_CODE)
    if take.all():
        out[...] = part
    elif take.any():
        out[take] = part[take]


# ---------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------

class _Handles(threading.local):
    """Open datasets of one fetch thread (rasterio datasets are not shared across threads)."""

    def __init__(self):
        self.open: collections.OrderedDict = collections.OrderedDict()
        self.env = None


@dataclasses.dataclass
class CogSource(GridSource):
    """Tiles of the int8 COG mirror, read window by window through the index.

    `files` are the index rows that meet the grid (see `files_for_grid`), chosen on the
    launcher, so workers never read the index nor list the bucket.
    """

    root: str = ""
    files: tuple[CogFile, ...] = ()
    transfer_itemsize: int = 1  # the mirror stores int8

    def setup(self) -> None:
        import rasterio.crs

        self._handles = _Handles()
        self._grid_crs = rasterio.crs.CRS.from_user_input(self.grid.crs)
        self._by_year: dict[int, list[CogFile]] = collections.defaultdict(list)
        for f in self.files:
            self._by_year[f.year].append(f)
        self._fs = _fs(self.root)[0] if is_remote(self.root) else None

    def __getstate__(self):  # never pickle open datasets, thread-locals or filesystems
        state = dict(self.__dict__)
        for key in ("_handles", "_grid_crs", "_by_year", "_fs"):
            state.pop(key, None)
        return state

    def _open(self, path: str):
        import rasterio

        handles = self._handles
        if handles.env is None:
            handles.env = rasterio.Env(**GDAL_ENV)
            handles.env.__enter__()  # per thread, for the thread's life
        if path in handles.open:
            handles.open.move_to_end(path)
            return handles.open[path]
        if self._fs is not None:
            ds = rasterio.open(_fs(path)[1], opener=self._fs)
        else:
            ds = rasterio.open(path.removeprefix("file://"))
        handles.open[path] = ds
        while len(handles.open) > HANDLES_PER_THREAD:
            _, old = handles.open.popitem(last=False)
            old.close()
        return ds

    def _forget(self, path: str) -> None:
        ds = self._handles.open.pop(path, None)
        if ds is not None:
            try:
                ds.close()
            except Exception:
                pass

    def _remote_missing(self, path: str) -> bool:
        try:
            return not self._fs.exists(_fs(path)[1])
        except Exception:  # cannot tell now: let the retry find out
            return False

    def fetch(self, spec: ChunkSpec, tile: Window) -> np.ndarray:
        left, bottom, right, top = self.grid.window_bounds(tile)
        codes = np.full((tile.rows, tile.cols, len(self.bands)), quantize.NODATA_CODE, dtype=np.int8)
        for f in self._by_year.get(spec.year, ()):
            if not f.intersects((left, bottom, right, top)):
                continue
            part = self._read(f, left, top, tile.rows, tile.cols)
            if part is not None:
                mosaic_into(codes, part)
                if not (codes[..., 0] == quantize.NODATA_CODE).any():
                    break
        if np.dtype(self.store_dtype) == np.int8:
            return codes
        return quantize.dequantize(codes)

    def _read(self, f: CogFile, left: float, top: float, rows: int, cols: int) -> np.ndarray | None:
        import rasterio.errors

        try:
            ds = self._open(f.path)
            indexes = band_indexes(ds.descriptions, ds.count, self.bands)
            return read_into_grid(ds, indexes, self._grid_crs, self.grid.scale, left, top, rows, cols)
        except FileNotFoundError as exc:
            self._forget(f.path)
            raise FileNotFoundError(f"{f.path} is listed in the index but does not exist: {_first_line(exc)}") from None
        except (rasterio.errors.RasterioIOError, OSError, TimeoutError, ConnectionError) as exc:
            self._forget(f.path)
            if not is_remote(f.path):  # a local file that cannot be read will not get better
                if not _local_exists(f.path):
                    raise FileNotFoundError(f"{f.path} is listed in the index but does not exist") from None
                raise OSError(f"cannot read {f.path}: {_first_line(exc)}") from exc
            if self._remote_missing(f.path):
                raise FileNotFoundError(f"{f.path} is listed in the index but does not exist") from None
            raise RetryableError(f"{f.path}: {_first_line(exc)}") from exc
        except Exception as exc:
            if is_remote(f.path) and _looks_transient(exc):
                self._forget(f.path)
                raise RetryableError(f"{f.path}: {type(exc).__name__}: {_first_line(exc)}") from exc
            raise


def _local_exists(path: str) -> bool:
    import os

    return os.path.exists(path.removeprefix("file://"))


def _looks_transient(exc: BaseException) -> bool:
    """Network-library errors (aiohttp, requests, gcsfs HttpError 429/5xx) are worth a retry."""
    module = type(exc).__module__ or ""
    if module.startswith(("aiohttp", "requests", "urllib3", "http.client")):
        return True
    code = getattr(exc, "code", None) or getattr(exc, "status", None)
    try:
        return int(code) == 429 or int(code) >= 500
    except (TypeError, ValueError):
        return False


def make_source(grid: Grid, years: list[int], bands: tuple[str, ...], store_dtype: str, root: str, index,
                request_tile_size: int | None = None) -> CogSource:
    """The source for a planned grid, given the index rows `check_cog_root` returned."""
    return CogSource(
        grid=grid, years=tuple(years), bands=tuple(bands), store_dtype=store_dtype, transfer_itemsize=1,
        request_tile_size=request_tile_size, root=root, files=files_for_grid(index, grid),
    )


def store_attrs(root: str) -> dict:
    """What an extraction from the mirror records in the store's attrs."""
    return {
        "source": f"cog:{root}",
        "cog_root": root,
        "resampling": RESAMPLING,
        "mosaic": MOSAIC_RULE,
        "dequantization": quantize.FORMULA,
    }
