"""A product store's variable (class map, 0/1 mask, continuous map) or one band of an embedding
store -> Cloud-Optimized GeoTIFF per year (one file for a store without time), + PNG quicklook.

Written window by window: each store chunk is read and written into a tiled GeoTIFF, then
GDAL's COG driver copies it (block by block, building overviews) into the final layout.
Memory stays at a few chunks plus GDAL's block cache, whatever the area. Quicklooks are
read decimated (from the COG's overviews, or strided chunk by chunk from the store).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import xarray as xr

from transforms.core import atomic
from transforms.core.errors import InputError
from transforms.core.grid import Window, tile_windows
from transforms.products.colours import class_colors
from transforms.storage import store

BLOCK_SIZE = 512
DEFAULT_RGB = (
    "A01",
    "A16",
    "A09",
)  # the false-colour bands of the original talk / Earth Engine tutorial
# Float products get a numeric nodata tag: NaN tags are not honoured by every GIS tool, -9999 is.
DEFAULT_FLOAT_NODATA = -9999.0
# The quicklook's longest side in map pixels: it is drawn 8 in at 100 dpi (800 px wide), so more
# adds nothing on screen; 4096 keeps the image read for it near 200 MB (false colour, float32).
MAX_PNG_SIZE = 4096
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
                raise InputError(
                    "--nodata",
                    f"{self.path} holds the value {self.nodata:g} itself; choose another, e.g. --nodata nan",
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


def layer_colors(layer: Layer) -> dict[int, tuple[int, int, int]] | None:
    """Class maps: one colour per class; 0/1 masks: grey for 0, red for 1 (the flagged pixels stand out)."""
    if layer.kind == "mask" and tuple(layer.values) == (0, 1):
        return {0: (200, 200, 200), 1: (215, 48, 39)}
    return class_colors(layer.values) if layer.is_class else None


def output_paths(output: str, years, suffix: str = ".tif") -> dict[int, str]:
    """`map.tif` -> {year: map.tif} for one year, {year: map_<year>.tif} for several; `{year}` is substituted.

    A store without time has the single key None (one file, `{year}` dropped)."""
    years = list(years)
    if years == [None]:
        return {None: output.replace("_{year}", "").replace("{year}", "")}
    if "{year}" in output:
        return {y: output.replace("{year}", str(y)) for y in years}
    stem, ext = os.path.splitext(output)
    ext = ext or suffix
    return {y: f"{stem}{ext}" if len(years) == 1 else f"{stem}_{y}{ext}" for y in years}


def write_cog(layer: Layer, time_index: int, output: str, colors: dict | None = None) -> str:
    """One year of a layer -> COG at `output` (local or gs://), window by window."""
    import rasterio.shutil
    from affine import Affine

    profile = dict(
        driver="GTiff",
        width=layer.width,
        height=layer.height,
        count=1,
        dtype=layer.dtype,
        crs=layer.crs,
        transform=Affine(*layer.transform),
        nodata=layer.nodata,
        tiled=True,
        blockxsize=BLOCK_SIZE,
        blockysize=BLOCK_SIZE,
        compress="deflate",
        BIGTIFF="IF_SAFER",
    )
    # The COG is built under a temporary name beside `output` and renamed over it once whole
    # (a gs:// output: in a local temporary file, uploaded in one piece): a full disk leaves the
    # old file, or nothing (transforms/core/atomic.py). The tiled intermediate is one too.
    with atomic.local_path(output) as local:
        tiled = atomic.temp_name(local)
        try:
            _write_tiled(layer, time_index, tiled, profile, colors)
            rasterio.shutil.copy(
                tiled,
                local,
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=BLOCK_SIZE,
                BIGTIFF="IF_SAFER",
                OVERVIEW_RESAMPLING="NEAREST" if layer.is_class else "AVERAGE",
                PREDICTOR="YES" if layer.dtype == "float32" else "NO",
            )
        finally:
            if os.path.exists(tiled):
                os.remove(tiled)
    return output


def _write_tiled(layer: Layer, time_index: int, tiled: str, profile: dict, colors) -> None:
    """The layer's windows into a plain tiled GeoTIFF at `tiled`, with its tags and colour map."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    array = layer.open_array()
    with rasterio.open(tiled, "w", **profile) as dst:
        for w in layer.windows():
            block = (
                np.full((w.rows, w.cols), layer.nodata, dtype=layer.dtype)
                if (w.row, w.col) in layer.skip
                else layer.read(array, time_index, w)
            )
            dst.write(block, 1, window=RioWindow(w.col, w.row, w.cols, w.rows))
        if colors and layer.dtype in ("uint8", "uint16"):
            table = {v: (*rgb, 255) for v, rgb in colors.items()}
            table.setdefault(int(layer.nodata), (0, 0, 0, 0))
            dst.write_colormap(1, table)
        dst.update_tags(
            EFM_PRODUCT="export", EFM_VERSION=store.tool_version()
        )  # what `--overwrite` may replace
        if layer.kind == "continuous":  # what the quicklook's colour bar and a GIS user read
            dst.update_tags(
                1,
                **{
                    k.upper(): str(layer.attrs[k])
                    for k in ("long_name", "units", "target")
                    if layer.attrs.get(k)
                },
            )
            dst.set_band_description(1, str(layer.attrs.get("long_name", layer.variable)))
            if layer.attrs.get("units"):
                dst.set_band_unit(1, str(layer.attrs["units"]))
        if layer.is_class and layer.labels:
            dst.update_tags(
                1, **{f"CLASS_{v}": str(lbl) for v, lbl in zip(layer.values, layer.labels)}
            )


def validate_cog(path: str) -> list[str]:
    """Problems that make `path` not a Cloud-Optimized GeoTIFF (empty list = valid).

    The checks of GDAL's validate_cloud_optimized_geotiff.py that matter to readers: tiled,
    overviews when larger than a block, the COG layout marker (IFDs first), and the image
    data of each overview placed before the full-resolution data.
    """
    import rasterio

    problems = []
    with rasterio.open(path) as src:
        if src.driver != "GTiff":
            return [f"driver is {src.driver}, not GTiff"]
        if not src.profile.get("tiled") and max(src.width, src.height) > BLOCK_SIZE:
            problems.append("not tiled")
        if src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
            problems.append("no LAYOUT=COG marker (IFDs are not at the start)")
        overviews = src.overviews(1)
        if max(src.width, src.height) > BLOCK_SIZE and not overviews:
            problems.append("no overviews")
        main = src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1)
        for i in range(len(overviews)):
            offset = src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=i)
            if main and offset and int(offset) > int(main):
                problems.append(f"overview {i} data is after the full-resolution data")
    return problems


def check_png_size(size, flag: str = "--png-size") -> int:
    """The quicklook's longest side in pixels: a whole number in 1..MAX_PNG_SIZE."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InputError(flag, f"expected a whole number of pixels, e.g. 1024, got {size!r}")
    if not 1 <= size <= MAX_PNG_SIZE:
        raise InputError(
            flag,
            f"must be 1..{MAX_PNG_SIZE} pixels (the quicklook is a preview drawn 800 px wide; "
            f"for full resolution open the GeoTIFF), got {size}",
        )
    return int(size)


def _legend_figure(image, extent_px, title: str, handles=None):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    height, width = extent_px
    fig_w = 8.0
    fig_h = (
        max(3.0, fig_w * height / max(width, 1))
        if not handles
        else max(3.0, (fig_w - 2.5) * height / max(width, 1))
    )
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=100)
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    if handles:
        ax.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            fontsize=8,
            frameon=False,
        )
    return fig


