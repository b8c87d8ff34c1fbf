"""`efm zonal`'s partials of the polygons crossing chunks, on disk: a chunk writes its crossing
polygons' partial sums (zonal_stats.Crossing) to its own part, one row group per polygon batch,
and passes on only where they are: (batch, (part, row group)). The pipeline then holds a few
bytes per chunk and batch until the combine, never the partials themselves (held in the
runner's memory until the GroupByKey, they grew the process by ~26 MB at 1M polygons).

    part-4-<task>.parquet   one row per crossing polygon: fid, count (years), sum (years x bands),
                            sumsq (years x bands, for std), and for a median the polygon's pixel
                            values (year by year, bands per pixel) with their rows per year.
"""

from __future__ import annotations

import numpy as np

from transforms.products.zonal_index import part_name, read_row_group, write_table
from transforms.products.zonal_stats import Crossing

PARTIAL_PART = 4  # part-4-<task>: a chunk's crossing polygons' partials


def _fixed(values: np.ndarray, size: int):
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)


def crossing_table(crossing: Crossing):
    """A Crossing (polygons k, years y) -> an Arrow table, one row per polygon."""
    import pyarrow as pa

    years, k = crossing.count.shape
    bands = crossing.sum.shape[2]
    columns = {
        "fid": pa.array(crossing.fids.astype(np.int64)),
        "count": _fixed(np.ascontiguousarray(crossing.count.T), years),
        "sum": _fixed(np.ascontiguousarray(crossing.sum.transpose(1, 0, 2)), years * bands),
    }
    if crossing.sumsq is not None:
        columns["sumsq"] = _fixed(
            np.ascontiguousarray(crossing.sumsq.transpose(1, 0, 2)), years * bands
        )
    if crossing.values is not None:  # each polygon's pixels, year after year
        owner = np.concatenate([o for o, _ in crossing.values])
        year = np.concatenate([np.full(len(o), y) for y, (o, _) in enumerate(crossing.values)])
        rows = np.concatenate([r for _, r in crossing.values]).astype(np.float32, copy=False)
        order = np.lexsort((year, owner))  # stable: a polygon's pixels keep their order
        lengths = np.zeros((k, years), np.int64)
        np.add.at(lengths, (owner, year), 1)
        offsets = np.r_[0, np.cumsum(lengths.sum(axis=1))] * bands
        columns["value_rows"] = _fixed(lengths, years)
        columns["values"] = pa.LargeListArray.from_arrays(
            pa.array(offsets, pa.int64()), pa.array(np.ascontiguousarray(rows[order]).reshape(-1))
        )
    return pa.table(columns)


def crossing_of(table, bands: int) -> Crossing:
    """crossing_table's table -> the Crossing it holds."""

    def flat(name):
        column = table.column(name).combine_chunks()
        return column.flatten().to_numpy()

    k = table.num_rows
    fids = table.column("fid").to_numpy()
    count = flat("count").reshape(k, -1).T.copy()
    years = count.shape[0]
    total = flat("sum").reshape(k, years, bands).transpose(1, 0, 2).copy()
    sumsq = None
    if "sumsq" in table.column_names:
        sumsq = flat("sumsq").reshape(k, years, bands).transpose(1, 0, 2).copy()
    values = None
    if "values" in table.column_names:
        lengths = flat("value_rows").reshape(k, years)
        rows = flat("values").reshape(-1, bands)
        owner = np.repeat(np.repeat(np.arange(k), years), lengths.reshape(-1))
        year = np.repeat(np.tile(np.arange(years), k), lengths.reshape(-1))
        values = [(owner[year == y], rows[year == y]) for y in range(years)]
    return Crossing(fids, count, total, sumsq, values)


def write_partials(parts_dir: str, task: int, crossing: Crossing | None, batch: int) -> list:
    """A chunk's Crossing -> part-4-<task>, one row group per polygon batch (fid // batch);
    -> [(batch, (part, row group))], what the pipeline passes on to the combine."""
    import pyarrow as pa

    if crossing is None:
        return []
    split = crossing.split(batch)
    tables = [crossing_table(c) for _, c in split]
    stops = np.cumsum([t.num_rows for t in tables]).tolist()
    starts = [0, *stops[:-1]]
    path = part_name(parts_dir, PARTIAL_PART, task)
    write_table(path, pa.concat_tables(tables), list(zip(starts, stops)))
    return [(b, (path, group)) for group, (b, _) in enumerate(split)]


def read_partials(refs, bands: int) -> list[Crossing]:
    """[(part, row group)] -> the Crossing each holds."""
    return [crossing_of(read_row_group(path, group), bands) for path, group in refs]
