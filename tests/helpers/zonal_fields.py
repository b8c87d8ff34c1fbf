"""Fields over a synthetic store for zonal statistics, each polygon a case of the pixel-centre rule,
and the expected table from rasterio's geometry_mask on the whole array, polygon by polygon."""

from __future__ import annotations

import geopandas
import numpy as np
import pandas as pd
import shapely
from rasterio import features

from tests.helpers.store_factory import BANDS

MEDIAN = [f"{b}_median" for b in BANDS]


STD = [f"{b}_std" for b in BANDS]


def xy(s, col, row):
    """Grid coordinates (pixel col, row: edges at integers, centres at +0.5) -> store CRS."""
    return s.grid.x0 + col * s.grid.scale, s.grid.y0 - row * s.grid.scale


def box(s, c0, r0, c1, r1):
    (x0, y0), (x1, y1) = xy(s, c0, r0), xy(s, c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def disc(s, col, row, radius_px):
    return shapely.Point(*xy(s, col, row)).buffer(radius_px * s.grid.scale, quad_segs=7)


def shapes(s) -> dict:
    """name -> polygon, each a case of the rule."""
    rng = np.random.default_rng(7)
    ring = disc(s, 128.3, 127.6, 40).difference(disc(s, 130.1, 126.2, 12))  # hole; 4 chunks
    return {
        "crosses_with_hole": ring,
        "multipolygon": shapely.MultiPolygon(
            [disc(s, 20.2, 20.7, 9), box(s, 200.25, 200.3, 240.6, 259.1)]
        ),
        "first_chunk_no_data_2022": box(s, 20.3, 60.2, 60.4, 100.7),
        "inside_the_hole": box(s, 124.2, 120.2, 139.7, 133.6),
        "smaller_than_a_pixel": box(s, 50.05, 200.05, 50.3, 200.35),  # misses the centre
        "over_the_grid_edge": disc(s, 255.0, 295.0, 17),
        "outside": box(s, 400, 400, 420, 420),
        "overlap_a": disc(s, 180.4, 60.6, 14),
        "overlap_b": disc(s, 190.7, 66.1, 14),
        # one column / row of centres (127.5) in the chunk before the one holding the rest
        "one_column_in_chunk_0": box(s, 127.2, 200.3, 140.6, 210.4),
        "one_row_in_chunk_0": box(s, 200.3, 127.2, 210.6, 140.4),
        # two polygons sharing an edge through a column of pixel centres (175.5)
        "shared_edge_a": box(s, 160.2, 140.3, 175.5, 160.7),
        "shared_edge_b": box(s, 175.5, 140.3, 190.6, 160.7),
        **{
            f"random_{i}": disc(s, *rng.uniform([0, 0], [260, 300]), rng.uniform(1, 30))
            for i in range(12)
        },
    }


def fields(s, crs=None) -> geopandas.GeoDataFrame:
    shp = shapes(s)
    frame = geopandas.GeoDataFrame(
        {"name": list(shp), "crop": np.arange(len(shp)) % 3},
        geometry=list(shp.values()),
        crs=s.grid.crs,
    )
    return frame if crs is None else frame.to_crs(crs)


def expected(s, geometry, all_touched=False) -> pd.DataFrame:
    """One row per polygon and year, from geometry_mask on the whole array, polygon by polygon."""
    rows = []
    for i, geom in enumerate(geometry):
        inside = ~features.geometry_mask(
            [geom], (s.grid.height, s.grid.width), s.grid.transform, all_touched=all_touched
        )
        for t, year in enumerate(s.years):
            v = s.values[t][inside].astype(np.float64)
            v = v[~np.isnan(v).any(axis=1)]
            nan = np.full(len(BANDS), np.nan)
            rows.append(
                {
                    "polygon_id": i,
                    "year": year,
                    "pixel_count": len(v),
                    **dict(zip(BANDS, v.mean(axis=0) if len(v) else nan)),
                    **dict(zip(STD, v.std(axis=0) if len(v) else nan)),
                    **dict(zip(MEDIAN, np.median(v, axis=0) if len(v) else nan)),
                }
            )
    return pd.DataFrame(rows)


def check(table: pd.DataFrame, want: pd.DataFrame, stats=("mean", "std", "median")):
    table = table.sort_values(["polygon_id", "year"]).reset_index(drop=True)
    want = want.sort_values(["polygon_id", "year"]).reset_index(drop=True)
    np.testing.assert_array_equal(table["polygon_id"], want["polygon_id"])
    np.testing.assert_array_equal(table["year"], want["year"])
    np.testing.assert_array_equal(table["pixel_count"], want["pixel_count"])
    columns = {"mean": list(BANDS), "std": STD, "median": MEDIAN}
    for stat in stats:
        np.testing.assert_allclose(
            table[columns[stat]].to_numpy(np.float64),
            want[columns[stat]].to_numpy(),
            rtol=1e-5,
            atol=1e-6,
            err_msg=stat,
        )


def whole_grid_chunk(s, fids, geometry, single, *, emit, stats=("mean", "std", "median"), **kw):
    """zonal_stats.zonal_chunk over store `s`'s whole grid as one chunk, every year and band (its
    values read band-first from the test's array), pixel centres only; -> its Crossing or None.
    `geometry`: shapely polygons; `kw`: zonal_chunk's keywords (group, ...)."""
    from transforms.products import zonal_stats

    return zonal_stats.zonal_chunk(
        lambda year: np.moveaxis(s.values[s.years.index(year)], -1, 0),
        s.years,
        (0, 0, s.grid.height, s.grid.width),
        s.grid.transform,
        fids,
        shapely.to_wkb(geometry),
        single,
        stats,
        BANDS,
        False,
        emit=emit,
        **kw,
    )
