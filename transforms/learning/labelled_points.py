"""Labelled points from a file (GeoJSON, GeoPackage, GeoParquet, CSV): coordinates, labels and
the numeric columns a sample table carries along."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from transforms.core import grid as gridlib
from transforms.core.errors import InputError, first_line

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
COORD_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("x", "y"))
# Columns a table has (bands A00..A63 too): a kept column may not take their names.
RESERVED_COLUMNS = frozenset(
    {"point_id", "label", "point_x", "point_y", "year", "pixel_x", "pixel_y", "geometry"}
    | {"member", "crs"}  # a collection's table: the store of each row's pixel
    | {f"A{i:02d}" for i in range(100)}
)


@dataclasses.dataclass
class Points:
    """Labelled points in their own CRS, with the numeric columns kept for the table."""

    labels: np.ndarray | None  # None: no label column (a table for regression only)
    x: np.ndarray
    y: np.ndarray
    crs: str
    missing_label: int = 0  # rows dropped because their label was empty
    columns: dict = dataclasses.field(default_factory=dict)  # kept numeric columns: name -> values


def read_points(
    path: str,
    label_column: str | None,
    points_crs: str | None = None,
    flag: str = "--points",
    keep_columns: list[str] | None = None,
) -> Points:
    """GeoJSON / GeoPackage / any OGR file, GeoParquet, or CSV with lon/lat (or x/y) columns.

    `keep_columns`: the numeric columns to carry into the table (None: every numeric one but the
    coordinates and the label; [] for none)."""
    import geopandas

    lower = path.lower()
    try:
        if lower.endswith(CSV_SUFFIXES):
            frame = pd.read_csv(path, sep="\t" if lower.endswith(".tsv") else ",")
            geo = None
        elif lower.endswith(PARQUET_SUFFIXES):
            try:
                geo = geopandas.read_parquet(path)
                frame = geo
            except ValueError:  # plain Parquet without geo metadata: columns, like a CSV
                frame, geo = pd.read_parquet(path), None
        else:
            geo = frame = geopandas.read_file(path)
    except FileNotFoundError:
        raise InputError(flag, f"{path} does not exist") from None
    except Exception as exc:
        raise InputError(
            flag,
            f"cannot read {path} as points (GeoJSON, GeoPackage, GeoParquet or CSV): {first_line(exc)}",
        ) from None
    return frame_points(frame, geo, path, label_column, points_crs, flag, keep_columns)


def frame_points(
    frame: pd.DataFrame,
    geo,
    path: str,
    label_column: str | None,
    points_crs: str | None = None,
    flag: str = "--points",
    keep_columns: list[str] | None = None,
) -> Points:
    """`read_points` on a table already read: a GeoDataFrame (`geo` is it) or a DataFrame with coordinate columns (`geo` None)."""
    # where a CRS for the coordinates is given: --tuning points_crs=... on the command line
    crs_flag = "--tuning points_crs" if flag.startswith("--") else "points_crs"
    if len(frame) == 0:
        raise InputError(flag, f"{path} holds no {'features' if geo is not None else 'rows'}")
    if label_column is not None and label_column not in frame.columns:
        columns = [c for c in frame.columns if c != "geometry"]
        raise InputError(
            "--label-column",
            f"{path} has no column {label_column!r}; its columns are {', '.join(map(str, columns))}",
        )
    if geo is not None and "efm_role" in frame.columns:
        # efm label's polygons: each outline is followed by its samples (points); read those
        outline = (frame["efm_role"] == "polygon").to_numpy()
        if outline.any() and not outline.all():
            frame = geo = geo[~outline]
    if geo is not None:
        geometry = geo.geometry
        kinds = set(geometry[geometry.notna()].geom_type)
        if kinds - {"Point"}:
            raise InputError(
                flag,
                f"{path} must hold points, found {', '.join(sorted(kinds - {'Point'}))}; take centroids or sample points first",
            )
        crs = points_crs or (geo.crs.to_string() if geo.crs is not None else None)
        if crs is None:
            raise InputError(
                flag, f"{path} has no CRS; give the CRS of its coordinates: {crs_flag}=EPSG:4326"
            )
        ok = geometry.notna() & ~geometry.is_empty
        x = np.where(ok, geometry.x.where(ok), np.nan)
        y = np.where(ok, geometry.y.where(ok), np.nan)
    else:
        lowered = {str(c).lower(): c for c in frame.columns}
        pair = next(
            ((lowered[a], lowered[b]) for a, b in COORD_COLUMNS if a in lowered and b in lowered),
            None,
        )
        if pair is None:
            raise InputError(
                flag,
                f"{path} needs coordinate columns lon/lat (or longitude/latitude, x/y); its columns are {', '.join(map(str, frame.columns))}",
            )
        x = pd.to_numeric(frame[pair[0]], errors="coerce").to_numpy(np.float64)
        y = pd.to_numeric(frame[pair[1]], errors="coerce").to_numpy(np.float64)
        crs = points_crs or "EPSG:4326"
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.any():
        gridlib.check_degrees(
            (x[finite].min(), y[finite].min(), x[finite].max(), y[finite].max()),
            crs,
            path,
            flag,
            crs_from="flag" if points_crs else ("file" if geo is not None else "default"),
            crs_flag=crs_flag,
        )
    coords = () if geo is not None else pair
    columns = numeric_columns(frame, path, keep_columns, exclude={label_column, *coords})
    if label_column is None:
        return Points(None, np.asarray(x), np.asarray(y), crs, 0, columns)
    labels = frame[label_column]
    has_label = labels.notna().to_numpy() & (labels.astype(str).str.strip() != "").to_numpy()
    labels = labels.to_numpy()
    if labels.dtype == object:
        kinds = {type(v) for v in labels[has_label]}
        if len(kinds) > 1:  # mixed numbers and text: treat all as text
            labels = np.array([str(v) for v in labels], dtype=object)
    elif (
        np.issubdtype(labels.dtype, np.floating)
        and has_label.any()
        and np.all(labels[has_label] == np.round(labels[has_label]))
    ):
        labels = labels.astype(
            np.float64
        )  # integral floats (from a CSV with gaps) become ints below
        labels = np.where(has_label, labels, 0).astype(np.int64)
    return Points(
        labels[has_label],
        np.asarray(x)[has_label],
        np.asarray(y)[has_label],
        crs,
        int((~has_label).sum()),
        {k: v[has_label] for k, v in columns.items()},
    )


def numeric_columns(frame: pd.DataFrame, path: str, keep: list[str] | None, exclude: set) -> dict:
    """The columns to keep -> their values as in the file (ints stay ints). By default every numeric
    (not boolean) column but `exclude` and the table's own column names; named ones must be numeric."""

    def numeric(c):
        dtype = frame[c].dtype
        return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)

    if keep is None:
        names = [
            c
            for c in frame.columns
            if c != "geometry"
            and c not in exclude
            and str(c) not in RESERVED_COLUMNS
            and numeric(c)
        ]
    else:
        names = list(keep)
        for name in names:
            if name not in frame.columns:
                columns = [c for c in frame.columns if c != "geometry"]
                raise InputError(
                    "--keep-columns",
                    f"{path} has no column {name!r}; its columns are {', '.join(map(str, columns))}",
                )
            if name in RESERVED_COLUMNS or name in exclude:
                raise InputError(
                    "--keep-columns",
                    f"{name!r} is a column the table already has (or the label / a coordinate); keep other columns",
                )
            if not numeric(name):
                raise InputError(
                    "--keep-columns",
                    f"column {name!r} of {path} is not numeric ({frame[name].dtype}); keep only numeric columns",
                )
    return {str(c): frame[c].to_numpy() for c in names}


