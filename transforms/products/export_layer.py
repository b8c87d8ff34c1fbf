"""What `efm export` exports: one 2-D variable of a product store (or one band of an embedding
store) per year, as a `Layer` (grid, chunks, kind, nodata, classes), read window by window."""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from transforms.core.errors import InputError
from transforms.core.grid import Window, tile_windows
from transforms.products.export import DEFAULT_FLOAT_NODATA
from transforms.storage import store

MAIN_VARIABLES = (
    "class",
    "prediction",
    "similarity",
)  # the default --variable, first one a store has


@dataclasses.dataclass(frozen=True)
class Layer:
    """One 2-D variable per year of a store, as exported."""

    path: str
    variable: str  # "class", "confidence", "prediction", "similarity", "similar", "changed" or "embedding"
    band_index: int | None  # for embedding stores
    crs: str
    transform: tuple
    width: int
    height: int
    chunk_rows: int
    chunk_cols: int
    years: tuple[int, ...]
    dtype: str  # on disk
    nodata: float | int
    labels: tuple = ()
    values: tuple = ()
    kind: str = "class"  # "class", "mask" (0/1 flags), "continuous" (float) or "embedding"
    timed: bool = True  # False: a (y, x) store (change), exported as one file
    attrs: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    offset: tuple = (
        0,
        0,
    )  # (row, col) of this layer's origin in the store's grid (--bbox/--aoi: a window of it)
    skip: frozenset = (
        frozenset()
    )  # (row, col) of the windows outside an --aoi: written as nodata, not read

    @property
    def is_class(self) -> bool:
        """Coded values with a legend (class maps and 0/1 masks): nearest-neighbour overviews, colour table."""
        return self.kind in ("class", "mask")

    def windows(self) -> list[Window]:
        return list(tile_windows(self.height, self.width, self.chunk_rows, self.chunk_cols))

    def open_array(self):
        import zarr

        if self.variable == "embedding":  # any layout efm reads (transforms/storage/layouts.py)
            from transforms.storage.readers import StoreReader

            return StoreReader(self.path)
        from transforms.storage.reach import storage_options

        return zarr.open_group(
            self.path, mode="r", storage_options=storage_options(self.path) or None
        )[self.variable]

    def source(self, w: Window) -> Window:
        """A window of this layer as the same pixels of the store's grid."""
        return Window(w.row + self.offset[0], w.col + self.offset[1], w.rows, w.cols)

    def read(self, array, time_index: int, w: Window) -> np.ndarray:
        w = self.source(w)
        rows, cols = slice(w.row, w.row + w.rows), slice(w.col, w.col + w.cols)
        if self.variable == "embedding":  # a chunk holds every band: one read, one band kept
            return store.as_float(array.read_codes(time_index, rows, cols)[..., self.band_index])
        block = array[time_index, rows, cols] if self.timed else array[rows, cols]
        if self.kind == "continuous" and not np.isnan(self.nodata):
            if np.any(block == self.nodata):  # a real value would read back as no data
                raise InputError(  # efm export's --tuning nodata (efm.export: float_nodata)
                    "--tuning",
                    f"nodata: {self.path} holds the value {self.nodata:g} itself; choose another, "
                    "e.g. --tuning nodata=nan",
                )
            block = np.where(np.isnan(block), np.float32(self.nodata), block)
        return block


