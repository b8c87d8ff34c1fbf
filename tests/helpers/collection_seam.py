"""Points and polygons across the two-zone collection's seam (31N | 32N at 6 E,
tests/helpers/collections.py), the member pixel each falls on, and zonal's expected values
(rasterio's geometry_mask and pyproj on the members' own arrays)."""

from __future__ import annotations

import json

import numpy as np
import pyproj

CELLS = ("31N", "32N")


MEMBER = {"31N": "utm-31n.zarr", "32N": "utm-32n.zarr"}


CRS = {"31N": "EPSG:32631", "32N": "EPSG:32632"}


def cell_of(lon):
    return "31N" if lon < 6.0 else "32N"


def pixel_of(tc, cell, lon, lat):
    """(row, col) of a lon/lat point in a member's grid, by its own affine (floor)."""
    g = tc.members[cell].grid
    x, y = pyproj.Transformer.from_crs("EPSG:4326", g.crs, always_xy=True).transform(lon, lat)
    return int(np.floor((g.y0 - y) / g.scale)), int(np.floor((x - g.x0) / g.scale))


def write_points(path, lonlats, labels=None):
    features = [
        {
            "type": "Feature",
            "properties": {"kind": (labels[i] if labels else "ref"), "n": i},
            "geometry": {"type": "Point", "coordinates": list(p)},
        }
        for i, p in enumerate(lonlats)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(path)


def points_near_seam(tc, n=12, seed=0):
    """Points on pixels with data in both years, half each side of the seam, some in the strip."""
    rng = np.random.default_rng(seed)
    out = []
    for lon in [5.9995, 6.0004, 5.99995, 6.00003]:  # within a pixel or two of the seam
        out.append((lon, 45.01))
    while len(out) < n:
        lon, lat = rng.uniform(5.98, 6.02), rng.uniform(45.002, 45.018)
        out.append((float(lon), float(lat)))
    keep = []
    for lon, lat in out:
        c = cell_of(lon)
        r, k = pixel_of(tc, c, lon, lat)
        if tc.members[c].valid[:, r, k].all():
            keep.append((lon, lat))
    return keep


def seam_polygons():
    """Polygons in lon/lat crossing the seam (one with a hole, one in a single member)."""
    import shapely

    outer = shapely.box(5.99, 45.004, 6.012, 45.016)
    hole = shapely.box(5.998, 45.008, 6.003, 45.012)
    return [
        shapely.Polygon(outer.exterior.coords, [hole.exterior.coords]),
        shapely.box(5.9995, 45.001, 6.0005, 45.019),  # a thin strip on the seam
        shapely.Polygon([(5.985, 45.003), (6.015, 45.005), (6.0, 45.017)]),
        shapely.box(6.005, 45.002, 6.009, 45.006),  # in 32N only
        shapely.box(5.9997, 45.0103, 6.0004, 45.0107),  # small: in one chunk of each member
    ]


def expected_zonal(tc, geoms, years=(0, 1)):
    """Per polygon and year: (pixel count, mean, std, median) over every member's pixels that the
    polygon's centre rule takes (rasterio.features.geometry_mask) and whose centre is in the
    member's cell (tc.owned, pyproj)."""
    import affine
    import geopandas
    from rasterio import features

    out = {}
    for i, geom in enumerate(geoms):
        for t in years:
            values = []
            for cell in CELLS:
                s = tc.members[cell]
                g = s.grid
                projected = geopandas.GeoSeries([geom], crs="EPSG:4326").to_crs(g.crs).iloc[0]
                inside = features.geometry_mask(
                    [projected],
                    out_shape=(g.height, g.width),
                    transform=affine.Affine(g.scale, 0, g.x0, 0, -g.scale, g.y0),
                    invert=True,
                )
                pick = inside & tc.owned[cell] & s.valid[t]
                values.append(s.values[t][pick].astype(np.float64))
            v = np.concatenate(values)
            out[i, t] = (len(v), v.mean(0), v.std(0), np.median(v, 0))
    return out
