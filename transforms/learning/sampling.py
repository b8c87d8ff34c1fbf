"""Sample the embedding at labelled points.

    point batches | SamplePoints(store path, ...) -> one Parquet part per chunk
                  | sample_table.AssembleTable -> the table

Points are read (labelled_points.py) and reprojected to the store's CRS in the driver, vectorised (a million
points take a second or two). Each point falls in the pixel whose half-open footprint
[left, right) x (bottom, top] holds it: a point on a pixel edge belongs to the pixel to
its right / below, like `rasterio.transform.rowcol`. In the pipeline, batches of points
are split by chunk and grouped, so each (chunk, year) is read exactly once, whatever the
number of points in it. Points outside the grid, and (point, year) pairs on no-data
pixels, are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import io

import apache_beam as beam
import numpy as np
import pandas as pd

from transforms.core import atomic
from transforms.core.errors import InputError, first_line
from transforms.core.metrics import METRICS_NAMESPACE
from transforms.learning.labelled_points import Points
from transforms.storage.readers import StoreInfo, StoreReader, valid_mask
from transforms.storage.store import as_float

MEMBER_PART_STEP = 10**12  # a collection's member i writes parts named part-<i * step + row>-<col>
KEPT_PREFIX = "keep:"  # batch keys of kept columns (the batch's own keys stay apart)


def is_band(name) -> bool:
    return len(str(name)) == 3 and str(name)[0] == "A" and str(name)[1:].isdigit()


def to_pixels(info: StoreInfo, points: Points) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each point in the store's grid; -1 for points outside it (or not projectable)."""
    import pyproj

    try:
        transformer = pyproj.Transformer.from_crs(points.crs, info.crs, always_xy=True)
    except pyproj.exceptions.CRSError as exc:
        raise InputError(
            "--tuning", f"points_crs: unknown CRS {points.crs!r}: {first_line(exc)}"
        ) from None
    with np.errstate(invalid="ignore"):
        sx, sy = transformer.transform(points.x, points.y, errcheck=False)
    return pixel_index(info, np.asarray(sx, dtype=np.float64), np.asarray(sy, dtype=np.float64))


