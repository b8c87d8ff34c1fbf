"""`efm zonal` on a collection (one store per UTM zone, transforms/storage/collection.py).

The rule (transforms/core/zones.py): in each member, a pixel counts only if its centre is in the
member's cell, so the strip of pixels both stores hold at a seam is counted once. Each polygon is
projected to every member's CRS and indexed by that member's chunks; a polygon that reaches
chunks of more than one member is a crossing polygon: its partial sums and counts from every
chunk of every member are combined by polygon key (transforms/products/zonal.py), exactly as a
polygon crossing chunks of one store. The result is one row per polygon and year, whichever
members its pixels are in.

Tasks are (task id, polygons part): member i's chunk c is task id offset_i + c, where offset_i
is the number of chunks of the members before it (so the parts folder's names stay unique).
"""

from __future__ import annotations

import bisect
import io

import numpy as np
import pandas as pd

from transforms.core import atomic
from transforms.core.grid import Window
from transforms.products import zonal
from transforms.storage.readers import StoreInfo, StoreReader


def chunk_count(info: StoreInfo) -> int:
    return -(-info.height // info.chunk_rows) * -(-info.width // info.chunk_cols)


def offsets(infos: list[StoreInfo]) -> list[int]:
    return [int(x) for x in np.cumsum([0] + [chunk_count(i) for i in infos[:-1]])]


def write_member_parts(members, polygons: zonal.Polygons, parts_dir: str, all_touched: bool):
    """members: [(cell, StoreInfo)]; polygons in their own CRS (polygons.crs) -> tasks
    [(task id, part path)], one Parquet of (fid, wkb, single) per member chunk touched."""
    import geopandas
    import shapely

    series = geopandas.GeoSeries(polygons.geometry, crs=polygons.crs)
    index = []
    reached = np.zeros(len(polygons.geometry), np.int64)  # members whose chunks each reaches
    for _, info in members:
        geometry = np.asarray(series.to_crs(info.crs).values, dtype=object)
        chunk, polygon, single = zonal.chunk_index(info, geometry, all_touched)
        reached[np.unique(polygon)] += 1
        index.append((geometry, chunk, polygon, single))
    tasks = []
    starts = offsets([info for _, info in members])
    for start, (geometry, chunk, polygon, single) in zip(starts, index):
        single = single & (reached == 1)  # finished in its chunk only if no other member has it
        wkb = shapely.to_wkb(geometry)
        ids, first = np.unique(chunk, return_index=True)
        for cid, part in zip(ids.tolist(), np.split(polygon, first[1:])):
            buffer = io.BytesIO()
            pd.DataFrame({"fid": part, "wkb": wkb[part], "single": single[part]}).to_parquet(
                buffer, index=False
            )
            path = zonal.part_name(parts_dir, zonal.POLYGONS_PART, start + cid)
            atomic.write_bytes(path, buffer.getvalue())
            tasks.append((start + cid, path))
    return tasks


class MemberChunkFn(zonal._ZonalChunkFn):
    """zonal's per-chunk step, on the member a task id falls in, counting only the pixels whose
    centre is in that member's cell."""

    def __init__(self, members, years, stats, all_touched: bool, parts_dir: str):
        super().__init__(members[0][1], years, stats, all_touched, parts_dir)
        self.cells = [cell for cell, _ in members]
        self.infos = [info for _, info in members]
        self.starts = offsets(self.infos)
        self.readers = [StoreReader(info.path) for info in self.infos]

    def locate(self, task_id: int):
        from transforms.storage.collection_points import owned

        i = bisect.bisect_right(self.starts, task_id) - 1
        info, local = self.infos[i], task_id - self.starts[i]
        row0, col0, h, w = zonal.chunk_window(info, local)
        keep = owned(info, Window(row0, col0, h, w), self.cells[i])
        return self.readers[i], info, local, keep


def table_metadata(members, collection_path: str, years, stats, polygons, name, all_touched):
    """zonal.table_metadata, with the members' grids."""
    infos = [info for _, info in members]
    meta = zonal.table_metadata(
        infos[0], collection_path, years, stats, polygons, name, all_touched
    )
    meta["grid"] = {"collection": [i.grid_summary() for i in infos]}
    meta["members"] = [
        {"cell": cell.name, "crs": info.crs, "store": info.path} for cell, info in members
    ]
    meta["pixel_rule"] += ", each pixel in the member whose cell holds its centre"
    return meta