def parse_keep_columns(text: str | None, label_column: str | None) -> list[str] | None:
    """--keep-columns -> names (None: every numeric column; [] for 'none'); without a label column
    the table is for regression and needs the columns named."""
    names = (
        None
        if text is None
        else []
        if text.strip().lower() == "none"
        else [c.strip() for c in text.split(",") if c.strip()]
    )
    if label_column is None and not names:
        raise InputError(
            "--label-column",
            "required: name the class label column, or (for regression only) name the numeric columns to keep with --keep-columns, e.g. --keep-columns agbd",
        )
    return names


def points_of(
    points,
    label_column: str | None,
    points_crs: str | None = None,
    keep_columns: list[str] | None = None,
) -> Points:
    """The Python API's points: a file (any format `efm sample` reads) or a (Geo)DataFrame (coordinate columns lon/lat or x/y)."""
    if isinstance(points, (str, os.PathLike)):
        return read_points(
            os.fspath(points), label_column, points_crs, flag="points", keep_columns=keep_columns
        )
    if not isinstance(points, pd.DataFrame):
        raise InputError(
            "points", f"expected a points file or a (Geo)DataFrame, got {type(points).__name__}"
        )
    geo = points if hasattr(points, "geometry") and "geometry" in points.columns else None
    return frame_points(points, geo, "the points", label_column, points_crs, "points", keep_columns)
