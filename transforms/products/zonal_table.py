"""`efm zonal`'s table: the workers' result parts + the polygons' columns -> one Parquet, written a
batch of polygons at a time (one row group per batch), so no step holds every row.

Result parts (transforms/products/zonal_index.py names them):
    part-1-<task>.parquet   the polygons finished in one chunk, sorted by fid, one row group per
                            polygon batch (schema metadata b"batches" lists them)
    part-2-<batch>.parquet  the polygons crossing chunks (or stores) of one batch, combined
For batch b the table takes its columns part (part-3-b), the row groups of b and part-2-b; a
polygon without any pixel gets pixel_count 0 and NaN statistics; rows follow the file's order,
then the years'.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import fsspec
import numpy as np
import pandas as pd

from transforms.core import atomic, parquet
from transforms.products.zonal_index import (
    ATTRIBUTES_PART,
    CHUNK_PART,
    CROSSING_PART,
    PART_OPTIONS,
    read_row_group,
)
from transforms.products.zonal_stats import COUNT_COLUMN, release_memory, stat_columns
from transforms.storage.kinds import TABLE_METADATA_KEY
from transforms.storage.readers import StoreInfo

BATCHES_KEY = b"batches"


def table_metadata(
    info: StoreInfo, embeddings: str, years, stats, polygons, name: str, all_touched: bool
) -> dict:
    """The table's provenance (Parquet schema key b"efm"); `bands` are the mean columns, which
    `efm train` reads as features, and `group_column` keeps a polygon's years in one CV fold.
    `polygons`: zonal_index.Indexed (crs, id_column, skipped)."""
    return {
        "product": "zonal",
        "embeddings": embeddings,
        "source": info.source,
        "grid": info.grid_summary(),
        "years": list(years),
        "store_years": list(info.years),
        "store_bands": list(info.bands),
        "bands": list(info.bands) if "mean" in stats else [],
        "store_dtype": info.dtype,
        "polygons": name,
        "polygons_crs": polygons.crs,
        "id_column": polygons.id_column,
        "group_column": polygons.id_column,
        "stats": list(stats),
        "pixel_rule": "all_touched" if all_touched else "centre",
        "skipped_invalid": polygons.skipped,
    }


def write_frame(path: str, frame: pd.DataFrame) -> None:
    """A result frame (fid, year, ...) -> Parquet, whole or absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, table.schema, **PART_OPTIONS) as writer:
        writer.write_table(table, row_group_size=len(frame) + 1)
    atomic.write_bytes(path, buffer.getvalue())