def quicklook_classes(
    cog_path: str, png: str, layer: Layer, colors: dict, year: int, max_size: int = 1024
) -> str:
    """A PNG of the class map read from the COG's overviews, with a legend naming the classes."""
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt
    import rasterio
    from rasterio.enums import Resampling

    step = max(1, math.ceil(max(layer.width, layer.height) / max_size))
    shape = (max(1, layer.height // step), max(1, layer.width // step))
    with rasterio.open(cog_path) as src:
        codes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    rgba = np.zeros(shape + (4,), dtype=np.uint8)
    for value, rgb in colors.items():
        rgba[codes == value] = (*rgb, 255)
    handles = [
        mpatches.Patch(color=np.array(colors[v]) / 255, label=str(lbl))
        for v, lbl in zip(layer.values, layer.labels)
    ]
    fig = _legend_figure(
        rgba, shape, f"{os.path.basename(layer.path.rstrip('/'))} — {year}", handles
    )
    _save(fig, png)
    plt.close(fig)
    return png


def colour_scale(layer: Layer, values: np.ndarray) -> tuple[str, float, float]:
    """(colormap, vmin, vmax): a fixed range when the variable states one (similarity: valid_range
    [-1, 1] on a diverging map centred on 0; confidence: [0, 1]) so maps of different runs compare;
    otherwise viridis over the 2–98 % range of the values shown."""
    if "valid_range" in layer.attrs:
        low, high = (float(v) for v in layer.attrs["valid_range"])
        return ("RdBu" if low < 0 < high else "viridis"), low, high
    if layer.variable == "confidence":
        return "viridis", 0.0, 1.0
    finite = values[np.isfinite(values)]
    if not finite.size:
        return "viridis", 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [2, 98]))
    return "viridis", low, high if high > low else low + 1.0


