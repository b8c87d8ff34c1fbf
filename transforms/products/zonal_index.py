"""`efm zonal`'s parts folder: the driver's index of the polygons by store chunk, and the parts.

`index` takes the checked batches (zonal_polygons.py), projects each to every store's CRS, joins
it to the store's chunk grid by bounds, and writes to the parts folder:

    part-0-<batch>.parquet  (task, fid, wkb, single), one row group per task (store chunk) the
                            batch reaches: what the workers read (`read_task_polygons`)
    part-3-<batch>.parquet  the batch's table columns (fid, the id, the file's other columns)

and later the workers' results (zonal_table.py): part-1-<task> and part-2-<batch>.
A polygon's `fid` is its row number in the file, so batch b holds fids [b * BATCH, (b+1) * BATCH).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from transforms.core import atomic
from transforms.products import zonal_polygons
from transforms.products.zonal_polygons import Checks, batches
from transforms.products.zonal_stats import release_memory
from transforms.storage.readers import StoreInfo

# parts folder (transforms/storage/outputs.py accepts part-<int>-<int>.parquet only)
POLYGONS_PART, CHUNK_PART, CROSSING_PART, ATTRIBUTES_PART = 0, 1, 2, 3


# a part's writer: no dictionary (WKB, fids and statistics are all distinct: it cost ~10x the
# write) and no column statistics (nothing filters on them; a part's footer of ~60 row groups x
# 67 columns was re-parsed at each read of one of its row groups: ~2 ms a read, ~1,900 reads at
# 1M polygons)
PART_OPTIONS = {"use_dictionary": False, "write_statistics": False}


def part_name(parts_dir: str, kind: int, index: int) -> str:
    return f"{parts_dir}/part-{kind}-{index}.parquet"


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
    with pq.ParquetWriter(buffer, table.schema, **PART_OPTIONS) as writer:
        for start, stop in groups or [(0, table.num_rows)]:
            writer.write_table(table.slice(start, stop - start), row_group_size=stop - start + 1)
    atomic.write_bytes(path, buffer.getvalue())


def read_row_group(path: str, group: int | None = None, columns=None):
    """Row group `group` (None: all; a list: these, one after the other) of a part, as an Arrow
    table; a local part is read in place (only the footer and those row groups), a remote one
    copied whole into memory first."""
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
    if isinstance(group, list):
        return pf.read_row_groups(group, columns=columns, use_threads=False)
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
    import pyproj
    import shapely

    batch = batch or zonal_polygons.BATCH
    crs = [pyproj.CRS.from_user_input(info.crs) for info, _ in targets]  # once, not per batch
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
        for (info, first), to in zip(targets, crs):
            projected = np.asarray(series.to_crs(to).values, dtype=object)
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
        # the batch's ~100,000 geometries, WKB and arrays: freed heap back to the system, or
        # the driver's RSS grew batch after batch (~20 MB a batch sampled at 1M polygons)
        del geometry, columns, keep, series, found, projected, wkb, polygon, single, task
        release_memory()
    checks.finish()
    return Indexed(
        tasks=[(tid, tuple(refs)) for tid, refs in sorted(tasks.items())],
        rows=checks.rows,
        kept=kept,
        skipped=checks.bad,
        id_column=checks.id_column or zonal_polygons.ID_COLUMN,
        crs=checks.crs,
        batches=batches_done,
    )


def read_task_polygons(refs):
    """A task's polygons from the parts `index` wrote: (fids, WKB (object array of bytes),
    single); decoded a group at a time (zonal_stats.zonal_chunk)."""
    import pyarrow as pa

    table = pa.concat_tables([read_row_group(path, group) for path, group in refs])
    return (
        table.column("fid").to_numpy(),
        table.column("wkb").to_numpy(zero_copy_only=False),
        table.column("single").to_numpy(zero_copy_only=False),
    )
