"""`efm zonal`'s polygons, on the driver, a batch at a time: read and check.

No step holds every polygon: the file is read in batches of `BATCH` rows (pyogrio's Arrow stream
for OGR formats, Parquet row batches for GeoParquet); each batch is checked (CRS, polygon types,
empty / invalid geometries, the id column), then indexed by store chunk into the parts folder
(zonal_index.py). A polygon's `fid` is its row number in the file.
Counts of bad rows and the id's uniqueness are checked over the whole file; a refusal removes
the parts written so far (transforms/products/zonal.py: `index`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from transforms.core.errors import InputError, first_line

ID_COLUMN = "polygon_id"  # the id column when no --id-column is named: the row number in the file
# polygons read, checked and indexed at a time, and the unit of the crossing polygons' combine and
# of the table's row groups: small and FIXED, so that a batch costs the same memory at 10,000
# polygons as at 1,000,000 (batches of 100,000 made the driver's peak grow with the file)
BATCH = 10_000


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

    # column chunks read through a 1 MB buffer, not whole: a file written as one row group (what
    # geopandas writes up to ~1M rows) otherwise held all its WKB at once (~90 MB at 1M polygons)
    pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    meta = pf.schema_arrow.metadata or {}
    if b"geo" not in meta:
        raise ValueError("not a GeoParquet file (no 'geo' metadata)")
    import json

    geo = json.loads(meta[b"geo"])
    name = geo["primary_column"]
    index = json.loads(meta.get(b"pandas", b"{}")).get("index_columns", [])
    drop = [name] + [c for c in index if isinstance(c, str)]
    crs = None
    for batch in pf.iter_batches(batch_size=size, use_threads=False):
        table = pa.Table.from_batches([batch])
        frame = _arrow_to_geopandas(table.select([name]), geo)
        if crs is None:  # the CRS parsed once: from its PROJJSON, ~10 ms a batch
            crs = frame.crs
            geo = {
                **geo,
                "columns": {**geo["columns"], name: {**geo["columns"][name], "crs": None}},
            }
        yield (
            geopandas.GeoSeries(frame.geometry.values, crs=crs),
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


def _unique(ids) -> bool:
    """Every id present and distinct: numbers by a sort (8 bytes an id: a pandas hash table of
    1M ids cost ~45 MB, and left the heap fragmented), other types by Arrow's hash."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if ids.null_count:
        return False
    if pa.types.is_integer(ids.type) or pa.types.is_floating(ids.type):
        values = np.sort(ids.to_numpy())
        return not (values[1:] == values[:-1]).any() and not np.isnan(values[-1:]).any()
    return len(pc.unique(ids)) == len(ids)


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
        if self.ids and not _unique(pa.chunked_array(self.ids)):
            ids = pa.chunked_array(self.ids).to_pandas()  # the message: which rows, the first
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
