"""The Earth Engine emulator's default synthetic scene (UTM 31N, land cover a checkerboard): a box
inside it, labelled points on it and a class map's accuracy against it, from the generator's own truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import xarray as xr

from emulators.earthengine.synthetic import TileSpec, default_tiles, land_cover

SEED = 5


CRS = "EPSG:32631"


def area_bbox(margin_m: float = 300.0) -> str:
    """W,S,E,N in degrees, well inside the two side-by-side 31N tiles of the synthetic collection."""
    tiles = [t for t in default_tiles() if t.crs == CRS]
    left, top = min(t.x0 for t in tiles) + margin_m, max(t.y0 for t in tiles) - margin_m
    right = max(t.x0 + t.width * t.scale for t in tiles) - margin_m
    bottom = min(t.y0 - t.height * t.scale for t in tiles) + margin_m
    to_lonlat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    (w, s), (e, n) = to_lonlat.transform(left, bottom), to_lonlat.transform(right, top)
    dx, dy = (e - w) * 0.05, (n - s) * 0.05  # the box is curved in UTM: stay inside the tiles
    return f"{w + dx:.6f},{s + dy:.6f},{e - dx:.6f},{n - dy:.6f}"


def truth_on_grid(ds: xr.Dataset) -> np.ndarray:
    """The synthetic land-cover class of every pixel of a store's grid (a 250 m checkerboard in UTM)."""
    x, y = ds["x"].values, ds["y"].values
    scale = float(x[1] - x[0])
    grid = TileSpec(
        "grid", CRS, "31N", float(x[0] - scale / 2), float(y[0] + scale / 2), len(x), len(y), scale
    )
    return land_cover(grid, SEED)


def labelled_points_csv(n: int = 400, seed: int = 1) -> bytes:
    """Points at random pixel centres inside the area, labelled with their land-cover class, as lon/lat CSV."""
    w, s, e, n_ = map(float, area_bbox(margin_m=600.0).split(","))
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    (left, bottom), (right, top) = to_utm.transform(w, s), to_utm.transform(e, n_)
    rng = np.random.default_rng(seed)
    xs = np.floor(rng.uniform(left, right, n) / 10) * 10 + 5
    ys = np.floor(rng.uniform(bottom, top, n) / 10) * 10 + 5
    labels = [
        f"class_{land_cover(TileSpec('p', CRS, '31N', x - 5, y + 5, 1, 1), SEED)[0, 0]}"
        for x, y in zip(xs, ys)
    ]
    lon, lat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(xs, ys)
    return pd.DataFrame({"lon": lon, "lat": lat, "label": labels}).to_csv(index=False).encode()


def map_accuracy(classes_path: str) -> tuple[float, int]:
    """Share of classified pixels whose class is the land cover the embeddings were made from."""
    ds = xr.open_zarr(classes_path, consolidated=True, mask_and_scale=False)
    labels = [str(v) for v in ds["class"].attrs["class_labels"]]
    fill = int(ds["class"].attrs.get("fill_value", 255))
    predicted = np.asarray(ds["class"].isel(time=0).values)
    valid = predicted != fill
    names = np.array(labels + ["?"] * (256 - len(labels)))
    truth = np.char.add("class_", truth_on_grid(ds).astype(str))
    return float((names[predicted][valid] == truth[valid]).mean()), int(valid.sum())