class ChunkPart:
    """A chunk's result frames (fid, year, ...), a piece at a time -> one Parquet part at `path`,
    streamed to its file (whole on success, absent otherwise; no file when nothing is written):
    one row group per piece and polygon batch (fid // batch), the batch of each row group listed
    in the metadata (b"batches"), as `assemble` reads them."""

    def __init__(self, path: str, batch: int):
        self.path, self.batch = path, batch
        self.rows, self.listed = 0, []
        self.writer = None
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        return self

    def write(self, frame) -> None:
        """`frame`: a DataFrame or an Arrow table (fid, year, ...)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(frame) == 0:
            return
        if isinstance(frame, pd.DataFrame):
            table = pa.Table.from_pandas(frame, preserve_index=False)
        else:
            table = frame
        if self.writer is None:
            f = self.stack.enter_context(atomic.open_write(self.path))
            self.writer = pq.ParquetWriter(f, table.schema, **PART_OPTIONS)
        which = table.column("fid").to_numpy() // self.batch
        order = np.argsort(which, kind="stable")
        ids, starts = np.unique(which[order], return_index=True)
        stops = np.r_[starts[1:], len(order)]
        for b, start, stop in zip(ids.tolist(), starts.tolist(), stops.tolist()):
            rows = table.take(pa.array(order[start:stop])).cast(self.writer.schema)
            self.writer.write_table(rows, row_group_size=stop - start + 1)
            self.listed.append(b)
        self.rows += len(frame)

    def __exit__(self, kind, exc, tb):
        try:
            if self.writer is not None:
                if kind is None:
                    self.writer.add_key_value_metadata({BATCHES_KEY: json.dumps(self.listed)})
                self.writer.close()
        except BaseException:
            if not self.stack.__exit__(*sys.exc_info()):
                raise
        else:  # the file: renamed into place, or removed when the chunk failed
            self.stack.__exit__(kind, exc, tb)
        return False


def batch_table(stats_frames, columns, metadata: dict):
    """One batch's stats (Arrow tables: fid, year, ...) + its columns (Arrow: fid, id, other
    columns) -> the table's rows for these polygons (Arrow), every year of each, in the file's
    order."""
    import pyarrow as pa

    years = [int(y) for y in metadata["years"]]
    names = [
        c
        for cols in stat_columns(metadata["stats"], metadata["store_bands"]).values()
        for c in cols
    ]
    fids = columns.column("fid").to_numpy()
    n, ny = len(fids), len(years)
    table = {
        "year": np.tile(np.asarray(years, np.int16), n),
        COUNT_COLUMN: np.zeros(n * ny, np.int64),
        **{c: np.full(n * ny, np.nan, np.float32) for c in names},
    }
    where = np.full(max(years) - min(years) + 1, -1, np.int64)
    where[np.asarray(years) - min(years)] = np.arange(ny)
    for found in stats_frames:
        if len(found) == 0:
            continue
        at = (
            np.searchsorted(fids, found.column("fid").to_numpy().astype(np.int64)) * ny
            + where[found.column("year").to_numpy().astype(np.int64) - min(years)]
        )
        for c in (COUNT_COLUMN, *names):
            table[c][at] = found.column(c).to_numpy()
    rows = columns.drop_columns(["fid"]).take(pa.array(np.repeat(np.arange(n), ny)))
    for name, values in table.items():
        rows = rows.append_column(name, pa.array(values))
    return rows


def apply_model(frame: pd.DataFrame, loaded, bands, mean_columns) -> pd.DataFrame:
    """Add the model's class (or `prediction` for a regressor) from each row's mean embedding;
    rows without pixels get none. The mean columns are dropped: the table is the answer."""
    X = frame[list(bands)].to_numpy(np.float32)
    ok = ~np.isnan(X).any(axis=1)
    column = "prediction" if loaded.is_regressor else "class"
    predicted = loaded.model.predict(X[ok]) if ok.any() else np.empty(0)
    if loaded.is_regressor:
        values = np.full(len(frame), np.nan)
    else:
        values = np.full(len(frame), None, dtype=object)
    values[ok] = predicted
    out = frame.drop(columns=list(mean_columns))
    out[column] = predicted if ok.all() else values
    return out


def _with_model(rows, loaded, metadata):
    import pyarrow as pa

    frame = apply_model(
        rows.to_pandas(), loaded, loaded.bands or metadata["store_bands"], metadata["store_bands"]
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if not loaded.is_regressor and pa.types.is_null(table.schema.field("class").type):
        kind = pa.array(np.asarray(loaded.model.classes_)).type  # a batch without any pixel
        table = table.set_column(
            table.schema.get_field_index("class"), "class", table.column("class").cast(kind)
        )
    return table.replace_schema_metadata(None)


def assemble(parts_dir: str, output: str, metadata: dict, model=None) -> int:
    """The parts -> the table at `output` (the old one stays until the new one is whole), then
    the parts folder is removed. -> rows written."""
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(parts_dir)
    local = "://" not in parts_dir or parts_dir.startswith("file://")

    def full(name):  # a listed part's path, as read_row_group takes it
        return (
            name
            if local
            else f"{fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol}://{name}"
        )

    groups: dict[int, dict] = {}  # batch -> {part: [row group]}
    for name in sorted(fs.glob(f"{root}/part-{CHUNK_PART}-*.parquet")):
        path = full(name)
        with fs.open(name, "rb") as f:
            listed = json.loads(pq.read_metadata(f).metadata[BATCHES_KEY])
        for group, b in enumerate(listed):
            groups.setdefault(int(b), {}).setdefault(path, []).append(group)
    attributes = sorted(
        fs.glob(f"{root}/part-{ATTRIBUTES_PART}-*.parquet"),
        key=lambda n: int(n.rsplit("-", 1)[1].split(".")[0]),
    )
    loaded = None
    if model is not None:
        from transforms.learning import models

        loaded = models.load_model(model[0], sha256=model[1])  # the file the driver checked
        metadata = {**metadata, "bands": [], "model": model[0], "model_sha256": model[1]}
    rows = 0
    writer = None
    with atomic.open_write(output) as f:
        for name in attributes:
            b = int(name.rsplit("-", 1)[1].split(".")[0])
            columns = read_row_group(full(name))
            # Arrow, not pandas; each part opened once a batch (its footer: ~2.6 ms to parse)
            frames = [read_row_group(p, g) for p, g in groups.get(b, {}).items()]
            crossing = f"{root}/part-{CROSSING_PART}-{b}.parquet"
            if fs.exists(crossing):
                frames.append(read_row_group(full(crossing)))
            table = batch_table(frames, columns, metadata)
            if loaded is not None:
                table = _with_model(table, loaded, metadata)
            if writer is None:
                schema = table.schema.with_metadata(
                    {TABLE_METADATA_KEY: json.dumps(metadata).encode()}
                )
                stat = {
                    c
                    for cols in stat_columns(metadata["stats"], metadata["store_bands"]).values()
                    for c in cols
                }
                # a dictionary for the polygons' columns, none for the statistics (all distinct:
                # trying one cost ~10x the write)
                writer = pq.ParquetWriter(
                    f, schema, use_dictionary=[c for c in schema.names if c not in stat]
                )
            writer.write_table(table.cast(writer.schema))
            rows += table.num_rows
            del table, frames, columns
            release_memory()  # Arrow's pool kept each batch's freed pages: +120 MB at 1M polygons
        writer.close()
    fs.rm(root, recursive=True)
    return rows


def read_table(path: str, columns: list[str] | None = None):
    """The table `assemble` wrote (a pyarrow Table with its metadata), read in this thread."""
    with fsspec.open(path, "rb") as f:
        return parquet.read_table(f, columns=columns)


def count_summary(path: str) -> tuple[int, int]:
    """The table at `path` -> (rows, rows without a pixel), reading only the pixel_count column a
    row group at a time (a local file natively, never whole: the table of a million polygons is
    ~0.3 GB; a remote one is copied into memory first, see transforms/core/parquet.py)."""
    import pyarrow.parquet as pq

    local = "://" not in path or path.startswith("file://")
    if not local:
        counts = read_table(path, columns=[COUNT_COLUMN]).column(COUNT_COLUMN).to_numpy()
        return len(counts), int((counts == 0).sum())
    pf = pq.ParquetFile(path.removeprefix("file://"), memory_map=False)
    empty = 0
    for g in range(pf.num_row_groups):
        column = pf.read_row_group(g, columns=[COUNT_COLUMN], use_threads=False)
        empty += int((column.column(COUNT_COLUMN).to_numpy() == 0).sum())
    return pf.metadata.num_rows, empty
