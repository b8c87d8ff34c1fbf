"""The sample data's ground truth and labelled points, and scoring a class map against them.

`ground_truth.tif` holds the land-cover classes on the reference grid (uint8, 255 = none,
with a colour table); `labels.geojson` holds a few dozen points a class, clustered in the
interior of a few patches the way a person digitises training points, never in no-data.
"""

from __future__ import annotations

import json

import affine
import numpy as np
import pyproj

from sample_data.world import CLASS_COLOURS, CLASS_NAMES, World, apply
from transforms.core import atomic

NODATA_CLASS = 255


# ---------------------------------------------------------------------------------------
# Ground truth and labelled points
# ---------------------------------------------------------------------------------------


def write_ground_truth(world: World, path: str) -> None:
    """The class raster on the reference grid (uint8, 255 = none), with a colour table."""
    import rasterio

    spec = world.spec
    colormap = {
        k: tuple(int(CLASS_COLOURS[k][i : i + 2], 16) for i in (1, 3, 5)) + (255,)
        for k in range(spec.n_classes)
    }
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=spec.cols,
        height=spec.rows,
        count=1,
        dtype="uint8",
        crs=world.crs,
        transform=world.transform,
        nodata=NODATA_CLASS,
        compress="DEFLATE",
        tiled=True,
    ) as dst:
        dst.write(world.classes, 1)
        dst.write_colormap(1, colormap)
        dst.update_tags(classes=json.dumps(list(CLASS_NAMES[: spec.n_classes])))
        dst.set_band_description(1, "land cover class (index into the 'classes' tag)")


def labelled_points(world: World, rng: np.random.Generator, min_edge_px: float = 4.0) -> list[dict]:
    """A few dozen points a class, clustered inside a few patches, away from edges and no-data.

    Returns dicts with row, col (reference grid), lon, lat, class_id, label.
    """
    from scipy import ndimage

    spec = world.spec
    any_nodata = np.zeros((spec.rows, spec.cols), dtype=bool)
    for mask in world.nodata.values():
        any_nodata |= mask
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    points = []
    for k in range(spec.n_classes):
        mask = world.classes == k
        interior = ndimage.distance_transform_edt(mask) >= min_edge_px
        interior &= ~ndimage.binary_dilation(any_nodata, iterations=3)
        interior[:3, :] = interior[-3:, :] = False
        interior[:, :3] = interior[:, -3:] = False
        if not interior.any():
            interior = mask & ~any_nodata
        if not interior.any():
            continue
        patches, n_patches = ndimage.label(interior)
        sizes = np.bincount(patches.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        # like a person: several patches, the bigger ones more often, a handful of clicks in each
        chosen = order[: max(1, min(n_patches, spec.points_per_class // 4))]
        weights = np.sqrt(sizes[chosen].astype(float))
        counts = rng.multinomial(spec.points_per_class, weights / weights.sum())
        for patch, count in zip(chosen, counts):
            rr, cc = np.nonzero(patches == patch + 1)
            centre = rng.integers(len(rr))  # clicks cluster around a spot in the patch
            distance = (rr - rr[centre]) ** 2 + (cc - cc[centre]) ** 2
            nearby = np.argsort(distance)[: max(count * 60, 100)]
            picks = rng.choice(nearby, size=min(count, len(nearby)), replace=False)
            for i in picks:
                x, y = apply(
                    world.transform, cc[i] + rng.uniform(0.2, 0.8), rr[i] + rng.uniform(0.2, 0.8)
                )
                lon, lat = to_lonlat.transform(x, y)
                points.append(
                    {
                        "row": int(rr[i]),
                        "col": int(cc[i]),
                        "lon": float(lon),
                        "lat": float(lat),
                        "class_id": k,
                        "label": CLASS_NAMES[k],
                    }
                )
    return points


def write_points(points: list[dict], path: str) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(p["lon"], 8), round(p["lat"], 8)]},
            "properties": {"label": p["label"], "class_id": p["class_id"]},
        }
        for p in points
    ]
    atomic.write_bytes(path, json.dumps({"type": "FeatureCollection", "features": features}))


# ---------------------------------------------------------------------------------------
# Scoring a class map against the ground truth
# ---------------------------------------------------------------------------------------


def read_ground_truth(path: str) -> tuple[np.ndarray, affine.Affine, str, list[str]]:
    import rasterio

    with rasterio.open(path) as ds:
        return (
            ds.read(1),
            ds.transform,
            f"EPSG:{ds.crs.to_epsg()}",
            json.loads(ds.tags()["classes"]),
        )


