"""`efm zonal`'s rasterisation of one group of a chunk's polygons: which pixels each polygon owns.

The rule: a pixel belongs to a polygon when its CENTRE falls inside the polygon (GDAL's
rasterisation rule, the same as `rasterio.features.geometry_mask`); with `all_touched`, every
pixel the polygon touches. Polygons that may share a pixel go to different layers (label
images), so each polygon gets all its pixels, as if alone. A group's label images are turned at
once into (pixel, owner) arrays, so that what a chunk keeps across its years is bounded by the
chunk's pixels (times the overlap), not by its polygons.
"""

from __future__ import annotations

import numpy as np


def layers(geometry: np.ndarray, near: float = 0.0) -> list[np.ndarray]:
    """Split polygons into layers in which no two can share a pixel, so that each layer
    rasterises into one label image and every polygon gets all its pixels, as if alone.
    Centre rule: polygons that meet (touching counts: a centre on a shared edge). All touched
    (`near` = a pixel's diagonal): polygons closer than that can touch the same pixel."""
    import shapely

    n = len(geometry)
    if n < 2:
        return [np.arange(n)]
    tree = shapely.STRtree(geometry)
    if near > 0:
        a, b = tree.query(geometry, predicate="dwithin", distance=near)
    else:
        a, b = tree.query(geometry, predicate="intersects")
    pair = a < b
    a, b = a[pair], b[pair]
    if len(a) == 0:
        return [np.arange(n)]
    colour = np.zeros(n, dtype=np.int64)
    neighbours: dict[int, list[int]] = {}
    for i, j in zip(a.tolist(), b.tolist()):
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    for i in sorted(neighbours):  # greedy colouring of the polygons that meet another
        used = {colour[j] for j in neighbours[i] if j < i}
        k = 0
        while k in used:
            k += 1
        colour[i] = k
    return [np.flatnonzero(colour == k) for k in range(int(colour.max()) + 1)]


def _rings(coords: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """The rings' coordinate arrays, by slicing (np.split: ~3x the CPU, a swapaxes per ring)."""
    bounds = offsets.tolist()
    return [coords[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _shapes(geometry: np.ndarray) -> list[dict]:
    """Polygons -> GeoJSON-like dicts for rasterio, built from shapely's ragged arrays (rings as
    coordinate arrays): ~5x cheaper than each geometry's __geo_interface__."""
    import shapely

    if len(geometry) == 0:
        return []
    kind, coords, offsets = shapely.to_ragged_array(geometry)
    if kind == shapely.GeometryType.POLYGON:
        rings, polys = offsets
        ring = _rings(coords, rings)
        return [
            {"type": "Polygon", "coordinates": ring[a:b]}
            for a, b in zip(polys[:-1].tolist(), polys[1:].tolist())
        ]
    rings, parts, polys = offsets  # MultiPolygon (polygons among them promoted)
    ring = _rings(coords, rings)
    part = [ring[a:b] for a, b in zip(parts[:-1].tolist(), parts[1:].tolist())]
    return [
        {"type": "MultiPolygon", "coordinates": part[a:b]}
        for a, b in zip(polys[:-1].tolist(), polys[1:].tolist())
    ]


def label_images(
    geometry, shape, transform, all_touched: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(label image int32: 0 none, i+1 = polygon members[i]; members)] per layer."""

    import gc

    near = float(np.hypot(transform.a, transform.e) + np.hypot(transform.b, transform.d))
    paused = gc.isenabled()  # ~4 containers a polygon, none cyclic: a full collection each
    gc.disable()  # ~700 of them re-scanned every live object (~20 % of the chunk's CPU)
    try:
        return _label_images(geometry, shape, transform, all_touched, near)
    finally:
        if paused:
            gc.enable()


def _label_images(geometry, shape, transform, all_touched: bool, near: float):
    from rasterio import features

    shapes = _shapes(geometry)
    out = []
    for members in layers(geometry, near if all_touched else 0.0):
        label = features.rasterize(
            [(shapes[m], k) for k, m in enumerate(members.tolist(), start=1)],
            out_shape=shape,
            transform=transform,
            fill=0,
            all_touched=all_touched,
            dtype=np.int32,
        )
        out.append((label, members))
    return out


def _window(geometry, shape, transform):
    """The rows [r0, r1) and cols [c0, c1) of `shape` the polygons' bounds reach, one pixel wider
    on each side (a superset of every pixel they may own or touch)."""
    import shapely

    x0, y0, x1, y1 = shapely.total_bounds(geometry)
    if not np.isfinite([x0, y0, x1, y1]).all():
        return 0, shape[0], 0, shape[1]
    inverse = ~transform
    cols, rows = zip(*(inverse @ (x, y) for x in (x0, x1) for y in (y0, y1)))
    r0 = int(np.clip(np.floor(min(rows)) - 1, 0, shape[0]))
    r1 = int(np.clip(np.ceil(max(rows)) + 1, 0, shape[0]))
    c0 = int(np.clip(np.floor(min(cols)) - 1, 0, shape[1]))
    c1 = int(np.clip(np.ceil(max(cols)) + 1, 0, shape[1]))
    return r0, r1, c0, c1


def pixel_owners(geometry, shape, transform, all_touched: bool, keep=None):
    """Polygons -> [(pix, owner)] per layer: the flat indices (in `shape`) of the pixels inside a
    polygon and the index of that polygon in `geometry`, int32 (int64 beyond 2**31 pixels);
    `keep` (shape) bool: only these pixels count. The label images cover only the window the
    polygons' bounds reach (a group of neighbouring polygons: a strip of the chunk, not all of
    it), shifted by whole pixels."""
    import affine

    index = np.int32 if shape[0] * shape[1] < 2**31 else np.int64
    r0, r1, c0, c1 = _window(geometry, shape, transform)
    if r1 <= r0 or c1 <= c0:
        return []
    window = transform @ affine.Affine.translation(c0, r0)
    out = []
    for label, members in label_images(geometry, (r1 - r0, c1 - c0), window, all_touched):
        if keep is not None:
            label[~keep[r0:r1, c0:c1]] = 0
        lab = label.ravel()
        at = np.flatnonzero(lab)
        if len(at):
            width = c1 - c0
            pix = (at // width + r0) * shape[1] + (at % width + c0)
            out.append((pix.astype(index), members[lab[at] - 1].astype(np.int32)))
        del label, lab
    return out
