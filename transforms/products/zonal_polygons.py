"""`efm zonal`'s polygons, on the driver, a batch at a time: read, check, reproject, index by chunk.

No step holds every polygon: the file is read in batches of `BATCH` rows (pyogrio's Arrow stream
for OGR formats, Parquet row batches for GeoParquet); each batch is checked (CRS, polygon types,
empty / invalid geometries, the id column), projected to each store's CRS and joined to its chunk
grid by bounds, then written to the parts folder:

    part-0-<batch>.parquet  (task, fid, wkb, single), one row group per task (store chunk) the
                            batch reaches: what the workers read (`read_task_polygons`)
    part-3-<batch>.parquet  the batch's table columns (fid, the id, the file's other columns)

A polygon's `fid` is its row number in the file, so batch b holds fids [b * BATCH, (b+1) * BATCH).
Counts of bad rows and the id's uniqueness are checked over the whole file; a refusal removes
the parts written so far (transforms/products/zonal.py: `index`).
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np

from transforms.core import atomic
from transforms.core.errors import InputError, first_line
from transforms.storage.readers import StoreInfo

ID_COLUMN = "polygon_id"  # the id column when no --id-column is named: the row number in the file
BATCH = 100_000  # polygons read, checked and indexed at a time (bounds the driver's memory)
# parts folder (transforms/storage/outputs.py accepts part-<int>-<int>.parquet only)
POLYGONS_PART, CHUNK_PART, CROSSING_PART, ATTRIBUTES_PART = 0, 1, 2, 3


def part_name(parts_dir: str, kind: int, index: int) -> str:
    return f"{parts_dir}/part-{kind}-{index}.parquet"


# ---------------------------------------------------------------- reading in batches


def _cannot_read(path: str, flag: str, exc: Exception) -> InputError:
    text = first_line(exc)
    if isinstance(exc, FileNotFoundError) or "No such file" in text or "does not exist" in text:
        return InputError(flag, f"{path} does not exist")
    return InputError(
        flag, f"cannot read {path} as polygons (GeoPackage, GeoJSON, Shapefile, GeoParquet): {text}"
    )


def _parquet_batches(path: str, size: int):
    """GeoParquet -> (GeoSeries with its CRS, Arrow table of the other columns) per batch."""
    import geopandas
    import pyarrow as pa
    import pyarrow.parquet as pq
    from geopandas.io.arrow import _arrow_to_geopandas

    pf = pq.ParquetFile(path)
    meta = pf.schema_arrow.metadata or {}
    if b"geo" not in meta:
        raise ValueError("not a GeoParquet file (no 'geo' metadata)")
    import json

    geo = json.loads(meta[b"geo"])
    name = geo["primary_column"]
    index = json.loads(meta.get(b"pandas", b"{}")).get("index_columns", [])
    drop = [name] + [c for c in index if isinstance(c, str)]
    for batch in pf.iter_batches(batch_size=size):
        table = pa.Table.from_batches([batch])
        frame = _arrow_to_geopandas(table.select([name]), geo)
        yield (
            geopandas.GeoSeries(frame.geometry.values, crs=frame.crs),
            table.drop_columns([c for c in drop if c in table.column_names]),
        )


def _ogr_batches(path: str, size: int):
    import geopandas
    import pyarrow as pa
    import shapely
    from pyogrio.raw import open_arrow

    with open_arrow(path, batch_size=size, use_pyarrow=True) as (meta, reader):
        name = meta.get("geometry_name") or "wkb_geometry"
        for batch in reader:
            table = pa.Table.from_batches([batch])
            column = name if name in table.column_names else table.column_names[-1]
            wkb = table.column(column).to_numpy(zero_copy_only=False)
            geometry = shapely.from_wkb(wkb)
            yield geopandas.GeoSeries(geometry, crs=meta.get("crs")), table.drop_columns([column])


def _frame_batches(frame, size: int):
    import geopandas
    import pyarrow as pa

    columns = pa.Table.from_pandas(
        frame.drop(columns=[frame.geometry.name]).reset_index(drop=True), preserve_index=False
    )
    geometry = frame.geometry.values
    for start in range(0, len(frame), size):
        yield (
            geopandas.GeoSeries(geometry[start : start + size], crs=frame.crs),
            columns.slice(start, size),
        )


def batches(source, name: str, flag: str = "--polygons", size: int | None = None):
    """A polygon file (GeoPackage, GeoJSON, Shapefile, GeoParquet, any OGR format) or a
    GeoDataFrame -> (GeoSeries, Arrow table of its other columns) per batch of `size` rows."""
    size = size or BATCH
    if not isinstance(source, (str, os.PathLike)):
        if not hasattr(source, "geometry"):
            raise InputError(
                flag, f"{name} has no geometry column; give a polygon file or GeoDataFrame"
            )
        yield from _frame_batches(source, size)
        return
    path = os.fspath(source)
    if not os.path.exists(path) and "://" not in path:
        raise InputError(flag, f"{path} does not exist")
    parquet = path.lower().endswith((".parquet", ".geoparquet", ".pq"))
    stream = _parquet_batches(path, size) if parquet else _ogr_batches(path, size)
    while True:
        try:
            item = next(stream)
        except StopIteration:
            return
        except InputError:
            raise
        except Exception as exc:
            raise _cannot_read(path, flag, exc) from None
        yield item


# ---------------------------------------------------------------- checking a batch


@dataclasses.dataclass
class Checks:
    """What the check of every batch found so far (refused at the end, over the whole file)."""

    name: str
    id_column: str | None
    skip_invalid: bool
    reserved: frozenset
    flags: tuple[str, str, str]  # polygons, id column, skip-invalid
    rows: int = 0
    bad: int = 0
    first_bad: tuple[int, str] | None = None
    ids: list = dataclasses.field(default_factory=list)
    crs: str | None = None

    def batch(self, geometry, columns):
        """One batch: -> (kept fids, kept geometry (shapely, the file's CRS), kept columns (Arrow,
        id first)); raises at once for what a batch shows whole (CRS, columns, types)."""
        import pyarrow as pa
        import shapely

        flag, id_flag, _ = self.flags
        start = self.rows
        self.rows += len(geometry)
        if geometry.crs is None:
            raise InputError(
                flag,
                f"{self.name} has no CRS; set it (e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg "
                f"{self.name}`, or GeoDataFrame.set_crs)",
            )
        self.crs = self.crs or geometry.crs.to_string()
        names = list(columns.column_names)
        if self.id_column is not None:
            if self.id_column not in names:
                raise InputError(
                    id_flag,
                    f"{self.name} has no column {self.id_column!r}; its columns are "
                    f"{', '.join(map(str, names))}",
                )
            self.ids.append(columns.column(self.id_column).combine_chunks())
        arr = np.asarray(geometry.values, dtype=object)
        missing = np.array([g is None for g in arr], dtype=bool)
        kinds = set(shapely.get_type_id(arr[~missing]).tolist())
        if kinds - {3, 6}:  # Polygon, MultiPolygon
            other = sorted(set(shapely.geometry.base.GEOMETRY_TYPES[k] for k in kinds - {3, 6}))
            raise InputError(flag, f"{self.name} must hold polygons, found {', '.join(other)}")
        bad = missing.copy()
        bad[~missing] = shapely.is_empty(arr[~missing]) | ~shapely.is_valid(arr[~missing])
        if bad.any():
            if self.first_bad is None:
                first = int(np.flatnonzero(bad)[0])
                reason = (
                    "no geometry"
                    if missing[first]
                    else "empty"
                    if shapely.is_empty(arr[first])
                    else shapely.is_valid_reason(arr[first])
                )
                self.first_bad = (start + first, reason)
            self.bad += int(bad.sum())
        fids = np.arange(start, start + len(arr), dtype=np.int64)
        if self.id_column is None:
            if ID_COLUMN in names:
                raise InputError(
                    id_flag,
                    f"{self.name} has a column {ID_COLUMN!r} (the name efm gives the row number): "
                    f"pass {id_flag} {ID_COLUMN} if it is the id",
                )
            columns = columns.add_column(0, ID_COLUMN, pa.array(fids))
        else:
            columns = columns.select([self.id_column] + [c for c in names if c != self.id_column])
        clash = [c for c in columns.column_names[1:] if str(c) in self.reserved]
        if clash:
            raise InputError(
                flag,
                f"{self.name} has a column named {clash[0]!r}, which the table uses for itself; "
                "rename it",
            )
        keep = ~bad
        return fids[keep], arr[keep], columns.filter(pa.array(keep))

    def finish(self) -> None:
        """After the last batch: the counts over the whole file."""
        import pyarrow as pa

        flag, id_flag, skip_flag = self.flags
        if self.rows == 0:
            raise InputError(flag, f"{self.name} holds no polygon")
        if self.ids:
            ids = pa.chunked_array(self.ids).to_pandas()
            duplicated = ids[ids.duplicated(keep=False) | ids.isna()]
            if len(duplicated):
                raise InputError(
                    id_flag,
                    f"column {self.id_column!r} of {self.name} is not a unique id: "
                    f"{len(duplicated)} rows share a value or have none (first: "
                    f"{duplicated.iloc[0]!r}); name a unique column",
                )
        if self.bad and not self.skip_invalid:
            row, reason = self.first_bad
            raise InputError(
                flag,
                f"{self.bad} of {self.rows} geometries of {self.name} are empty or invalid "
                f"(first: row {row}, {reason}); repair them (e.g. shapely.make_valid) or pass "
                f"{skip_flag} to skip them",
            )


# ---------------------------------------------------------------- chunk index


def pixel_ranges(info: StoreInfo, geometry: np.ndarray, all_touched: bool):
    """Each polygon's bounds -> the pixel rows [r0, r1) and cols [c0, c1) it may cover (a superset,
    one pixel wider on each side), clipped to the grid; r0 == r1 when it misses the grid."""
    import shapely

    a, _, c, _, e, f = info.transform[:6]
    bounds = shapely.bounds(geometry)  # minx, miny, maxx, maxy
    with np.errstate(invalid="ignore"):
        xs = (bounds[:, [0, 2]] - c) / a
        ys = (bounds[:, [1, 3]] - f) / e
    c0 = np.floor(np.nanmin(xs, axis=1)) - 1
    c1 = np.ceil(np.nanmax(xs, axis=1)) + 1
    r0 = np.floor(np.nanmin(ys, axis=1)) - 1
    r1 = np.ceil(np.nanmax(ys, axis=1)) + 1
    c0, c1 = np.clip(c0, 0, info.width), np.clip(c1, 0, info.width)
    r0, r1 = np.clip(r0, 0, info.height), np.clip(r1, 0, info.height)
    ok = (c1 > c0) & (r1 > r0) & np.isfinite(bounds).all(axis=1)
    r1, c1 = np.where(ok, r1, r0), np.where(ok, c1, c0)
    return r0.astype(np.int64), r1.astype(np.int64), c0.astype(np.int64), c1.astype(np.int64)


def chunk_index(info: StoreInfo, geometry: np.ndarray, all_touched: bool):
    """The spatial join of polygon bounds to the chunk grid: (chunk ids, polygon indices, single)
    sorted by chunk, where single[i] says polygon i lies in one chunk (finished there).
    A chunk id is chunk_row * n_chunk_cols + chunk_col."""
    r0, r1, c0, c1 = pixel_ranges(info, geometry, all_touched)
    cr, cc = info.chunk_rows, info.chunk_cols
    ncols = -(-info.width // cc)
    inside = r1 > r0
    k0, k1 = np.where(inside, r0 // cr, 0), np.where(inside, (r1 - 1) // cr + 1, 0)
    j0, j1 = np.where(inside, c0 // cc, 0), np.where(inside, (c1 - 1) // cc + 1, 0)
    nr, nc = k1 - k0, j1 - j0
    per = nr * nc
    single = per == 1
    polygon = np.repeat(np.arange(len(geometry)), per)
    offset = np.arange(len(polygon)) - np.repeat(np.cumsum(per) - per, per)
    rows = np.repeat(k0, per) + offset // np.repeat(np.maximum(nc, 1), per)
    cols = np.repeat(j0, per) + offset % np.repeat(np.maximum(nc, 1), per)
    chunk = rows * ncols + cols
    order = np.argsort(chunk, kind="stable")
    return chunk[order], polygon[order], single


def chunk_window(info: StoreInfo, cid: int) -> tuple[int, int, int, int]:
    """Chunk id -> (row0, col0, rows, cols)."""
    ncols = -(-info.width // info.chunk_cols)
    row0, col0 = (cid // ncols) * info.chunk_rows, (cid % ncols) * info.chunk_cols
    return (
        row0,
        col0,
        min(info.chunk_rows, info.height - row0),
        min(info.chunk_cols, info.width - col0),
    )


def chunk_count(info: StoreInfo) -> int:
    return -(-info.height // info.chunk_rows) * -(-info.width // info.chunk_cols)


def write_table(path: str, table, groups=None) -> None:
    """An Arrow table -> Parquet at `path` (whole or absent); `groups`: row slices, one row
    group each."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()  # no dictionary: WKB and fids are all distinct (it cost ~10x the write)
    with pq.ParquetWriter(buffer, table.schema, use_dictionary=False) as writer:
        for start, stop in groups or [(0, table.num_rows)]:
            writer.write_table(table.slice(start, stop - start), row_group_size=stop - start + 1)
    atomic.write_bytes(path, buffer.getvalue())