def truth_on_grid(
    truth_path: str, crs: str, transform: affine.Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, list[str]]:
    """The ground-truth classes on another grid (nearest neighbour; exact when aligned)."""
    import rasterio.warp
    from rasterio.enums import Resampling

    classes, t, truth_crs, names = read_ground_truth(truth_path)
    out = np.full(shape, NODATA_CLASS, dtype=np.uint8)
    rasterio.warp.reproject(
        classes,
        out,
        src_transform=t,
        src_crs=truth_crs,
        src_nodata=NODATA_CLASS,
        dst_transform=transform,
        dst_crs=crs,
        dst_nodata=NODATA_CLASS,
        resampling=Resampling.nearest,
    )
    return out, names


def point_pixels(
    points_path: str, crs: str, transform: affine.Affine, shape: tuple[int, int], radius_px: int = 1
) -> np.ndarray:
    """Pixels within `radius_px` of a labelled point (bool): what held-out scoring leaves out."""
    with open(points_path) as f:
        coords = np.array(
            [feat["geometry"]["coordinates"][:2] for feat in json.load(f)["features"]], dtype=float
        ).reshape(-1, 2)
    mask = np.zeros(shape, dtype=bool)
    if not len(coords):
        return mask
    xs, ys = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
        coords[:, 0], coords[:, 1]
    )
    cols, rows = apply(~transform, xs, ys)
    for r, c in zip(np.floor(rows).astype(int), np.floor(cols).astype(int)):
        mask[
            max(0, r - radius_px) : r + radius_px + 1, max(0, c - radius_px) : c + radius_px + 1
        ] = True
    return mask


def score(
    predicted: np.ndarray,
    predicted_labels: list[str],
    fill: int,
    truth: np.ndarray,
    truth_names: list[str],
    exclude: np.ndarray | None = None,
) -> dict:
    """Held-out accuracy of a class map against the ground truth (both on one grid).

    `predicted` holds indices into `predicted_labels` (`fill` = no data); pixels in `exclude`
    (the labelled points) and pixels without data on either side are left out.
    """
    lookup = np.full(
        max(int(predicted.max(initial=0)), fill, len(predicted_labels)) + 1, -1, dtype=np.int64
    )
    for value, label in enumerate(predicted_labels):
        lookup[value] = truth_names.index(label) if label in truth_names else -2
    mapped = lookup[predicted]
    scored = (predicted != fill) & (truth != NODATA_CLASS) & (mapped != -1)
    if exclude is not None:
        scored &= ~exclude
    hits = (mapped == truth) & scored
    per_class = {}
    for k, name in enumerate(truth_names):
        of_class = scored & (truth == k)
        if of_class.any():
            per_class[name] = float(hits[of_class].sum() / of_class.sum())
    n = int(scored.sum())
    return {
        "accuracy": float(hits.sum() / n) if n else float("nan"),
        "pixels": n,
        "recall": per_class,
    }


def write_parcels(world, path: str, bbox, side: int = 32, gap: int = 4) -> int:
    """Field parcels (efm zonal's polygons): squares of `side` px with `gap` px lanes between them,
    over the reference grid, as lon/lat polygons (GeoJSON); properties `parcel_id` and `crop` (the
    ground truth's most common class under the parcel), those wholly inside `bbox` (the area the
    sample data's extracts cover, lon/lat). Parcels near the zone boundary cross it;
    the parcel nearest the grid's centre has a square hole (a farmyard). Returns how many."""
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    t, (rows, cols) = world.transform, world.classes.shape
    features, centre = [], (rows / 2, cols / 2)
    starts = [
        (r, c)
        for r in range(gap, rows - side, side + gap)
        for c in range(gap, cols - side, side + gap)
    ]
    holed = min(
        starts, key=lambda rc: abs(rc[0] + side / 2 - centre[0]) + abs(rc[1] + side / 2 - centre[1])
    )

    def ring(r0, c0, r1, c1):
        corners = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
        return [[round(v, 9) for v in to_lonlat.transform(*(t * (c, r)))] for c, r in corners]

    for r, c in starts:
        patch = world.classes[r : r + side, c : c + side]
        crop = CLASS_NAMES[int(np.bincount(patch.ravel()).argmax())]
        rings = [ring(r, c, r + side, c + side)]
        west, south, east, north = bbox
        if not all(west <= x <= east and south <= y <= north for x, y in rings[0]):
            continue
        if (r, c) == holed:
            q = side // 4
            rings.append(ring(r + q, c + q, r + side - q, c + side - q)[::-1])
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {"parcel_id": len(features) + 1, "crop": crop},
            }
        )
    atomic.write_bytes(path, json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)
