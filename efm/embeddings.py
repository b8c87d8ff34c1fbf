"""Open an embedding store as a lazy Dataset, and sample it at points (`efm sample`'s table)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import xarray as xr

from transforms.core import grid as gridlib
from transforms.core import quantize
from transforms.core.errors import InputError
from transforms.learning import labelled_points, sample_table, sampling
from transforms.storage import readers, store
from transforms.storage.readers import StoreInfo

PATH_KEY = (
    "efm_path"  # Dataset.encoding: the store it was opened from (provenance in tables and maps)
)


def open_embeddings(path: str | os.PathLike):
    """A complete embedding store (local path or ``gs://``) as a lazy ``xarray.Dataset``.

    A collection (a folder with one store per UTM zone, from `efm extract`) opens as an
    ``efm.collection.EmbeddingCollection``: ``coll.sel(bbox=(W, S, E, N))`` gives one such
    Dataset over any area of it (docs/collections.md, "Notebook").

    ``embedding`` is a dask array ``(time, y, x, band)`` of float32, NaN = no data, chunked as
    the store is (one dask chunk = one Zarr chunk); an int8 store is de-quantised chunk by chunk
    when computed (``transforms/core/quantize.py``), never as a whole. The CRS and grid are
    rioxarray's: ``ds.rio.crs``, ``ds.rio.transform()``.

    >>> ds = efm.open_embeddings("geneva.zarr")                      # doctest: +SKIP
    >>> ds.rio.crs, ds.sizes                                         # doctest: +SKIP
    (CRS.from_epsg(32632), {'time': 2, 'y': 2300, 'x': 2500, 'band': 64})
    >>> ds.embedding.sel(band="A01", time="2022").plot()             # doctest: +SKIP

    Raises InputError if the path is not an embedding store or the store is unfinished.
    """
    import rioxarray  # noqa: F401  (registers .rio)

    from transforms.storage import collection as collectionlib

    path = os.fspath(path)
    if collectionlib.is_collection(path):
        from efm.collection import EmbeddingCollection

        return EmbeddingCollection(path)
    raw = store.open_embeddings(path, flag="path")
    info = readers.store_info(
        path, raw, flag="path"
    )  # refuses a store without a readable CRS / transform
    ds = raw.chunk({"time": 1, "y": info.chunk_rows, "x": info.chunk_cols, "band": -1})
    emb = ds["embedding"]
    if emb.dtype == np.int8:
        # a new variable, without the int8 encoding: writing the Dataset back must not cast floats to codes
        ds["embedding"] = (
            emb.dims,
            emb.data.map_blocks(store.as_float, dtype=np.float32),
            {**emb.attrs, "stored_as": "int8 codes: " + quantize.FORMULA},
        )
    ds.encoding[PATH_KEY] = path
    return ds


def dataset(ds_or_path, name: str = "ds") -> xr.Dataset:
    """A Dataset from `efm.open_embeddings` (a path is opened)."""
    if isinstance(ds_or_path, (str, os.PathLike)):
        return open_embeddings(ds_or_path)
    if not isinstance(ds_or_path, xr.Dataset) or "embedding" not in ds_or_path:
        raise InputError(
            name,
            f"expected an embedding store's path or the Dataset efm.open_embeddings returns, got {type(ds_or_path).__name__}",
        )
    return ds_or_path


def grid(ds: xr.Dataset, name: str = "ds") -> StoreInfo:
    """What the pipelines know of a store (readers.StoreInfo), for a Dataset: also a subset of a store
    (`ds.sel(x=..., y=...)`), whose transform is recomputed from its coordinates."""
    import rioxarray  # noqa: F401

    emb = ds["embedding"]
    if ds.rio.crs is None:
        raise InputError(
            name,
            "the Dataset has no CRS (spatial_ref); open the store with efm.open_embeddings(path)",
        )
    if list(emb.dims) != ["time", "y", "x", "band"]:
        raise InputError(
            name,
            f"embedding has dims {emb.dims}, not (time, y, x, band); select with .sel/.isel slices, not single values",
        )
    recalc = (
        ds.sizes["x"] > 1 and ds.sizes["y"] > 1
    )  # a subset's own grid; one pixel has no spacing to compute from
    transform = ds.rio.transform(recalc=recalc)
    chunks = emb.chunks or tuple((n,) for n in emb.shape)
    return StoreInfo(
        path=ds.encoding.get(PATH_KEY, ds.encoding.get("source", "")),
        crs=str(ds.rio.crs),
        transform=tuple(transform)[:6],
        width=ds.sizes["x"],
        height=ds.sizes["y"],
        chunk_rows=int(chunks[1][0]),
        chunk_cols=int(chunks[2][0]),
        years=tuple(int(str(t)[:4]) for t in ds["time"].values),
        bands=tuple(str(b) for b in ds["band"].values),
        dtype="int8" if "quantization" in ds.attrs else str(emb.dtype),
        source=str(ds.attrs.get("source", "")),
    )


def _sample_window(
    values: np.ndarray, batch: dict, row0: int, col0: int, year: int, bands
) -> pd.DataFrame:
    return sampling.sample_rows(values, batch, row0, col0, year, bands)[0]


def sample(
    ds,
    points,
    *,
    label_column: str | None = None,
    keep_columns: list[str] | None = None,
    years: list[int] | None = None,
    points_crs: str | None = None,
) -> pd.DataFrame:
    """The embedding under each point, for each year: the table `efm sample` writes, as a DataFrame.

    Columns ``point_id, label, <kept columns>, point_x, point_y, year, pixel_x, pixel_y, A00..A63``,
    sorted by point and year; points outside the store and (point, year) pairs on no data are
    dropped. ``points``: a file (GeoJSON, GeoPackage, GeoParquet, CSV with lon/lat) or a
    (Geo)DataFrame, in any CRS. ``keep_columns``: numeric columns to carry (default: every numeric
    one; ``[]`` for none); without ``label_column`` name them (a table for regression).
    The store's metadata rides in ``table.attrs["efm"]`` (what `efm.train` reads).

    >>> table = efm.sample(ds, "points.geojson", label_column="landcover")     # doctest: +SKIP
    >>> table.groupby("label").size()                                          # doctest: +SKIP
    """
    import dask
    import pyarrow as pa

    from efm.collection import as_collection

    coll = as_collection(ds)
    keep = labelled_points.parse_keep_columns(
        None if keep_columns is None else (",".join(keep_columns) or "none"), label_column
    )
    if (
        coll is not None
    ):  # each point from the member whose cell holds it (efm/collection_sample.py)
        from efm import collection_sample

        pts = labelled_points.points_of(points, label_column, points_crs, keep)
        if len(pts.x) == 0:
            raise InputError("points", f"no labelled point (column {label_column!r} is empty)")
        name = os.fspath(points) if isinstance(points, (str, os.PathLike)) else "DataFrame"
        wanted = gridlib.years_value(years, "years")
        return collection_sample.sample(coll, pts, wanted, name, label_column)
    ds = dataset(ds)
    info = grid(ds)
    years = readers.select_years(info, gridlib.years_value(years, "years"), flag="years")
    pts = labelled_points.points_of(points, label_column, points_crs, keep)
    if len(pts.x) == 0:
        raise InputError("points", f"no labelled point (column {label_column!r} is empty)")
    rows, cols = sampling.to_pixels(info, pts)
    if not (rows >= 0).any():
        raise InputError(
            "points",
            f"none of the {len(rows)} points ({pts.crs}) falls inside the store ({info.crs}); check the CRS and the area",
        )
    emb = ds["embedding"].data
    tasks = []
    for batch in sampling.point_batches(pts, rows, cols):
        for _, part in sampling.split_by_chunk(batch, info.chunk_rows, info.chunk_cols):
            r0, r1 = (
                int(part["row"].min()),
                int(part["row"].max()) + 1,
            )  # the points' box, as `efm sample` reads it
            c0, c1 = int(part["col"].min()), int(part["col"].max()) + 1
            for year in years:
                window = emb[info.time_index(year), r0:r1, c0:c1, :]
                tasks.append(dask.delayed(_sample_window)(window, part, r0, c0, year, info.bands))
    frames = dask.compute(*tasks)
    metadata = {
        "embeddings": info.path,
        "source": info.source,
        "grid": info.grid_summary(),
        "years": years,
        "store_years": list(info.years),
        "bands": list(info.bands),
        "store_dtype": info.dtype,
        "points": os.fspath(points) if isinstance(points, (str, os.PathLike)) else "DataFrame",
        "points_crs": pts.crs,
        "label_column": label_column,
        "keep_columns": list(pts.columns),
    }
    tables = [pa.Table.from_pandas(f, preserve_index=False) for f in frames if len(f)]
    table = sample_table.combine(tables, metadata, info.bands).to_pandas()
    table.attrs["efm"] = metadata
    return table
