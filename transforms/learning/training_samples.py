"""The sample table `efm sample` wrote -> the arrays `efm train` fits: X, labels (or a numeric
target), groups (a point's years stay in one fold), bands and the table's metadata."""

from __future__ import annotations

import fsspec
import numpy as np

from transforms.core import parquet
from transforms.core.errors import InputError, first_line


def load_samples(
    path: str, label_column: str = "label", flag: str = "--samples", *, rows: bool = False
):
    """A table from `efm sample` -> (X float32 (n, bands), labels, groups (point ids) or None, bands, table metadata).

    `rows=True` appends the rows used (a DataFrame, in X's order: where spatial CV finds each
    sample's place)."""
    frame, meta = _read_table(path, flag)
    return frame_samples(frame, meta, label_column, path, flag, rows=rows)


def frame_samples(
    frame,
    meta: dict,
    label_column: str = "label",
    path: str = "the table",
    flag: str = "--samples",
    *,
    rows: bool = False,
):
    """`load_samples` on a table already read (the Python API's efm.train takes a DataFrame); `meta`: the table's efm metadata."""
    if label_column not in frame.columns:
        raise InputError(
            "--label-column",
            f"{path} has no column {label_column!r}; its columns start {', '.join(map(str, frame.columns[:8]))}",
        )
    found = _rows(frame[frame[label_column].notna()], label_column, meta, path, flag)
    return found if rows else found[:5]


def load_target_samples(
    path: str,
    target_column: str,
    flag: str = "--samples",
    drop_missing: bool = False,
    *,
    rows: bool = False,
    target_flag: str = "--target-column",
    drop_flag: str = "--drop-missing-target",
):
    """Like `load_samples`, for regression: the target read as float64; refuses a column that is
    missing, not numeric, holds values that are not finite (NaN, inf: unless `drop_missing`,
    which drops those rows), or holds fewer than 3 distinct values (that is a class label)."""
    frame, meta = _read_table(path, flag)
    return frame_target_samples(
        frame,
        meta,
        target_column,
        path,
        flag,
        drop_missing=drop_missing,
        rows=rows,
        target_flag=target_flag,
        drop_flag=drop_flag,
    )


def frame_target_samples(
    frame,
    meta: dict,
    target_column: str,
    path: str = "the table",
    flag: str = "--samples",
    *,
    drop_missing: bool = False,
    drop_flag: str = "--drop-missing-target",
    target_flag: str = "--target-column",
    rows: bool = False,
):
    """`load_target_samples` on a table already read. `target_flag` names where the target column
    was given (`--label-column` with `efm train --regressor`, `target_column` in the API)."""
    import pandas as pd

    # a class label instead: on the command line the same column with --classifier
    classes = (
        "--classifier instead of --regressor"
        if target_flag == "--label-column"
        else "--label-column with --classifier"
    )
    if target_column not in frame.columns:
        raise InputError(
            target_flag,
            f"{path} has no column {target_column!r}; its columns start {', '.join(map(str, frame.columns[:8]))} "
            "(carry it from the points file with `efm sample --keep-columns`)",
        )
    column = frame[target_column]
    if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        raise InputError(
            target_flag,
            f"column {target_column!r} of {path} is not numeric ({column.dtype}); a regressor "
            f"predicts numbers (for classes use {classes})",
        )
    frame = frame.assign(**{target_column: column.astype(np.float64)})
    finite = np.isfinite(frame[target_column].to_numpy())
    if not finite.all() and not drop_missing:
        bad = frame[~finite]
        ids = bad["point_id"] if "point_id" in bad.columns else bad.index
        unit = "point_id" if "point_id" in bad.columns else "row"
        first = ", ".join(map(str, list(dict.fromkeys(ids.tolist()))[:5]))
        raise InputError(
            target_flag,
            f"column {target_column!r} of {path} is not a finite number in {len(bad)} of {len(frame)} rows "
            f"(NaN or inf; first at {unit} {first}); give every sample a value, or pass "
            f"{drop_flag} to train on the other rows",
        )
    frame = frame[finite]
    X, y, groups, bands, meta, used = _rows(frame, target_column, meta, path, flag)
    distinct = len(np.unique(y))
    if distinct < 3:
        raise InputError(
            target_flag,
            f"column {target_column!r} of {path} holds only {distinct} distinct "
            f"value{'s' if distinct != 1 else ''} ({', '.join(map(str, np.unique(y)))}); did you "
            f"mean {classes} (classification)?",
        )
    return (X, y, groups, bands, meta, used) if rows else (X, y, groups, bands, meta)


def _read_table(path: str, flag: str):
    from transforms.learning import sample_table

    try:
        with fsspec.open(path, "rb") as f:
            frame = parquet.read_table(f).to_pandas()  # not pd.read_parquet(f): core/parquet.py
        meta = sample_table.read_table_metadata(path)
    except FileNotFoundError:
        raise InputError(flag, f"{path} does not exist") from None
    except Exception as exc:
        raise InputError(
            flag,
            f"cannot read {path} as a Parquet table: {first_line(exc)}",
        ) from None
    return frame, meta


def _rows(frame, column: str, meta: dict, path: str, flag: str):
    """The rows with every band -> (X, the column's values, groups, bands, meta, those rows)."""
    bands = meta.get("bands") or [
        c for c in frame.columns if len(str(c)) == 3 and str(c)[0] == "A" and str(c)[1:].isdigit()
    ]
    missing = [b for b in bands if b not in frame.columns]
    if not bands or missing:
        raise InputError(
            flag,
            f"{path} lacks band columns ({'missing ' + ', '.join(missing[:3]) if missing else 'none of A00…A63'}); make it with `efm sample`",
        )
    X = frame[bands].to_numpy(np.float32)
    keep = ~np.isnan(X).any(axis=1)
    frame, X = frame[keep], X[keep]
    if len(frame) == 0:
        raise InputError(flag, f"{path} holds no usable sample")
    # rows of one point (efm sample) or one polygon (efm zonal: its id column) in several years
    # stay in one fold
    by = meta.get("group_column") or "point_id"
    groups = frame[by].to_numpy() if by in frame.columns and frame[by].duplicated().any() else None
    return X, frame[column].to_numpy(), groups, list(bands), meta, frame
