"""A product store's variable (class map, 0/1 mask, continuous map) or one band of an embedding
store (export_layer.py's `Layer`) -> Cloud-Optimized GeoTIFF per year (one file for a store
without time) with its colour table, + PNG quicklook (quicklook.py).

Written window by window: each store chunk is read and written into a tiled GeoTIFF, then
GDAL's COG driver copies it (block by block, building overviews) into the final layout.
Memory stays at a few chunks plus GDAL's block cache, whatever the area. Quicklooks are
read decimated (from the COG's overviews, or strided chunk by chunk from the store).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import TYPE_CHECKING

import fsspec
import numpy as np

from transforms.core import atomic, tuning
from transforms.core.errors import InputError
from transforms.products.colours import class_colors
from transforms.storage import store

if TYPE_CHECKING:
    from transforms.products.export_layer import Layer

BLOCK_SIZE = 512
DEFAULT_RGB = (
    "A01",
    "A16",
    "A09",
)  # the false-colour bands of the original talk / Earth Engine tutorial
# The quicklook's longest side in map pixels: it is drawn 8 in at 100 dpi (800 px wide), so more
# adds nothing on screen; 4096 keeps the image read for it near 200 MB (false colour, float32).
MAX_PNG_SIZE = 4096
# Float products get a numeric nodata tag: NaN tags are not honoured by every GIS tool, -9999 is.
DEFAULT_FLOAT_NODATA = -9999.0


def layer_colors(layer: Layer) -> dict[int, tuple[int, int, int]] | None:
    """Class maps: one colour per class; 0/1 masks: grey for 0, red for 1 (the flagged pixels stand out)."""
    if layer.kind == "mask" and tuple(layer.values) == (0, 1):
        return {0: (200, 200, 200), 1: (215, 48, 39)}
    return class_colors(layer.values) if layer.is_class else None


def parse_colors(text: str, layer, flag: str = "--colors") -> dict[int, tuple[int, int, int]]:
    """`water=#2b6cb0,forest=#1f5f2e` (or `;`-separated, as in `--tuning colors=...`) or a JSON
    file {label: colour} -> {class value: (r, g, b)}."""
    import matplotlib.colors

    if os.path.exists(text):
        with open(text) as f:
            pairs = list(json.load(f).items())
    else:
        pairs = [item.split("=", 1) for item in tuning.value_list(text)]
    by_label = {str(label): value for label, value in zip(layer.labels, layer.values)}
    out = {}
    for pair in pairs:
        if len(pair) != 2:
            raise InputError(flag, f"expected LABEL=COLOUR pairs, e.g. water=#2b6cb0, got {text!r}")
        label, colour = str(pair[0]).strip(), str(pair[1]).strip()
        if label not in by_label:
            raise InputError(flag, f"{label!r} is not a class of this map ({', '.join(by_label)})")
        try:
            out[by_label[label]] = tuple(
                int(round(255 * c)) for c in matplotlib.colors.to_rgb(colour)
            )
        except ValueError:
            raise InputError(flag, f"{colour!r} is not a colour (use #rrggbb or a name)") from None
    return out


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


@contextlib.contextmanager
def local_copy(path: str):
    """A local path to read `path` from: itself, or a temporary download removed afterwards."""
    if "://" not in path:
        yield path
        return
    fs, root = fsspec.core.url_to_fs(path)
    fd, local = tempfile.mkstemp(suffix=".tif")
    os.close(fd)
    try:
        fs.get_file(root, local)
        yield local
    finally:
        os.remove(local)
