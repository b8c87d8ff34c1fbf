"""Where the COG mirror's files are: the index table and fail-fast checks.

The mirror is laid out as `<root>/<year>/<zone, e.g. 10N>/<name>.tiff` with an index table
next to the year folders (`aef_index.parquet`, `.gpkg` or `.csv`) that lists every file's
footprint. Files are found through that index only: the bucket is never listed. Paths under the
root, and the filesystem to reach them, are cog_paths.py's.
`check_cog_root` runs on the launcher; `files_for_grid` turns its rows into the small
`CogFile` records the workers get.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import math
import warnings

import numpy as np
import pyproj
import shapely

from transforms.core.errors import InputError, first_line
from transforms.core.grid import Grid
from transforms.sources import remote_fs
from transforms.sources.cog_paths import (
    FLAG,
    LAYOUT,
    canonical,
    filesystem,
    is_remote,
    join,
    resolve_path,
    zone_crs,
)

INDEX_NAMES = ("aef_index.parquet", "aef_index.gpkg", "aef_index.csv")


# ---------------------------------------------------------------------------------------
# The index table
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CogFile:
    """One file of the mirror, as the workers need it (small: pickled with the source)."""

    path: str  # resolved under the root
    year: int
    crs: str  # the file's own CRS (its UTM zone)
    bounds: tuple[
        float, float, float, float
    ]  # footprint in the *grid's* CRS (minx, miny, maxx, maxy)

    def intersects(self, bounds: tuple[float, float, float, float]) -> bool:
        minx, miny, maxx, maxy = bounds
        return (
            self.bounds[0] < maxx
            and minx < self.bounds[2]
            and self.bounds[1] < maxy
            and miny < self.bounds[3]
        )


def find_index(root: str) -> str:
    """The index table's path under `root`, or a clear error. Looks at three names, lists nothing."""
    fs, base = filesystem(root)
    for name in INDEX_NAMES:
        try:
            if remote_fs.exists(fs, f"{base}/{name}"):
                return join(root, name)
        except Exception as exc:  # auth, network: say so now
            raise InputError(
                FLAG, f"cannot reach {root}: {type(exc).__name__}: {first_line(exc)}"
            ) from None
    bucket = remote_fs.bucket_missing(fs, root)
    if bucket:
        hint = ", and the endpoint if you set AWS_ENDPOINT_URL" if root.startswith("s3") else ""
        raise InputError(
            FLAG, f"no bucket named {bucket!r} (for {root}); check the bucket's name{hint}"
        )
    raise InputError(
        FLAG,
        f"no index table in {root} (looked for {', '.join(INDEX_NAMES)}); point --cog-root at the mirror's root, "
        "the folder that holds the index next to the <year>/<zone>/ folders",
    )


