"""A lazy map -> Cloud-Optimized GeoTIFF with `efm export`'s writer (`efm.to_cog`); a quick plot with the legend (`efm.plot`)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import xarray as xr

from transforms.core.errors import InputError
from transforms.products import export, export_layer, quicklook
from transforms.storage import outputs

BATCH = 8  # windows computed at once: the workers read and classify in parallel, the writer takes them in order


def _map2d(da: xr.DataArray, year: int | None, name: str = "da") -> xr.DataArray:
    """One (y, x) map: a year of a (time, y, x) map (the only one, or `year`)."""
    import rioxarray  # noqa: F401

    if not isinstance(da, xr.DataArray):
        raise InputError(
            name,
            f"expected a DataArray map, e.g. efm.predict(...) or efm.predict(...).sel(time='2022'), got {type(da).__name__}",
        )
    if "time" in da.dims:
        years = [int(str(t)[:4]) for t in da["time"].values]
        if year is None and len(years) != 1:
            raise InputError(
                "year",
                f"the map has years {', '.join(map(str, years))}: pick one, e.g. year={years[0]}",
            )
        if year is not None and year not in years:
            raise InputError(
                "year", f"the map has no year {year}; it has {', '.join(map(str, years))}"
            )
        da = da.isel(time=years.index(year) if year is not None else 0)
    elif year is not None:
        raise InputError("year", "the map has no time dimension; drop year")
    if da.dims != ("y", "x"):
        raise InputError(name, f"expected a map with dims (y, x) or (time, y, x), got {da.dims}")
    if da.rio.crs is None:
        raise InputError(
            name, "the map has no CRS (spatial_ref); make it with efm.predict / similarity / change"
        )
    return da


class _Windows:
    """`write_cog` reads its windows in order; this computes BATCH of them at a time on the active Dask
    scheduler (a map's chunk is small: the embeddings behind it stay on the workers)."""

    def __init__(self, data, windows):
        self.data = data
        self.order = [(w.row, w.col, w.rows, w.cols) for w in windows]
        self.ready: dict = {}

    def __getitem__(self, key):
        rows, cols = key
        wanted = (rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start)
        if wanted not in self.ready:
            import dask

            start = self.order.index(wanted)
            batch = self.order[start : start + BATCH]
            blocks = dask.compute(*[self.data[r : r + h, c : c + w] for r, c, h, w in batch])
            self.ready.update(zip(batch, (np.asarray(b) for b in blocks)))
        return self.ready.pop(wanted)


@dataclasses.dataclass(frozen=True)
class _ArrayLayer(export_layer.Layer):
    """An `export_layer.Layer` over an in-memory / lazy DataArray instead of a store's Zarr array."""

    data: object = dataclasses.field(default=None, compare=False, repr=False)

    def open_array(self):
        return _Windows(self.data, self.windows())


def layer(
    da: xr.DataArray,
    path: str = "",
    *,
    year: int | None = None,
    float_nodata: float = export.DEFAULT_FLOAT_NODATA,
) -> _ArrayLayer:
    """The export layer of a map: kind, dtype, nodata, labels as `efm export` decides them from the variable's attributes."""
    da = _map2d(da, year)
    name = str(da.name or "map")
    kind, dtype, nodata, labels, values = export_layer.describe_variable(
        name, str(da.dtype), da.attrs, da.encoding.get("_FillValue"), float_nodata
    )
    recalc = da.sizes["x"] > 1 and da.sizes["y"] > 1
    chunks = da.chunks or ((da.sizes["y"],), (da.sizes["x"],))
    data = da.data if da.chunks else np.asarray(da.values)
    return _ArrayLayer(
        path=path or name,
        variable=name,
        band_index=None,
        crs=str(da.rio.crs),
        transform=tuple(da.rio.transform(recalc=recalc))[:6],
        width=da.sizes["x"],
        height=da.sizes["y"],
        chunk_rows=int(chunks[0][0]),
        chunk_cols=int(chunks[1][0]),
        years=(),
        dtype=dtype,
        nodata=nodata,
        labels=labels,
        values=values,
        kind=kind,
        timed=False,
        attrs=dict(da.attrs),
        data=data,
    )


def to_cog(
    da: xr.DataArray,
    path: str,
    *,
    year: int | None = None,
    overwrite: bool = False,
    float_nodata: float = export.DEFAULT_FLOAT_NODATA,
) -> str:
    """Write one map as a Cloud-Optimized GeoTIFF (local or ``gs://``) with `efm export`'s writer.

    Class maps and 0/1 masks: uint8 (int16) codes, nodata 255, a colour table and a ``CLASS_<code>``
    tag per label; float maps: float32 with nodata ``float_nodata`` (-9999) where the map is NaN, the
    long name and units as band description and tags. ``da``: a ``(y, x)`` map or a ``(time, y, x)``
    one with ``year``. Computed window by window on the active Dask scheduler; memory stays at a few
    chunks. An existing file is refused unless ``overwrite`` (and only one efm wrote is replaced).

    >>> efm.to_cog(classes, "classes_2022.tif", year=2022)        # doctest: +SKIP
    """
    path = os.fspath(path)
    if not path.lower().endswith((".tif", ".tiff")):
        raise InputError("path", f"{path}: name the GeoTIFF with .tif, e.g. classes.tif")
    lay = layer(da, path, year=year, float_nodata=float_nodata)
    outputs.check_output(path, "geotiff", overwrite=overwrite, flag="path")
    return export.write_cog(lay, None, path, export.layer_colors(lay))


def plot(da: xr.DataArray, *, year: int | None = None, ax=None, title: str | None = None):
    """Plot a map with `efm export`'s colours: class maps with a legend naming the classes, float maps
    with a colour bar (long name and units), no data in grey. Computes the map (subset big ones first).

    >>> efm.plot(classes, year=2022)                              # doctest: +SKIP
    """
    import matplotlib
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    lay = layer(da, year=year)
    image = np.asarray(_map2d(da, year).values)
    extent = (
        lay.transform[2],
        lay.transform[2] + lay.transform[0] * lay.width,
        lay.transform[5] + lay.transform[4] * lay.height,
        lay.transform[5],
    )
    if ax is None:
        _, ax = plt.subplots(figsize=(8, max(3.0, 6.5 * lay.height / max(lay.width, 1))))
    if lay.is_class:
        colors = export.layer_colors(lay)
        rgba = np.zeros(image.shape + (4,), dtype=np.uint8)
        rgba[...] = (189, 189, 189, 255)  # no data: grey, as the quicklooks
        for value, rgb in colors.items():
            rgba[image == value] = (*rgb, 255)
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        handles = [
            mpatches.Patch(color=np.array(colors[v]) / 255, label=str(lbl))
            for v, lbl in zip(lay.values, lay.labels)
        ]
        ax.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            fontsize=8,
            frameon=False,
        )
    else:
        name, vmin, vmax = quicklook.colour_scale(lay, image[np.isfinite(image)])
        im = ax.imshow(
            np.ma.masked_invalid(image),
            cmap=matplotlib.colormaps[name].with_extremes(bad="#bdbdbd"),
            vmin=vmin,
            vmax=vmax,
            extent=extent,
            interpolation="nearest",
        )
        units = str(lay.attrs.get("units", "")).strip()
        label = str(lay.attrs.get("long_name", lay.variable)) + (
            f" [{'unitless' if units == '1' else units}]" if units else ""
        )
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(label, fontsize=9)
    when = year if year is not None else str(da["time"].values[0])[:4] if "time" in da.dims else ""
    ax.set_title(title or f"{lay.attrs.get('long_name', lay.variable)} {when}".strip(), fontsize=10)
    return ax
