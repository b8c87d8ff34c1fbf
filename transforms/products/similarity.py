"""Similarity search, driver side: the reference vector of each year from reference points.

The reference of a year is the plain mean of that year's embeddings at the points (the pixel
each point falls in, as `efm sample` picks it), NOT re-normalised to unit length: Earth
Engine's similarity-search tutorial uses the plain mean, and so do we. The similarity of a
pixel (transforms/products/change.py) is then its dot product with the mean, i.e. the mean of its dot
products with the reference pixels; it is 1 only if every reference pixel equals it.

The points' pixels are read here, in the driver, one chunk window per (year, chunk holding a
point), or of a sharded store just the inner chunks holding them (transforms/storage/
shard_points.py): a reference set is a handful to a few thousand points, not a table to sample.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pandas as pd

from transforms.core.errors import InputError
from transforms.core.grid import Window
from transforms.learning import labelled_points, sampling
from transforms.storage.readers import StoreInfo, StoreReader


@dataclasses.dataclass(frozen=True)
class Reference:
    vector: np.ndarray  # (bands,) float32
    points: int  # points with data that made it


def _any_column(path: str) -> str:
    """A column every point has, for reading points without a label column (read_points needs one)."""
    lower = path.lower()
    try:
        if lower.endswith(labelled_points.CSV_SUFFIXES):
            columns = list(
                pd.read_csv(path, nrows=0, sep="\t" if lower.endswith(".tsv") else ",").columns
            )
        elif lower.endswith(labelled_points.PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            return "geometry"
    except Exception:
        return "geometry"  # let read_points say what is wrong with the file
    if "geometry" in columns:
        return "geometry"
    lowered = {str(c).lower(): c for c in columns}
    return next(
        (lowered[a] for a, b in labelled_points.COORD_COLUMNS if a in lowered and b in lowered),
        columns[0] if columns else "geometry",
    )


def split_label(text: str | None, flag: str = "--label") -> tuple[str | None, str | None]:
    """`efm similarity --label COLUMN=VALUE` -> (COLUMN, VALUE), split at the first `=` (a value
    may hold one; a column name seldom does); (None, None) when not given. A text without `=`, or
    with an empty side, is refused: there is no default column to compare a bare VALUE with."""
    if text is None:
        return None, None
    column, equals, value = text.partition("=")
    if not equals or not column.strip() or not value:
        raise InputError(
            flag,
            f"expected COLUMN=VALUE, the column of the points and the value that marks the "
            f"reference points (e.g. kind=forest), got {text!r}",
        )
    return column, value


def reference_points(
    points, label_column: str | None, label, points_crs: str | None = None, *, api: bool = False
) -> labelled_points.Points:
    """The reference points of `efm similarity` (a file) and of `efm.similarity` (`api`: a file or
    a (Geo)DataFrame), only those whose `label_column` equals `label` (compared as text) when given."""
    if api:
        if (label is None) != (label_column is None):
            raise InputError(
                "label" if label_column is not None else "label_column",
                "give both label_column and label, or neither",
            )
    elif (label is None) != (label_column is None):  # split_label gives both or neither
        raise ValueError("the command line gives label_column and label together")
    if isinstance(points, (str, os.PathLike)):
        path = os.fspath(points)
        try:
            found = labelled_points.read_points(path, label_column or _any_column(path), points_crs)
        except InputError as exc:  # a COLUMN the file does not have: named by --label here
            if exc.flag != "--label-column":
                raise
            raise InputError("--label", str(exc).removeprefix("--label-column: ")) from None
        where, flag = path, "--label"
    else:  # the Python API's (Geo)DataFrame
        found = labelled_points.points_of(points, label_column, points_crs, keep_columns=[])
        where, flag = "the points", "label"
    if label is None:
        return found
    keep = np.array([str(v) == str(label) for v in found.labels], dtype=bool)
    if not keep.any():
        values = sorted({str(v) for v in found.labels})
        shown = ", ".join(values[:10]) + (" ..." if len(values) > 10 else "")
        raise InputError(
            flag, f"no point of {where} has {label_column} = {label!r}; its values are {shown}"
        )
    return labelled_points.Points(found.labels[keep], found.x[keep], found.y[keep], found.crs)


def point_values(
    info: StoreInfo, rows: np.ndarray, cols: np.ndarray, time_index: int
) -> np.ndarray:
    """(n, bands) float32 of the pixels (rows, cols) of one store time step, NaN = no data: of a
    sharded store, the inner chunks under the points; else one read per chunk (of the box around its points)."""
    reader = StoreReader(info.path)
    points = reader.read_points(time_index, rows, cols)  # a sharded store: just the inner chunks
    if points is not None:
        return points
    out = np.full((len(rows), len(info.bands)), np.nan, dtype=np.float32)
    chunk_r, chunk_c = rows // info.chunk_rows, cols // info.chunk_cols
    for cr, cc in sorted(set(zip(chunk_r.tolist(), chunk_c.tolist()))):
        pick = (chunk_r == cr) & (chunk_c == cc)
        # only the points' box of the chunk, as efm sample reads: on a remote store in the
        # convention's layout, that is the inner chunks under the points, not the whole unit
        r0, c0 = int(rows[pick].min()), int(cols[pick].min())
        window = Window(r0, c0, int(rows[pick].max()) + 1 - r0, int(cols[pick].max()) + 1 - c0)
        values = reader.read(time_index, window)
        out[pick] = values[rows[pick] - r0, cols[pick] - c0]
    return out


def references(
    info: StoreInfo, points: labelled_points.Points, years: list[int], path: str, read=None
) -> dict[int, Reference]:
    """Year -> the mean embedding at the points (points outside the grid or on no-data skipped).

    `read(rows, cols, time_index)` -> (n, bands) float32 gives the pixels' values (default: `point_values`
    from the store at info.path; the Python API reads them from its Dataset)."""
    read = read or (lambda r, c, t: point_values(info, r, c, t))
    rows, cols = sampling.to_pixels(info, points)
    inside = rows >= 0
    if not inside.any():
        raise InputError(
            "--points",
            f"none of the {len(rows)} points of {path} lies inside {info.path}; check the area and the points' CRS (--tuning points_crs)",
        )
    rows, cols = rows[inside], cols[inside]
    return _means(lambda year: read(rows, cols, info.time_index(year)), years, len(rows), path)


def collection_references(
    members,
    points: labelled_points.Points,
    years: list[int],
    path: str,
    root: str,
    read=None,
    flag: str = "--points",
) -> dict[int, Reference]:
    """`references` on a collection: each point read from the member whose cell holds it
    (members: [(name, cell, StoreInfo)], transforms/learning/collection_points.py); one mean of
    all of them per year, the same reference for every member's map.

    `read(part, time_index)` -> (n, bands) float32 gives a member's points' values (default:
    `point_values` from its store; the Python API reads them from the member's Dataset)."""
    from transforms.learning import collection_points

    parts, _ = collection_points.split(members, points)
    if not parts:
        raise InputError(
            flag,
            f"none of the {len(points.x)} points of {path} lies inside a store of the collection "
            f"{root}; check the area and the points' CRS (--tuning points_crs)",
        )

    read = read or (lambda p, t: point_values(p.info, p.rows, p.cols, t))

    def read_year(year):
        return np.concatenate(
            [
                read(p, p.info.time_index(year))
                if year in p.info.years
                else np.full((len(p.rows), len(p.info.bands)), np.nan, np.float32)
                for p in parts
            ]
        )

    return _means(read_year, years, sum(len(p.rows) for p in parts), path, flag)


def _means(read, years, n: int, path: str, flag: str = "--points") -> dict[int, Reference]:
    out = {}
    for year in years:
        values = read(year).astype(np.float64)
        valid = ~np.isnan(values).any(axis=1)
        if not valid.any():
            raise InputError(
                flag,
                f"all {n} points of {path} inside the store fall on pixels without data in {year}; "
                "choose points on pixels with data (or another --reference-year)",
            )
        out[year] = Reference(values[valid].mean(axis=0).astype(np.float32), int(valid.sum()))
    return out


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise InputError(
            "--threshold", f"{threshold} is not a similarity; give a number in [-1, 1], e.g. 0.8"
        )
