"""`efm.sample` on a collection: each point read from the member whose cell holds it
(transforms/learning/collection_points.py, as `efm sample` does), one table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transforms.core.errors import InputError
from transforms.learning import collection_points, sample_table, sampling
from transforms.storage import readers


def _member_window(path, info, batch, r0, r1, c0, c1, year, name, crs) -> pd.DataFrame:
    reader = readers.StoreReader(path)
    values = reader.read(info.time_index(year), readers.Window(r0, c0, r1 - r0, c1 - c0))
    frame = sampling.sample_rows(values, batch, r0, c0, year, info.bands)[0]
    at = frame.columns.get_loc("pixel_x")
    frame.insert(at, "crs", pd.Series([crs] * len(frame), dtype=object))
    frame.insert(at, "member", pd.Series([name] * len(frame), dtype=object))
    return frame


def sample(coll, pts, years, points_name: str, label_column) -> pd.DataFrame:
    """coll: efm.EmbeddingCollection; pts: labelled_points.Points -> the table `efm sample` writes."""
    import dask
    import pyarrow as pa

    members = [
        (m.path, m.zone, readers.store_info(coll.index.path_of(m), flag="ds"))
        for m in coll.index.members
    ]
    info = members[0][2]
    years = readers.select_years(info, years, flag="years")
    for _, _, member in members[1:]:
        readers.select_years(member, years, flag="years")
    parts, outside = collection_points.split(members, pts)
    if outside.all():
        raise InputError(
            "points",
            f"none of the {len(pts.x)} points ({pts.crs}) falls inside any store of the "
            f"collection {coll.path}; check the CRS and the area",
        )
    tasks = []
    for part in parts:
        rows = np.full(len(pts.x), -1, np.int64)
        cols = rows.copy()
        rows[part.ids], cols[part.ids] = part.rows, part.cols
        for batch in sampling.point_batches(pts, rows, cols):
            for _, chunk in sampling.split_by_chunk(
                batch, part.info.chunk_rows, part.info.chunk_cols
            ):
                r0, r1 = int(chunk["row"].min()), int(chunk["row"].max()) + 1
                c0, c1 = int(chunk["col"].min()), int(chunk["col"].max()) + 1
                for year in years:
                    tasks.append(
                        dask.delayed(_member_window)(
                            part.info.path,
                            part.info,
                            chunk,
                            r0,
                            r1,
                            c0,
                            c1,
                            year,
                            part.name,
                            part.info.crs,
                        )
                    )
    frames = dask.compute(*tasks)
    metadata = {
        "embeddings": coll.path,
        "source": info.source,
        "grid": {"collection": [m[2].grid_summary() for m in members]},
        "years": years,
        "store_years": list(info.years),
        "bands": list(info.bands),
        "store_dtype": info.dtype,
        "points": points_name,
        "points_crs": pts.crs,
        "label_column": label_column,
        "keep_columns": list(pts.columns),
        "members": [{"member": m.path, "cell": m.cell, "crs": m.crs} for m in coll.index.members],
    }
    tables = [pa.Table.from_pandas(f, preserve_index=False) for f in frames if len(f)]
    table = sample_table.combine(tables, metadata, info.bands).to_pandas()
    table.attrs["efm"] = metadata
    return table