def read_row_group(path: str, group: int | None = None, columns=None):
    """Row group `group` (None: all) of a part, as an Arrow table; a local part is read in place
    (only the footer and that row group), a remote one copied whole into memory first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if "://" in path and not path.startswith("file://"):
        import fsspec

        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(pa.BufferReader(f.read()))
    else:
        pf = pq.ParquetFile(path.removeprefix("file://"), memory_map=False)
    if group is None:
        return pf.read(columns=columns, use_threads=False)
    return pf.read_row_group(group, columns=columns, use_threads=False)


@dataclasses.dataclass
class Indexed:
    """What `index` wrote: the tasks [(task id, ((part, row group), ...))] and the file's facts."""

    tasks: list
    rows: int  # polygons in the file
    kept: int
    skipped: int
    id_column: str
    crs: str  # the file's CRS
    batches: int


def index(
    source,
    name: str,
    targets: list[tuple[StoreInfo, int]],
    parts_dir: str,
    *,
    all_touched: bool,
    checks: Checks,
    batch: int | None = None,
) -> Indexed:
    """Read, check and index `source` batch by batch into `parts_dir` (see the module docstring).

    targets: [(store, first task id)]: store s's chunk c is task id first_s + c (a collection's
    members; one store: [(info, 0)]). A polygon is finished in its chunk (`single`) only if its
    bounds reach one chunk of one store."""
    import geopandas
    import pyarrow as pa
    import shapely

    batch = batch or BATCH
    tasks: dict[int, list] = {}
    kept = batches_done = 0
    for b, (geometry, columns) in enumerate(batches(source, name, checks.flags[0], batch)):
        fids, keep, columns = checks.batch(geometry, columns)
        batches_done = b + 1
        kept += len(fids)
        write_table(
            part_name(parts_dir, ATTRIBUTES_PART, b),
            columns.add_column(0, "fid", pa.array(fids)),
        )
        found = []  # per target: (task ids, polygon indices, single, wkb)
        reached = np.zeros(len(fids), np.int64)
        series = geopandas.GeoSeries(keep, crs=geometry.crs)
        for info, first in targets:
            projected = np.asarray(series.to_crs(info.crs).values, dtype=object)
            chunk, polygon, single = chunk_index(info, projected, all_touched)
            reached[np.unique(polygon)] += 1
            found.append((chunk + first, polygon, single, projected))
        task = np.concatenate([f[0] for f in found]) if found else np.empty(0, np.int64)
        if len(task) == 0:
            continue
        polygon = np.concatenate([f[1] for f in found])
        single = np.concatenate([f[2][f[1]] for f in found]) & (reached[polygon] == 1)
        wkb = np.concatenate([shapely.to_wkb(f[3][f[1]]) for f in found])
        order = np.argsort(task, kind="stable")
        task, polygon, single, wkb = task[order], polygon[order], single[order], wkb[order]
        ids, starts = np.unique(task, return_index=True)
        stops = np.r_[starts[1:], len(task)]
        path = part_name(parts_dir, POLYGONS_PART, b)
        write_table(
            path,
            pa.table(
                {
                    "fid": pa.array(fids[polygon]),
                    "wkb": pa.array(wkb, type=pa.binary()),
                    "single": pa.array(single),
                }
            ),
            list(zip(starts.tolist(), stops.tolist())),
        )
        for group, tid in enumerate(ids.tolist()):
            tasks.setdefault(tid, []).append((path, group))
    checks.finish()
    return Indexed(
        tasks=[(tid, tuple(refs)) for tid, refs in sorted(tasks.items())],
        rows=checks.rows,
        kept=kept,
        skipped=checks.bad,
        id_column=checks.id_column or ID_COLUMN,
        crs=checks.crs,
        batches=batches_done,
    )


def read_task_polygons(refs):
    """A task's polygons from the parts `index` wrote: (fids, shapely geometry, single)."""
    import pyarrow as pa
    import shapely

    table = pa.concat_tables([read_row_group(path, group) for path, group in refs])
    return (
        table.column("fid").to_numpy(),
        shapely.from_wkb(table.column("wkb").to_numpy(zero_copy_only=False)),
        table.column("single").to_numpy(zero_copy_only=False),
    )