def pixel_index(info: StoreInfo, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store-CRS coordinates -> (rows, cols), floor of the inverse transform; -1 outside."""
    inverse = ~info.affine
    with np.errstate(invalid="ignore"):
        colf = inverse.a * sx + inverse.b * sy + inverse.c
        rowf = inverse.d * sx + inverse.e * sy + inverse.f
        inside = (
            np.isfinite(colf)
            & np.isfinite(rowf)
            & (colf >= 0)
            & (colf < info.width)
            & (rowf >= 0)
            & (rowf < info.height)
        )
    rows = np.where(inside, np.floor(np.where(inside, rowf, 0)), -1).astype(np.int64)
    cols = np.where(inside, np.floor(np.where(inside, colf, 0)), -1).astype(np.int64)
    return rows, cols


def point_batches(
    points: Points, rows: np.ndarray, cols: np.ndarray, batch_size: int = 100_000
) -> list[dict]:
    """The points inside the grid, in batches of arrays (small Beam elements, not one per point)."""
    keep = np.flatnonzero(rows >= 0)
    return [
        {
            "id": ids,
            **({} if points.labels is None else {"label": points.labels[ids]}),
            "x": points.x[ids],
            "y": points.y[ids],
            "row": rows[ids],
            "col": cols[ids],
            **{KEPT_PREFIX + k: v[ids] for k, v in points.columns.items()},
        }
        for ids in (keep[i : i + batch_size] for i in range(0, len(keep), batch_size))
    ]


def split_by_chunk(batch: dict, chunk_rows: int, chunk_cols: int):
    """A batch -> ((chunk row, chunk col), sub-batch) for each chunk it touches."""
    chunk_id = (batch["row"] // chunk_rows) * (1 << 32) + batch["col"] // chunk_cols
    order = np.argsort(chunk_id, kind="stable")
    ids, starts = np.unique(chunk_id[order], return_index=True)
    for cid, part in zip(ids, np.split(order, starts[1:])):
        yield (
            (int(cid >> 32) * chunk_rows, int(cid & 0xFFFFFFFF) * chunk_cols),
            {k: v[part] for k, v in batch.items()},
        )


def merge_batches(batches) -> dict:
    batches = list(batches)
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def sample_rows(
    values: np.ndarray, batch: dict, row0: int, col0: int, year: int, bands
) -> tuple[pd.DataFrame, int]:
    """The embedding of each point's pixel from a window starting at (row0, col0); drops no-data."""
    vectors = values[batch["row"] - row0, batch["col"] - col0]  # (points, bands)
    valid = valid_mask(vectors)
    frame = pd.DataFrame(
        {
            "point_id": batch["id"][valid],
            **({"label": batch["label"][valid]} if "label" in batch else {}),
            **{
                k[len(KEPT_PREFIX) :]: v[valid]
                for k, v in batch.items()
                if k.startswith(KEPT_PREFIX)
            },
            "point_x": batch["x"][valid],
            "point_y": batch["y"][valid],
            "year": np.full(int(valid.sum()), year, dtype=np.int16),
            "pixel_x": batch["col"][valid].astype(np.int32),
            "pixel_y": batch["row"][valid].astype(np.int32),
        }
    )
    frame = pd.concat([frame, pd.DataFrame(vectors[valid], columns=list(bands))], axis=1)
    return frame, int((~valid).sum())


class _SampleChunkFn(beam.DoFn):
    def __init__(self, info: StoreInfo, years: tuple[int, ...], parts_dir: str, member=None):
        self.reader = StoreReader(info.path)
        self.info = info
        self.years = years
        self.parts_dir = parts_dir
        self.member = member  # a collection's member: (position, name, crs)
        self.sampled = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "samples_written")
        self.nodata = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "samples_nodata")
        self.chunks = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "chunk_reads")

    def process(self, element):
        (row0, col0), batches = element
        batch = merge_batches(batches)
        r0, r1 = (
            int(batch["row"].min()),
            int(batch["row"].max()) + 1,
        )  # read only the points' box (one chunk)
        c0, c1 = int(batch["col"].min()), int(batch["col"].max()) + 1
        frames, nodata = [], 0
        for year in self.years:
            values = as_float(
                self.reader.read_codes(self.info.time_index(year), slice(r0, r1), slice(c0, c1))
            )
            self.chunks.inc()
            frame, dropped = sample_rows(values, batch, r0, c0, year, self.info.bands)
            frames.append(frame)
            nodata += dropped
        table = pd.concat(frames, ignore_index=True)
        name = f"part-{row0}-{col0}.parquet"
        if self.member is not None:  # which store (and so which grid) each row's pixel is of
            position, member, crs = self.member
            at = table.columns.get_loc("pixel_x")
            table.insert(at, "crs", pd.Series([crs] * len(table), dtype=object))
            table.insert(at, "member", pd.Series([member] * len(table), dtype=object))
            name = f"part-{position * MEMBER_PART_STEP + row0}-{col0}.parquet"
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        # whole or absent: a retried or killed worker never leaves a truncated part to assemble
        atomic.write_bytes(f"{self.parts_dir}/{name}", buffer.getvalue())
        self.sampled.inc(len(table))
        self.nodata.inc(nodata)
        yield len(table)


@dataclasses.dataclass
class SamplePoints(beam.PTransform):
    """Point batches -> a Parquet part per chunk under `parts_dir`; emits rows written per chunk."""

    info: StoreInfo
    years: tuple[int, ...]
    parts_dir: str
    member: tuple | None = None  # a collection's member: (position, name, crs) -> columns

    def __post_init__(self):
        super().__init__()

    def expand(self, batches):
        rows, cols = self.info.chunk_rows, self.info.chunk_cols
        return (
            batches
            | "SplitByChunk" >> beam.FlatMap(split_by_chunk, rows, cols)
            | "GroupByChunk" >> beam.GroupByKey()
            | "SampleChunk"
            >> beam.ParDo(_SampleChunkFn(self.info, tuple(self.years), self.parts_dir, self.member))
        )
