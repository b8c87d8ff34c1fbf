"""Embeddings per polygon (`efm zonal`, `efm.zonal`): a statistic of each band over each
polygon's pixels, per year.

The rule: a pixel belongs to a polygon when its CENTRE falls inside the polygon (GDAL's
rasterisation rule, the same as `rasterio.features.geometry_mask`); with `all_touched`, every
pixel the polygon touches (rasterio's `all_touched=True`). Pixels with no data (NaN in any band)
are left out; a polygon with no pixel left has `pixel_count` 0 and NaN statistics. `std` is the
population standard deviation (ddof=0); `median` is exact (the middle value, or the mean of the
two middle values).

    driver (zonal_polygons.py, zonal_index.py): the polygon file a batch at a time -> checked,
            projected to the store's CRS, joined to its chunks by bounds -> parts: the polygons
            of each chunk (WKB, row groups by chunk) and the table columns, per batch
    ZonalChunks: per chunk, read each year once as stored (band-first); the chunk's polygons a
            group of at most GROUP at a time: rasterised into the group's own label images
            (zonal_raster.py), then counts and sums per polygon, one np.bincount per band
            (zonal_stats.py). A polygon whose pixels all lie in this chunk is finished here
            (median too) -> a part, streamed a group at a time. The polygons crossing chunks
            leave their partials (sums, counts, and for a median their pixel values) in a part
            of the chunk (zonal_crossing.py), one row group per polygon batch; only where they
            are travels on -> GroupByKey by batch -> read back and combined exactly (sorted by
            polygon, np.add.reduceat) -> one part per polygon batch.
    AssembleZonal (zonal_table.py): per polygon batch, its columns + its results -> a row group
            of the table (one row per polygon and year, polygons without pixels included).

Memory is bounded by a chunk and a group or batch of polygons (and, for a median, by one
polygon's pixels), never by the number of polygons: no step holds all polygons or all rows, nor
a temporary per polygon of a chunk.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.core.metrics import METRICS_NAMESPACE
from transforms.products.zonal_crossing import read_partials, write_partials
from transforms.products.zonal_index import (  # noqa: F401  (the names products use)
    CHUNK_PART,
    CROSSING_PART,
    Indexed,
    chunk_index,
    chunk_window,
    index,
    part_name,
    read_task_polygons,
)
from transforms.products.zonal_polygons import BATCH, ID_COLUMN, Checks  # noqa: F401
from transforms.products.zonal_stats import (  # noqa: F401
    COUNT_COLUMN,
    GROUP,
    STATS,
    Crossing,
    Partial,
    combine_crossing,
    parse_stats,
    release_memory,
    stat_columns,
    zonal_chunk,
)
from transforms.products.zonal_table import (  # noqa: F401
    ChunkPart,
    apply_model,
    assemble,
    read_table,
    table_metadata,
    write_frame,
)
from transforms.storage.readers import StoreInfo, StoreReader


def checks(name: str, id_column, skip_invalid: bool, reserved, api: bool = False) -> Checks:
    """The checks of a polygon file, with the flags (CLI) or parameters (API) they name."""
    flags = (
        ("polygons", "id_column", "skip_invalid=True")
        if api
        else ("--polygons", "--id-column", "--skip-invalid")
    )
    return Checks(name, id_column, skip_invalid, frozenset(map(str, reserved)), flags)


def run_task(task, locate, years, stats, all_touched: bool, parts_dir: str, batch: int, group=None):
    """One task (task id, polygon parts): its chunk's results -> part-1-<task id> (the polygons
    finished here, streamed `group` polygons and a year at a time), and the partials of the
    polygons crossing chunks -> part-4-<task id> (zonal_crossing.py), passed on as one element
    per polygon batch: [(batch, (part, row group))].
    `locate(task id)` -> (read(year, rows, cols) band-first, store info, chunk id, pixels that
    count or None)."""
    tid, refs = task
    fids, wkb, single = read_task_polygons(refs)
    read, info, local, keep = locate(tid)
    row0, col0, h, w = chunk_window(info, local)

    def read_year(year):
        return read(year, slice(row0, row0 + h), slice(col0, col0 + w))

    with ChunkPart(part_name(parts_dir, CHUNK_PART, tid), batch) as part:
        crossing = zonal_chunk(
            read_year,
            years,
            (row0, col0, h, w),
            info.transform,
            fids,
            wkb,
            single,
            stats,
            info.bands,
            all_touched,
            keep,
            emit=part.write,
            group=group,
            frame=pa.table,  # straight to Arrow: a DataFrame's conversion cost ~10 % of the run
        )
    del wkb
    refs = write_partials(parts_dir, tid, crossing, batch)
    del crossing
    release_memory()
    return part.rows > 0, int(np.count_nonzero(single)), refs


class _ZonalChunkFn(beam.DoFn):
    def __init__(self, info: StoreInfo, years, stats, all_touched: bool, parts_dir: str, batch):
        self.reader = StoreReader(info.path)
        self.info, self.years, self.stats = info, tuple(years), tuple(stats)
        self.all_touched, self.parts_dir, self.batch = all_touched, parts_dir, batch
        self.chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunk_reads")
        self.finished = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "polygons_in_one_chunk")

    def reading(self, reader: StoreReader, info: StoreInfo):
        def read(year, rows, cols):  # the stored codes, band-first; counted
            self.chunks.inc()
            return reader.read_band_first(info.time_index(year), rows, cols)

        return read

    def locate(self, task_id: int):
        """A task's (read, store info, chunk id in it, pixels that count or None); a
        collection's (transforms/products/zonal_collection.py) picks its member here."""
        return self.reading(self.reader, self.info), self.info, task_id, None

    def process(self, task):
        written, single, crossing = run_task(
            task, self.locate, self.years, self.stats, self.all_touched, self.parts_dir, self.batch
        )
        if written:
            self.finished.inc(single)
            yield beam.pvalue.TaggedOutput("written", 1)
        yield from crossing