def open_layer(
    path: str,
    *,
    variable: str | None = None,
    band: str | None = None,
    flag: str = "--input",
    float_nodata: float = DEFAULT_FLOAT_NODATA,
) -> Layer:
    """A complete product store (class map, prediction, similarity, change) or an embedding store + `band`.

    `variable` defaults to the product's main one (MAIN_VARIABLES); float variables are exported
    with `float_nodata` in place of NaN.
    """
    import rioxarray  # noqa: F401

    from transforms.storage import reach
    from transforms.storage.reach import storage_options

    reach.check_root(path, flag)  # a remote root that cannot be read: one line, in seconds
    try:
        ds = xr.open_zarr(
            path,
            consolidated=True,
            mask_and_scale=False,
            storage_options=storage_options(path) or None,  # s3: anonymous without credentials
        )
        if "embedding" in ds and ds["embedding"].dims[-1] != "band":  # efm's Zarr 3 layout
            ds = store.open_embeddings(path, flag=flag)  # its canonical view
    except (FileNotFoundError, KeyError, ValueError) as exc:
        if not band:
            raise InputError(flag, f"cannot open {path} as a store: {exc}") from None
        ds = store.open_embeddings(path, flag=flag)  # another layout (the convention's Zarr 3)
    if band and "embedding" not in ds and store.STATUS_ATTR not in ds.attrs:
        # a Zarr 2 store efm did not write: read as any layout, or told what it lacks
        ds = store.open_embeddings(path, flag=flag)
    if ds.attrs.get(store.STATUS_ATTR) != "complete":
        raise InputError(
            flag,
            f"{path} is incomplete ({store.STATUS_ATTR}={ds.attrs.get(store.STATUS_ATTR)!r}); finish it with --resume first",
        )
    band_index, labels, values, kind = None, (), (), "class"
    if "embedding" in ds:
        if variable not in (None, "embedding"):
            raise InputError(
                "--variable", f"{path} is an embedding store; export one band with --band"
            )
        if not band:
            raise InputError(
                "--band", f"{path} is an embedding store: name the band to export, e.g. --band A01"
            )
        bands = [str(b) for b in ds["band"].values]
        if band not in bands:
            raise InputError(
                "--band", f"{path} has no band {band!r}; bands are {bands[0]}…{bands[-1]}"
            )
        variable, band_index, dtype, nodata, kind = (
            "embedding",
            bands.index(band),
            "float32",
            float("nan"),
            "embedding",
        )
    else:
        if band:
            raise InputError(
                "--band",
                f"{path} is not an embedding store; choose a variable with --variable ({', '.join(ds.data_vars)})",
            )
        variable = (
            variable
            or next((v for v in MAIN_VARIABLES if v in ds), None)
            or (list(ds.data_vars) + [""])[0]
        )
        if variable not in ds:
            raise InputError(
                "--variable",
                f"{path} has no {variable!r} variable; choose one of {', '.join(ds.data_vars)}",
            )
        if set(ds[variable].dims) - {"time", "y", "x"}:
            raise InputError(
                "--variable",
                f"{variable!r} of {path} is not a map (dims {ds[variable].dims}); choose one of {', '.join(ds.data_vars)}",
            )
        kind, dtype, nodata, labels, values = describe_variable(
            variable,
            str(ds[variable].dtype),
            ds[variable].attrs,
            ds[variable].encoding.get("_FillValue"),
            float_nodata,
        )
    chunks = ds[variable].encoding.get("chunks")
    chunks = dict(zip(ds[variable].dims, chunks)) if chunks else {}
    return Layer(
        path=path,
        variable=variable,
        band_index=band_index,
        crs=str(ds.rio.crs),
        transform=tuple(ds.rio.transform(recalc=False))[:6],
        width=ds.sizes["x"],
        height=ds.sizes["y"],
        chunk_rows=int(chunks.get("y", ds.sizes["y"])),
        chunk_cols=int(chunks.get("x", ds.sizes["x"])),
        years=tuple(int(str(t)[:4]) for t in ds["time"].values)
        if "time" in ds[variable].dims
        else (),
        dtype=dtype,
        nodata=nodata,
        labels=labels,
        values=values,
        kind=kind,
        timed="time" in ds[variable].dims,
        attrs=dict(ds[variable].attrs),
    )


def crop(layer: Layer, sub) -> Layer:
    """The layer on a subset's window (transforms/storage/subset.py): the GeoTIFF's grid and geotransform, chunks outside an --aoi as nodata."""
    if not sub.active:
        return layer
    return dataclasses.replace(
        layer,
        width=sub.window.cols,
        height=sub.window.rows,
        transform=sub.transform(layer.transform),
        offset=sub.offset,
        skip=frozenset((w.row, w.col) for w, kept in sub.windows() if not kept),
    )


def describe_variable(
    variable: str, dtype: str, attrs: dict, fill, float_nodata: float = DEFAULT_FLOAT_NODATA
):
    """A product variable as exported -> (kind, GeoTIFF dtype, nodata, class labels, class values)."""
    nodata = attrs.get("fill_value", fill)
    nodata = float("nan") if nodata in (None, "NaN") else nodata
    kind, labels, values = "class", (), ()
    if np.issubdtype(np.dtype(dtype), np.floating):
        kind, dtype, nodata = "continuous", "float32", float(float_nodata)
    elif "flag_values" in attrs:
        values = tuple(int(v) for v in np.atleast_1d(attrs.get("flag_values", [])))
        labels = tuple(attrs.get("class_labels") or str(attrs.get("flag_meanings", "")).split())
        kind = "class" if variable == "class" else "mask"
    return kind, dtype, nodata, labels, values