def quicklook_continuous(
    cog_path: str, png: str, layer: Layer, title: str, max_size: int = 1024
) -> str:
    """A PNG of a float map read from the COG's overviews, with a colour bar naming the quantity and units; no data is grey."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import rasterio
    from rasterio.enums import Resampling

    step = max(1, math.ceil(max(layer.width, layer.height) / max_size))
    shape = (max(1, layer.height // step), max(1, layer.width // step))
    with rasterio.open(cog_path) as src:
        data = src.read(1, out_shape=shape, resampling=Resampling.nearest, masked=True)
    image = np.ma.masked_invalid(data.astype(np.float32).filled(np.nan))
    name, vmin, vmax = colour_scale(layer, image.compressed())
    cmap = matplotlib.colormaps[name].with_extremes(bad="#bdbdbd")
    fig_w = 8.0
    fig, ax = plt.subplots(
        figsize=(fig_w, max(3.0, (fig_w - 1.5) * shape[0] / max(shape[1], 1))), dpi=100
    )
    im = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(f"{title}\n(grey = no data)", fontsize=10)
    ax.set_axis_off()
    units = str(layer.attrs.get("units", "")).strip()
    label = str(layer.attrs.get("long_name", layer.variable))
    label += f" [{'unitless' if units == '1' else units}]" if units else ""
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(label, fontsize=9)
    _save(fig, png)
    plt.close(fig)
    return png


def _strided(layer_like_windows, read, step: int, shape, channels: int):
    out = np.full(shape + (channels,), np.nan, dtype=np.float32)
    for w in layer_like_windows:
        r0 = -(-w.row // step) * step  # first multiple of step at or after the window's first row
        c0 = -(-w.col // step) * step
        if r0 >= w.row + w.rows or c0 >= w.col + w.cols:
            continue
        block = read(w)[r0 - w.row :: step, c0 - w.col :: step]
        rows, cols = (
            min(block.shape[0], shape[0] - r0 // step),
            min(block.shape[1], shape[1] - c0 // step),
        )
        out[r0 // step : r0 // step + rows, c0 // step : c0 // step + cols] = block[
            :rows, :cols
        ].reshape(rows, cols, channels)
    return out


def false_colour(
    layer: Layer, time_index: int, band_indices: list[int], max_size: int = 1024
) -> np.ndarray:
    """(h, w, 3) uint8 RGBA-ready image of three embedding bands, strided chunk by chunk, 2–98 % stretch."""
    from transforms.storage.readers import StoreReader

    step = max(1, math.ceil(max(layer.width, layer.height) / max_size))
    shape = (-(-layer.height // step), -(-layer.width // step))
    reader = StoreReader(layer.path)
    kept = [w for w in layer.windows() if (w.row, w.col) not in layer.skip]
    image = _strided(
        kept, lambda w: reader.read(time_index, layer.source(w))[..., band_indices], step, shape, 3
    )
    rgba = np.zeros(shape + (4,), dtype=np.uint8)
    valid = ~np.isnan(image).any(axis=-1)
    if valid.any():
        low, high = np.percentile(image[valid], [2, 98], axis=0)
        scaled = np.clip((image - low) / np.where(high > low, high - low, 1), 0, 1)
        rgba[..., :3] = np.nan_to_num(scaled * 255).astype(np.uint8)
        rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def quicklook_false_colour(
    layer: Layer,
    time_index: int,
    bands: list[str],
    band_indices: list[int],
    png: str,
    year: int,
    max_size: int = 1024,
) -> str:
    import matplotlib.pyplot as plt

    rgba = false_colour(layer, time_index, band_indices, max_size)
    fig = _legend_figure(
        rgba,
        rgba.shape[:2],
        f"{os.path.basename(layer.path.rstrip('/'))} — {year} — R,G,B = {', '.join(bands)}",
    )
    _save(fig, png)
    plt.close(fig)
    return png


def _save(fig, png: str) -> None:
    with atomic.open_write(png) as f:  # whole or the old one (transforms/core/atomic.py)
        # the text chunk is how `--overwrite` knows the file is ours (transforms/storage/outputs.py)
        fig.savefig(f, format="png", bbox_inches="tight", metadata={"efm_product": "quicklook"})
