"""Extract against the Earth Engine emulator's synthetic images: the mosaic they make read directly
(numpy indexing, not the code under test), a box inside them, and the emulator changed under a store."""

from __future__ import annotations

import numpy as np
import pyproj

from tests.helpers.runners import FNAPI

YEARS = (2021, 2022)


def same_zone_images(images, crs="EPSG:32631"):
    return [i for i in images if i["crs"] == crs]


def bbox_inside(images, year, crs="EPSG:32631", margin_px=15):
    """A lon/lat box well inside the union of the year's tiles in one zone."""
    tiles = [i for i in same_zone_images(images, crs) if i["start"].startswith(str(year))]
    lefts, tops, rights, bottoms = [], [], [], []
    for t in tiles:
        a, _, c, _, e, f = t["transform"]
        bands, h, w = t["data"].shape
        lefts.append(c), tops.append(f), rights.append(c + a * w), bottoms.append(f + e * h)
    left, right, bottom, top = (
        min(lefts) + margin_px * 10,
        max(rights) - margin_px * 10,
        max(bottoms) + margin_px * 10,
        min(tops) - margin_px * 10,
    )
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    (w, s), (e, n) = to_lonlat.transform(left, bottom), to_lonlat.transform(right, top)
    # Shrink a little so the box, curved in UTM, stays inside the tiles.
    dx, dy = (e - w) * 0.05, (n - s) * 0.05
    return f"{w + dx},{s + dy},{e - dx},{n - dy}"


def expected_array(images, ds):
    """Direct indexing: for every grid pixel, the source pixel of the tile that holds it."""
    out = np.full(ds["embedding"].shape, np.nan, dtype=np.float32)
    xs, ys = ds["x"].values, ds["y"].values
    for t_index, year in enumerate(YEARS):
        for image in same_zone_images(images):  # later images win, as in a mosaic
            if not image["start"].startswith(str(year)):
                continue
            a, _, c, _, e, f = image["transform"]
            cols = np.floor((xs - c) / a).astype(int)
            rows = np.floor((ys - f) / e).astype(int)
            _, h, w = image["data"].shape
            ok_c, ok_r = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
            block = image["data"][:, rows[ok_r]][:, :, cols[ok_c]]  # (bands, r, c)
            block = np.moveaxis(block, 0, -1)
            target = out[t_index][np.ix_(np.flatnonzero(ok_r), np.flatnonzero(ok_c))]
            valid = ~np.isnan(block).all(axis=-1, keepdims=True)
            out[t_index][np.ix_(np.flatnonzero(ok_r), np.flatnonzero(ok_c))] = np.where(
                valid, block, target
            )
    return out


def ee_argv(emu, output, bbox, *extra) -> list[str]:
    return [
        "--bbox",
        bbox,
        "--years",
        "2021",
        "--output",
        str(output),
        "--tuning",
        "chunk_size=128",
        "--tuning",
        f"ee_api_url={emu.url}",
        "--tuning",
        "ee_project=test-project",
        "--tuning",
        "retry_initial_delay=0.01",
        *extra,
        *FNAPI,
    ]


def ee_change(emu, images, change):
    tile = next(i for i in images if i["crs"] == "EPSG:32631")
    if change == "an image added":
        emu.add_image(**{**tile, "image_id": tile["image_id"] + "_reprocessed"})
    else:  # the same id, reprocessed: a new version
        emu.add_image(**{**tile, "properties": {"system:version": 1800000000000000}})
