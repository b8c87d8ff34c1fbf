"""Embeddings per polygon (`efm zonal`'s table) as a DataFrame, on Dask, chunk by chunk."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from efm.embeddings import dataset, grid
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.products import zonal as zonal_chunks
from transforms.storage import readers


def _chunk(arrays, years, window, transform, fids, geometry, single, stats, bands, all_touched):
    import shapely

    by_year = dict(zip(years, arrays))
    return zonal_chunks.zonal_chunk(
        by_year.__getitem__,
        years,
        window,
        transform,
        fids,
        shapely.from_wkb(geometry),
        single,
        stats,
        bands,
        all_touched,
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
    GeoDataFrame in any CRS (reprojected to the store's). The same per-chunk code as `efm zonal`
    (transforms/products/zonal.py), one Dask task per chunk.

    >>> fields = efm.zonal(ds, "fields.gpkg", stats=["mean", "std"], id_column="field_id")  # doctest: +SKIP
    """
    import dask
    import shapely

    ds = dataset(ds)
    info = grid(ds)
    years = readers.select_years(info, gridlib.years_value(years, "years"), flag="years")
    stats = zonal_chunks.parse_stats(stats, "stats")
    if isinstance(polygons, (str, os.PathLike)):
        name = os.fspath(polygons)
        frame = zonal_chunks.read_polygons(name, flag="polygons")
    elif isinstance(polygons, pd.DataFrame):
        name, frame = "the polygons", polygons
    else:
        raise InputError(
            "polygons", f"expected a polygon file or a GeoDataFrame, got {type(polygons).__name__}"
        )
    reserved = {"year", zonal_chunks.COUNT_COLUMN} | {
        c for cols in zonal_chunks.stat_columns(stats, info.bands).values() for c in cols
    }
    polys = zonal_chunks.check_polygons(
        frame,
        info.crs,
        name,
        id_column=id_column,
        skip_invalid=skip_invalid,
        reserved=reserved,
        flag="polygons",
        id_flag="id_column",
        skip_flag="skip_invalid=True",
    )
    chunk, polygon, single = zonal_chunks.chunk_index(info, polys.geometry, all_touched)
    emb = ds["embedding"].data
    tasks = []
    ids, starts = np.unique(chunk, return_index=True)
    for cid, members in zip(ids.tolist(), np.split(polygon, starts[1:])):
        row0, col0, h, w = window = zonal_chunks.chunk_window(info, cid)
        arrays = [emb[info.time_index(y), row0 : row0 + h, col0 : col0 + w, :] for y in years]
        tasks.append(
            dask.delayed(_chunk)(
                arrays,
                tuple(years),
                window,
                info.transform,
                members,
                shapely.to_wkb(polys.geometry[members]),
                single[members],
                stats,
                info.bands,
                all_touched,
            )
        )
    results = dask.compute(*tasks)
    frames, crossing = [], {}
    for frame_, partials in results:
        if frame_ is not None:
            frames.append(frame_)
        for fid, partial in partials:
            crossing.setdefault(fid, []).append(partial)
    frames += [
        zonal_chunks.combine_partials(fid, parts, years, stats, info.bands)
        for fid, parts in crossing.items()
    ]
    metadata = zonal_chunks.table_metadata(info, info.path, years, stats, polys, name, all_touched)
    table = zonal_chunks.table_frame(frames, polys.columns, metadata)
    table.attrs["efm"] = metadata
    return table