def write_crossing(element, parts_dir: str, years, stats, bands):
    """(polygon batch, where the partials of its polygons are, from every chunk: [(part, row
    group)]) -> the polygons combined -> part-2-<batch>."""
    b, refs = element
    parts = read_partials(sorted(refs), len(bands))
    write_frame(
        part_name(parts_dir, CROSSING_PART, b), combine_crossing(parts, years, stats, bands)
    )
    return 1


@dataclasses.dataclass
class ZonalChunks(beam.PTransform):
    """(task id, polygon parts) tasks -> result parts under `parts_dir`; emits one element per
    part written (AssembleZonal waits for all of them)."""

    info: StoreInfo
    years: tuple[int, ...]
    stats: tuple[str, ...]
    all_touched: bool
    parts_dir: str
    batch: int  # polygons per batch: the driver's (zonal_polygons.BATCH when it indexed them)
    chunk_fn: beam.DoFn | None = None  # a collection's (zonal_collection.py)

    def __post_init__(self):
        super().__init__()

    def expand(self, tasks):
        chunk_fn = self.chunk_fn or _ZonalChunkFn(
            self.info, self.years, self.stats, self.all_touched, self.parts_dir, self.batch
        )
        out = tasks | "ZonalChunk" >> beam.ParDo(chunk_fn).with_outputs("written", main="crossing")
        crossing = (
            out.crossing  # (polygon batch, (part, row group)): one per chunk and batch
            | "GroupByBatch" >> beam.GroupByKey()
            | "WriteBatch"
            >> beam.Map(write_crossing, self.parts_dir, self.years, self.stats, self.info.bands)
        )
        return (out.written, crossing) | "Written" >> beam.Flatten()


@dataclasses.dataclass
class AssembleZonal(beam.PTransform):
    """Runs once, after every part is written: parts + polygon columns -> the table."""

    parts_dir: str
    output: str
    metadata: dict
    model: tuple | None = None  # (path, sha256): add the model's class / prediction per row

    def __post_init__(self):
        super().__init__()

    def expand(self, written):
        parts_dir, output, metadata, model = self.parts_dir, self.output, self.metadata, self.model
        return (
            written
            | "CountParts" >> beam.combiners.Count.Globally()
            | "Assemble" >> beam.Map(lambda _: assemble(parts_dir, output, metadata, model))
        )
