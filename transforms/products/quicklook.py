"""PNG quicklooks of an exported map: class maps with a legend and continuous maps with a colour
bar (read decimated from the COG's overviews), embedding stores in false colour (strided chunk by
chunk from the store)."""

from __future__ import annotations

import math
import os

import numpy as np

from transforms.core import atomic
from transforms.products.export_layer import Layer


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
