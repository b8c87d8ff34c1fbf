"""Grid planning: pure functions, with property tests."""

import datetime
import json

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core import grid as g
from transforms.core.errors import InputError


def test_parse_bbox_ok():
    assert g.parse_bbox("5.9, 45.8,6.2,46.0").bounds == (5.9, 45.8, 6.2, 46.0)


@pytest.mark.parametrize(
    "text, words",
    [
        ("6.2,45.8,5.9,46.0", "inverted"),
        ("5.9,46.0,6.2,45.8", "inverted"),
        ("5.9,45.8,6.2", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("190,0,191,1", "out of range"),
        ("0,-95,1,1", "out of range"),
        ("nan,0,1,1", "finite"),
    ],
)
def test_parse_bbox_errors(text, words):
    with pytest.raises(InputError, match=words) as info:
        g.parse_bbox(text)
    assert str(info.value).startswith("--bbox: ") and "\n" not in str(info.value)


def test_parse_years():
    today = datetime.date(2026, 11, 24)
    assert g.parse_years("2021,2022", today) == [2021, 2022]
    assert g.parse_years("2019-2021, 2024", today) == [2019, 2020, 2021, 2024]
    for bad, words in [
        ("2016", "before 2017"),
        ("2027", "future"),
        ("2022-2020", "backwards"),
        ("twenty", "expected"),
    ]:
        with pytest.raises(InputError, match=words):
            g.parse_years(bad, today)


@pytest.mark.parametrize(
    "lon, lat, code",
    [
        (3.0, 45.0, "EPSG:32631"),
        (-122.4, 37.7, "EPSG:32610"),
        (151.2, -33.9, "EPSG:32756"),
        (180.0, 0.0, "EPSG:32660"),
    ],
)
def test_utm_crs_for(lon, lat, code):
    assert g.utm_crs_for(lon, lat) == code


def test_plan_grid_snaps_to_scale_in_utm():
    grid, aoi = g.plan_grid(g.parse_bbox("2.0,48.0,2.1,48.05"))
    assert grid.crs == "EPSG:32631"
    assert grid.x0 % 10 == 0 and grid.y0 % 10 == 0
    minx, miny, maxx, maxy = aoi.bounds
    assert grid.x0 <= minx < grid.x0 + 10 and grid.y0 - 10 < maxy <= grid.y0
    assert grid.x0 + grid.width * 10 >= maxx > grid.x0 + (grid.width - 1) * 10
    assert grid.y0 - grid.height * 10 <= miny < grid.y0 - (grid.height - 1) * 10
    assert grid.transform.a == 10 and grid.transform.e == -10


def test_plan_grid_explicit_crs_and_errors():
    grid, _ = g.plan_grid(g.parse_bbox("5.9,45.8,6.2,46.0"), crs="epsg:32632", scale=20)
    assert grid.crs == "EPSG:32632" and grid.x0 % 20 == 0
    with pytest.raises(InputError, match="too large for EPSG:32631"):
        g.plan_grid(g.parse_bbox("-10,40,20,41"), crs="EPSG:32631")
    with pytest.raises(InputError, match="too large"):  # 30 degrees wide: no UTM zone holds it
        g.plan_grid(g.parse_bbox("-10,40,20,41"))
    with pytest.raises(InputError, match="geographic"):
        g.plan_grid(g.parse_bbox("5.9,45.8,6.2,46.0"), crs="EPSG:4326")
    with pytest.raises(InputError, match="--crs"):
        g.plan_grid(g.parse_bbox("5.9,45.8,6.2,46.0"), crs="EPSG:999999")
    with pytest.raises(InputError, match="^--tuning: scale: must be a positive number"):
        g.plan_grid(g.parse_bbox("5.9,45.8,6.2,46.0"), scale=0)


@settings(max_examples=60, deadline=None)
@given(
    west=st.floats(-179, 178),
    south=st.floats(-79, 82),
    width=st.floats(0.0005, 0.5),
    height=st.floats(0.0005, 0.5),
    scale=st.sampled_from([10.0, 20.0, 30.0]),
)
def test_plan_grid_covers_aoi_minimally(west, south, width, height, scale):
    aoi = shapely.box(west, south, west + width, south + height)
    grid, aoi_crs = g.plan_grid(aoi, scale=scale)
    minx, miny, maxx, maxy = aoi_crs.bounds
    assert grid.x0 % scale == 0 and grid.y0 % scale == 0
    assert grid.x0 <= minx and grid.x0 + grid.width * scale >= maxx - 1e-6
    assert grid.y0 >= maxy and grid.y0 - grid.height * scale <= miny + 1e-6
    # minimal: dropping a column or a row would uncover part of the AOI
    assert grid.x0 + scale > minx and grid.y0 - scale < maxy
    assert grid.x0 + (grid.width - 1) * scale < maxx + 1e-6 or grid.width == 1
    centres = np.array(grid.x_centres(0, 2))
    np.testing.assert_allclose(np.diff(centres), scale)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    chunk=st.sampled_from([128, 256, 1000, 1024]),
)
def test_chunk_windows_tile_the_grid(width, height, chunk):
    grid = g.Grid("EPSG:32631", 10.0, 0.0, 0.0, width, height)
    windows = list(g.chunk_windows(grid, chunk))
    assert sum(w.rows * w.cols for w in windows) == width * height
    assert all(
        w.row % chunk == 0 and w.col % chunk == 0 and 0 < w.rows <= chunk and 0 < w.cols <= chunk
        for w in windows
    )
    assert len(windows) == -(-width // chunk) * -(-height // chunk)


def test_windows_touching_skips_chunks_outside_a_non_rectangular_aoi(tmp_path):
    # An L-shaped AOI: the chunk in the missing corner is not requested.
    lshape = shapely.Polygon(
        [(2.0, 48.0), (2.06, 48.0), (2.06, 48.02), (2.02, 48.02), (2.02, 48.04), (2.0, 48.04)]
    )
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(lshape),
                    }
                ],
            }
        )
    )
    aoi = g.read_aoi(str(path))
    grid, aoi_crs = g.plan_grid(aoi)
    windows = list(g.chunk_windows(grid, 128))
    kept, skipped = g.windows_touching(grid, windows, aoi_crs)
    assert skipped >= 1 and len(kept) + skipped == len(windows)
    for w in kept:
        assert aoi_crs.intersects(shapely.box(*grid.window_bounds(w)))
    for w in set(windows) - set(kept):
        assert not aoi_crs.intersects(shapely.box(*grid.window_bounds(w)))


def test_read_aoi_errors(tmp_path):
    with pytest.raises(InputError, match="--aoi: cannot read"):
        g.read_aoi(str(tmp_path / "missing.geojson"))
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="--aoi: cannot read"):
        g.read_aoi(str(bad))


def test_check_chunk_size():
    g.check_chunk_size(1024, 256)
    with pytest.raises(InputError, match="too small"):
        g.check_chunk_size(64)
    with pytest.raises(InputError, match="not a multiple"):
        g.check_chunk_size(1000, 256)
