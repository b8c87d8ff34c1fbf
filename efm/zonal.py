"""Embeddings per polygon (`efm zonal`'s table) as a DataFrame, on Dask, chunk by chunk.

The same pieces as the command line: the polygons are read, checked and indexed by chunk a batch at
a time into a temporary parts folder (transforms/products/zonal_index.py), each chunk is one
Dask task (transforms/products/zonal.py `run_task`), polygons crossing chunks are combined by
key, and the table is assembled batch by batch (zonal_table.py). On a collection, each pixel is
read from the member whose cell holds its centre (transforms/products/zonal_collection.py).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd

from efm.embeddings import dataset, grid
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.products import zonal as zonal_chunks
from transforms.products import zonal_collection, zonal_polygons
from transforms.storage import readers


def _task(task, arrays, info, years, stats, all_touched, parts_dir, place):
    if place is None:
        by_year = dict(zip(years, arrays))

        def locate(task_id):
            return (lambda year, rows, cols: np.moveaxis(by_year[year], -1, 0)), info, task_id, None
    else:
        cells, infos, starts = place
        stores = [readers.StoreReader(i.path) for i in infos]

        def locate(task_id):
            return zonal_collection.locate(task_id, cells, infos, starts, stores)

    _, _, crossing = zonal_chunks.run_task(
        task, locate, years, stats, all_touched, parts_dir, zonal_polygons.BATCH
    )
    return crossing


def _polygons(polygons):
    if isinstance(polygons, (str, os.PathLike)):
        return os.fspath(polygons), os.fspath(polygons)
    if isinstance(polygons, pd.DataFrame):
        return "the polygons", polygons
    raise InputError(
        "polygons", f"expected a polygon file or a GeoDataFrame, got {type(polygons).__name__}"
    )


def zonal(
    ds,
    polygons,
    *,
    stats=("mean",),
    years: list[int] | None = None,
    id_column: str | None = None,
    all_touched: bool = False,
    skip_invalid: bool = False,
) -> pd.DataFrame:
    """One row per polygon and year: the table `efm zonal` writes, as a DataFrame.

    Columns: the id (``id_column``, or ``polygon_id`` = the row number), the polygons' other
    columns, ``year``, ``pixel_count`` and, per statistic of ``stats`` (``mean, median, std,
    count``), one column per band: the mean keeps the band names (``A00..A63``, what `efm.train`
    reads), the others are ``A00_median``, ``A00_std``, .... A pixel counts when its centre is in
    the polygon (``all_touched=True``: when the polygon touches it); no-data pixels are left out;
    a polygon without a pixel has ``pixel_count`` 0 and NaN statistics. ``polygons``: a file or a
    GeoDataFrame in any CRS (reprojected to the store's). ``ds``: a store (path or the Dataset
    `efm.open_embeddings` gives) or a collection (its path or the EmbeddingCollection): on a
    collection each pixel counts once, in the member whose cell holds its centre. The same
    per-chunk code as `efm zonal` (transforms/products/zonal.py), one Dask task per chunk.

    >>> fields = efm.zonal(ds, "fields.gpkg", stats=["mean", "std"], id_column="field_id")  # doctest: +SKIP
    """
    import dask

    from efm.collection import as_collection

    coll = as_collection(ds)
    if coll is None:
        ds = dataset(ds)
        info = grid(ds)
        members = None
    else:
        members = [
            (m.zone, readers.store_info(coll.index.path_of(m), flag="ds"))
            for m in coll.index.members
        ]
        info = members[0][1]
    years = readers.select_years(info, gridlib.years_value(years, "years"), flag="years")
    for _, member in (members or [])[1:]:
        readers.select_years(member, years, flag="years")
    stats = zonal_chunks.parse_stats(stats, "stats")
    name, source = _polygons(polygons)
    reserved = {"year", zonal_chunks.COUNT_COLUMN} | {
        c for cols in zonal_chunks.stat_columns(stats, info.bands).values() for c in cols
    }
    checks = zonal_chunks.checks(name, id_column, skip_invalid, reserved, api=True)
    targets = [(info, 0)] if members is None else zonal_collection.targets(members)
    with tempfile.TemporaryDirectory(prefix="efm-zonal-") as temp:
        parts_dir = os.path.join(temp, "parts")
        os.makedirs(parts_dir)
        indexed = zonal_chunks.index(
            source, name, targets, parts_dir, all_touched=all_touched, checks=checks
        )
        if members is None:
            emb, place = ds["embedding"].data, None
        else:
            infos = [i for _, i in members]
            place = ([c for c, _ in members], infos, zonal_collection.offsets(infos))
        tasks = []
        for task in indexed.tasks:
            arrays = None
            if members is None:
                row0, col0, h, w = zonal_chunks.chunk_window(info, task[0])
                arrays = [
                    emb[info.time_index(y), row0 : row0 + h, col0 : col0 + w, :] for y in years
                ]
            tasks.append(
                dask.delayed(_task)(
                    task, arrays, info, tuple(years), stats, all_touched, parts_dir, place
                )
            )
        by_batch = {}  # polygon batch -> [Crossing] (arrays, one per chunk)
        for partials in dask.compute(*tasks):
            for b, partial in partials:
                by_batch.setdefault(b, []).append(partial)
        for b, parts in by_batch.items():
            zonal_chunks.write_crossing((b, parts), parts_dir, years, stats, info.bands)
        if members is None:
            metadata = zonal_chunks.table_metadata(
                info, info.path, years, stats, indexed, name, all_touched
            )
        else:
            metadata = zonal_collection.table_metadata(
                members, coll.path, years, stats, indexed, name, all_touched
            )
        out = os.path.join(temp, "table.parquet")
        zonal_chunks.assemble(parts_dir, out, metadata)
        table = zonal_chunks.read_table(out).to_pandas()
    table.attrs["efm"] = metadata
    return table
