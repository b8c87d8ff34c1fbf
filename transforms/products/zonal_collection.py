"""`efm zonal` on a collection (one store per UTM zone, transforms/storage/collection.py).

The rule (transforms/core/zones.py): in each member, a pixel counts only if its centre is in the
member's cell, so the strip of pixels both stores hold at a seam is counted once. Each polygon is
projected to every member's CRS and indexed by that member's chunks; a polygon that reaches
chunks of more than one member is a crossing polygon: its partial sums and counts from every
chunk of every member are combined by polygon key (transforms/products/zonal.py), exactly as a
polygon crossing chunks of one store. The result is one row per polygon and year, whichever
members its pixels are in.

Tasks are (task id, polygon parts): member i's chunk c is task id offset_i + c, where offset_i
is the number of chunks of the members before it (so the parts folder's names stay unique); the
driver's index (zonal_index.index) projects each batch of polygons to every member's CRS.
"""

from __future__ import annotations

import bisect

import numpy as np

from transforms.core.grid import Window
from transforms.products import zonal, zonal_index
from transforms.storage.readers import StoreInfo, StoreReader


def chunk_count(info: StoreInfo) -> int:
    return zonal_index.chunk_count(info)


def offsets(infos: list[StoreInfo]) -> list[int]:
    return [int(x) for x in np.cumsum([0] + [chunk_count(i) for i in infos[:-1]])]


def targets(members) -> list[tuple[StoreInfo, int]]:
    """members [(cell, StoreInfo)] -> zonal_index.index's targets: (store, first task id)."""
    infos = [info for _, info in members]
    return list(zip(infos, offsets(infos)))


def locate(task_id: int, cells, infos, starts, readers):
    """A task id -> (read(year, rows, cols) band-first, its member's info, chunk id in the member,
    the pixels that count: centre in the member's cell, or None when all do)."""
    from transforms.learning.collection_points import owned

    i = bisect.bisect_right(starts, task_id) - 1
    info, local = infos[i], task_id - starts[i]
    row0, col0, h, w = zonal.chunk_window(info, local)
    keep = owned(info, Window(row0, col0, h, w), cells[i])
    reader = readers[i]

    def read(year, rows, cols):
        return reader.read_band_first(info.time_index(year), rows, cols)

    return read, info, local, keep


class MemberChunkFn(zonal._ZonalChunkFn):
    """zonal's per-chunk step, on the member a task id falls in, counting only the pixels whose
    centre is in that member's cell."""

    def __init__(self, members, years, stats, all_touched: bool, parts_dir: str, batch: int):
        super().__init__(members[0][1], years, stats, all_touched, parts_dir, batch)
        self.cells = [cell for cell, _ in members]
        self.infos = [info for _, info in members]
        self.starts = offsets(self.infos)
        self.readers = [StoreReader(info.path) for info in self.infos]

    def locate(self, task_id: int):
        read, info, local, keep = locate(task_id, self.cells, self.infos, self.starts, self.readers)
        i = bisect.bisect_right(self.starts, task_id) - 1
        return self.reading(self.readers[i], info), info, local, keep


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
