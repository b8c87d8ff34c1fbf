"""The page's map layers as PNG tiles: the store (false colour), the preview (the k-NN's class per
pixel, in the classes' colours), the uncertainty (guide.uncertainty through a plasma ramp) and
--image. Their colour tables are built on first use: importing the page loads no matplotlib.
"""

from __future__ import annotations

import functools

import numpy as np

from label_page import guide, tiles
from label_page.validate import BadRequest
from label_page.view import knn_predict

LAYERS = ("store", "preview", "uncertainty", "image")


def draw(session, layer: str, z: int, x: int, y: int, bands: list[int] | None) -> bytes | None:
    """A layer's tile as PNG; None where it shows nothing (off the store, no model yet)."""
    if layer == "image":
        if session.image is None:
            raise BadRequest("tile: no --image was given")
        rgba = session.image.tile(z, x, y)
        return None if rgba is None else tiles.png(rgba)
    if layer not in LAYERS:
        raise BadRequest(f"tile: unknown layer {layer!r} ({', '.join(LAYERS)})")
    model = session.model  # a snapshot: one model for the whole tile
    if layer != "store" and model is None:
        return None
    got = session.tiles.values(z, x, y)
    if got is None:
        return None
    values = got.values  # each store pixel once: colours are spread to the tile by got.paint
    if layer == "store":
        rgba = session.view.colour(values[None], bands)[0]
    elif layer == "preview":
        classes = knn_predict(model[0], values) if len(values) else np.zeros(0, int)
        rgba = class_lut(session.colours())[classes]
    else:
        u = guide.uncertainty(model[1], model[2], values)
        rgba = uncertainty_lut()[np.clip((u * 255).round().astype(int), 0, 255)]
    return tiles.png(got.paint(rgba))


def class_lut(colours: list[str]) -> np.ndarray:
    """["#rrggbb", ...] of classes 0.. -> a (256, 4) uint8 RGBA table (other codes transparent)."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for k, c in enumerate(colours):
        lut[k] = [*(int(c[j : j + 2], 16) for j in (1, 3, 5)), 255]
    return lut


@functools.cache
def uncertainty_lut() -> np.ndarray:
    """0 (sure) transparent to 1 (on the boundary) opaque magenta-yellow (matplotlib's plasma);
    built on the first uncertainty tile (read-only: shared by every tile)."""
    import matplotlib

    lut = (matplotlib.colormaps["plasma"](np.linspace(0, 1, 256)) * 255).round().astype(np.uint8)
    lut[:, 3] = np.linspace(40, 255, 256).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut
