"""The sample data's numeric field, GEDI-like points, reference points and known change.

* biomass (Mg/ha, float32, on the reference grid): each class's typical above-ground
  biomass, mixed at class edges as the embeddings are, scaled by one of the embedding's
  texture fields (so part of the within-class variation is learnable, as canopy structure
  is) plus smooth noise the embeddings do not see; deterministic from the seed;
* gedi.geojson: GEDI-like footprints, scattered over the valid area, each with `agbd`
  = the field at its pixel (what `efm sample --keep-columns agbd` carries);
* refs.geojson: the forest labelled points, references for `efm similarity`;
* change: in the last year a few blobs of the area are cleared (forest and the rest become
  bare, bare becomes grassland); change_truth.tif marks them (1 = changed, 0 = not).
"""

from __future__ import annotations

import json

import numpy as np
import pyproj

from sample_data.world import World, apply, blobs, seeded, smooth_noise
from transforms.core import atomic

# typical above-ground biomass of each class, Mg/ha (water .. shrubland)
CLASS_BIOMASS = np.array([0.0, 220.0, 25.0, 15.0, 8.0, 2.0, 70.0, 45.0], dtype=np.float32)
BARE, GRASSLAND = 5, 2
CHANGE_FRACTION = 0.03  # of the area, cleared in the last year
CHANGE_NODATA = 255


def biomass_field(world: World) -> np.ndarray:
    """(rows, cols) float32 Mg/ha, of the first year's land cover."""
    spec = world.spec
    mean = np.tensordot(CLASS_BIOMASS[: spec.n_classes], world.weights, axes=1)
    noise = smooth_noise((spec.rows, spec.cols), 6.0, seeded(spec, "biomass"))
    return np.clip(mean * (1.0 + 0.25 * world.texture[1] + 0.08 * noise), 0.0, None).astype(
        np.float32
    )


def change_classes(world: World) -> tuple[np.ndarray, np.ndarray]:
    """The last year's classes and the changed mask (bool): blobs cleared to bare."""
    spec = world.spec
    cleared = blobs((spec.rows, spec.cols), CHANGE_FRACTION, seeded(spec, "change"), sigma_px=10.0)
    later = world.classes.copy()
    later[cleared] = np.where(world.classes[cleared] == BARE, GRASSLAND, BARE)
    return later, later != world.classes


def gedi_points(world: World, field: np.ndarray, n: int, rng: np.random.Generator) -> list[dict]:
    """`n` footprints at random valid pixels (a 1-px margin), `agbd` from the field."""
    spec = world.spec
    valid = np.ones((spec.rows, spec.cols), dtype=bool)
    for mask in world.nodata.values():
        valid &= ~mask
    valid[:2, :] = valid[-2:, :] = False
    valid[:, :2] = valid[:, -2:] = False
    rr, cc = np.nonzero(valid)
    pick = rng.choice(len(rr), size=min(n, len(rr)), replace=False)
    to_lonlat = pyproj.Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    xs, ys = apply(world.transform, cc[pick] + 0.5, rr[pick] + 0.5)
    lon, lat = to_lonlat.transform(xs, ys)
    return [
        {"lon": float(a), "lat": float(b), "agbd": round(float(field[r, c]), 2)}
        for a, b, r, c in zip(lon, lat, rr[pick], cc[pick])
    ]


def write_gedi(points: list[dict], path: str) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(p["lon"], 8), round(p["lat"], 8)]},
            "properties": {"agbd": p["agbd"]},
        }
        for p in points
    ]
    atomic.write_bytes(path, json.dumps({"type": "FeatureCollection", "features": features}))


def write_raster(
    world: World, array: np.ndarray, path: str, description: str, units: str = "", nodata=None
) -> None:
    import rasterio

    spec = world.spec
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=spec.cols,
        height=spec.rows,
        count=1,
        dtype=array.dtype.name,
        crs=world.crs,
        transform=world.transform,
        nodata=nodata,
        compress="DEFLATE",
        tiled=True,
    ) as dst:
        dst.write(array, 1)
        dst.set_band_description(1, description)
        if units:
            dst.update_tags(units=units)


def read_on_grid(path: str, crs: str, transform, shape: tuple[int, int], fill) -> np.ndarray:
    """A raster of the sample data on another grid (nearest neighbour; exact when aligned)."""
    import rasterio
    import rasterio.warp
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        source = ds.read(1)
        out = np.full(shape, fill, dtype=source.dtype)
        rasterio.warp.reproject(
            source,
            out,
            src_transform=ds.transform,
            src_crs=ds.crs,
            dst_transform=transform,
            dst_crs=crs,
            resampling=Resampling.nearest,
        )
    return out


# ---------------------------------------------------------------------------------------
# Scoring the demo's continuous products against what was generated
# ---------------------------------------------------------------------------------------


def r2_score(predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> dict:
    """R² (1 - SS_res / SS_tot) and RMSE of `predicted` against `truth` over `scored` pixels with data."""
    scored = scored & np.isfinite(predicted) & np.isfinite(truth)
    p, t = predicted[scored].astype(np.float64), truth[scored].astype(np.float64)
    ss_res, ss_tot = float(((p - t) ** 2).sum()), float(((t - t.mean()) ** 2).sum())
    return {
        "r2": 1.0 - ss_res / ss_tot,
        "rmse": float(np.sqrt(ss_res / len(t))),
        "pixels": int(len(t)),
    }


def similarity_contrast(
    similarity: np.ndarray, truth: np.ndarray, reference: int, scored: np.ndarray
) -> dict:
    """Mean similarity of the reference class's pixels and of the other classes' (truth 255 = none)."""
    scored = scored & np.isfinite(similarity) & (truth != 255)
    of_class = scored & (truth == reference)
    return {
        "reference": float(similarity[of_class].mean()),
        "others": float(similarity[scored & ~of_class].mean()),
        "pixels": int(scored.sum()),
    }


def change_score(changed: np.ndarray, fill: int, truth: np.ndarray) -> dict:
    """Recall (share of truly changed pixels found) and precision of a `changed` mask (1 = changed)."""
    scored = (changed != fill) & (truth != CHANGE_NODATA)
    found, true = scored & (changed == 1), scored & (truth == 1)
    hits = int((found & true).sum())
    return {
        "recall": hits / max(int(true.sum()), 1),
        "precision": hits / max(int(found.sum()), 1),
        "changed": int(true.sum()),
        "flagged": int(found.sum()),
    }