def _read_table(path: str):
    """(the raw index as a pandas DataFrame (geometry, if any, left as WKB/WKT/shapely),
    the index file's size in bytes, its sha256): the file is read once, hashed and parsed."""
    import pandas as pd

    fs, stripped = filesystem(path)
    with fs.open(stripped, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        # from bytes already in memory: Arrow's threads never hold a Python file (core/parquet.py)
        return pq.read_table(pa.BufferReader(data)).to_pandas(), len(data), digest
    if path.endswith(".gpkg"):
        import pyogrio

        if not is_remote(path):
            return pyogrio.read_dataframe(stripped), len(data), digest
        with warnings.catch_warnings():  # GDAL names the in-memory copy without .gpkg
            warnings.filterwarnings("ignore", message=".*non conformant file extension")
            return pyogrio.read_dataframe(io.BytesIO(data)), len(data), digest
    return pd.read_csv(io.BytesIO(data)), len(data), digest


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
    footprint in the file's CRS) and `footprint` (shapely, lon/lat). `attrs` name the index
    file (`index_path`) and fingerprint what was read (`index_bytes`, `index_sha256`). Accepts the public
    index's columns (`path`, `year`, `crs`, `utm_zone`, `utm_west..utm_north`,
    `wgs84_west..wgs84_north`, geometry); only `path` is strictly required.
    """
    import pandas as pd

    index_path = find_index(root)
    try:
        raw, index_bytes, index_sha256 = _read_table(index_path)
    except Exception as exc:
        raise InputError(FLAG, f"cannot read the index {index_path}: {first_line(exc)}") from None
    columns = {c.lower(): c for c in raw.columns}
    if "path" not in columns:
        raise InputError(
            FLAG,
            f"the index {index_path} has no 'path' column (columns: {', '.join(map(str, raw.columns))})",
        )
    paths = raw[columns["path"]].astype(str)
    layout = paths.str.extract(LAYOUT.pattern)
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
        raise InputError(
            FLAG,
            f"the index {index_path} has rows without a year or a CRS (columns: {', '.join(map(str, raw.columns))})",
        )
    geometry_column = next(
        (columns[c] for c in ("geometry", "geom", "footprint", "wkt") if c in columns), None
    )
    footprints = (
        [_geometry_lonlat(v) for v in raw[geometry_column]]
        if geometry_column
        else [None] * len(raw)
    )
    has_wgs84 = all(f"wgs84_{side}" in columns for side in ("west", "south", "east", "north"))
    has_utm = all(f"utm_{side}" in columns for side in ("west", "south", "east", "north"))
    frame = pd.DataFrame(
        {
            "path": [resolve_path(root, p) for p in paths],
            "year": years.astype(int).to_numpy(),
            "crs": [_normalise_crs(c) for c in crs],
        }
    )
    for i, fp in enumerate(footprints):
        if fp is None and has_wgs84:
            footprints[i] = shapely.box(
                *(
                    float(raw[columns[f"wgs84_{s}"]].iloc[i])
                    for s in ("west", "south", "east", "north")
                )
            )
    if has_utm:
        for side in ("west", "south", "east", "north"):
            frame[side] = raw[columns[f"utm_{side}"]].astype(float).to_numpy()
    else:  # the lon/lat footprint projected to the file's zone: approximate, enough to pick files
        if any(fp is None for fp in footprints):
            raise InputError(
                FLAG,
                f"the index {index_path} gives no footprint (utm_west.., wgs84_west.. or a geometry) for some files",
            )
        bounds = [_project(fp, "EPSG:4326", c).bounds for fp, c in zip(footprints, frame["crs"])]
        frame["west"], frame["south"], frame["east"], frame["north"] = (
            np.array(b) for b in zip(*bounds)
        )
    if any(fp is None for fp in footprints):  # lon/lat footprint from the zone bounds
        footprints = [
            fp if fp is not None else _project(shapely.box(w, s, e, n), c, "EPSG:4326")
            for fp, w, s, e, n, c in zip(
                footprints,
                frame["west"],
                frame["south"],
                frame["east"],
                frame["north"],
                frame["crs"],
            )
        ]
    frame["footprint"] = footprints
    frame.attrs.update(index_path=index_path, index_bytes=index_bytes, index_sha256=index_sha256)
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
    densified = shapely.segmentize(
        geometry,
        max_segment_length=(0.01 if pyproj.CRS.from_user_input(src).is_geographic else 500.0),
    )
    return shapely.transform(densified, _transformers[key].transform, interleaved=False)


def check_cog_root(root: str, years: list[int], aoi_lonlat: shapely.Geometry):
    """Fail fast: an index must exist, list files for every year, and cover the area.

    Returns the index rows of `years` whose footprint intersects the area (a DataFrame as
    `read_index` gives), having checked that those files exist. Its `attrs` also carry what
    the store records about the source (`source_record`): the place and the fingerprint.
    """
    index = read_index(root)
    index_path = index.attrs["index_path"]
    available = sorted(set(int(y) for y in index["year"]))
    missing = [y for y in years if y not in available]
    if missing:
        have = ", ".join(map(str, available)) if available else "none"
        raise InputError(
            "--years",
            f"{index_path} lists no files for {', '.join(map(str, missing))} (it has: {have}); pick years the mirror holds",
        )
    attrs = dict(index.attrs)
    index = index[index["year"].isin(years)]
    shapely.prepare(aoi_lonlat)
    hits = np.array(
        [fp is not None and aoi_lonlat.intersects(fp) for fp in index["footprint"]], dtype=bool
    )
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
    sizes = _file_sizes(root, list(selected["path"]))
    selected = selected.copy()
    selected.attrs.update(attrs)
    selected.attrs["source_record"] = source_record(
        root, index_path, attrs["index_bytes"], attrs["index_sha256"], sizes
    )
    selected.attrs["coverage_lonlat"] = {  # where the mirror has files (their bounds), per year
        int(y): tuple(float(v) for v in shapely.total_bounds(np.asarray(group["footprint"])))
        for y, group in index.groupby("year")
    }
    return selected


def source_record(
    root: str, index_path: str, index_bytes: int, index_sha256: str, sizes: dict[str, int]
) -> dict:
    """What a store records about the mirror it was read from (README: resume checks the source).

    The place: the root and index as `canonical` spells them. The fingerprint: the index
    file's size and sha256, and a sha256 of the files the area selects (their paths under
    the root, and sizes, sorted), so one mirror reached by any spelling gives the same record,
    and another mirror at the same spelling does not.
    """
    base = root.rstrip("/")
    listing = "".join(
        f"{path.removeprefix(base).lstrip('/')}\t{size}\n" for path, size in sorted(sizes.items())
    )
    return {
        "cog_root": canonical(root),
        "cog_index": canonical(index_path),
        "cog_index_bytes": int(index_bytes),
        "cog_index_sha256": index_sha256,
        "cog_files": len(sizes),
        "cog_files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }


def _file_sizes(root: str, paths: list[str]) -> dict[str, int]:
    """Each file's size in bytes (one metadata call a file, as the existence check made);
    missing files are a one-line InputError."""
    fs, _ = filesystem(root)

    def size(path: str) -> int | None:
        return remote_fs.size(fs, filesystem(path)[1])

    with concurrent.futures.ThreadPoolExecutor(min(16, max(1, len(paths)))) as pool:
        found = list(pool.map(size, paths))
    absent = [p for p, n in zip(paths, found) if n is None]
    if absent:
        raise InputError(
            FLAG,
            f"{len(absent)} of {len(paths)} files the index lists for this area are missing, e.g. {absent[0]}; "
            "is --cog-root the mirror's root (the folder holding <year>/<zone>/<name>.tiff)?",
        )
    return dict(zip(paths, found))


def files_for_grid(index, grid: Grid) -> tuple[CogFile, ...]:
    """Index rows -> the files whose footprint meets the grid, footprints in the grid's CRS."""
    grid_box = shapely.box(
        grid.x0, grid.y0 - grid.height * grid.scale, grid.x0 + grid.width * grid.scale, grid.y0
    )
    files = []
    for row in index.itertuples(index=False):
        footprint = shapely.box(row.west, row.south, row.east, row.north)
        in_grid = _project(footprint, row.crs, grid.crs)
        if not in_grid.is_valid or in_grid.is_empty or not math.isfinite(in_grid.area):
            continue
        if in_grid.intersects(grid_box):
            files.append(
                CogFile(
                    path=row.path,
                    year=int(row.year),
                    crs=row.crs,
                    bounds=tuple(float(v) for v in in_grid.bounds),
                )
            )
    files.sort(key=lambda f: (f.year, f.crs != grid.crs, f.path))
    return tuple(files)
