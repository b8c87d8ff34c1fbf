"""transforms/core/zones.py against pyproj directly: which pixels a zone's store holds (every
pixel whose four corners' lon/lat box touches the zone's cell), on windows across seams, at low
and high latitude, across the equator, whole windows and edge slivers."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import shapely

from transforms.core import zones
from transforms.core.grid import Window, plan_grid


def reference(grid, window, cell) -> np.ndarray:
    xs = grid.x0 + (window.col + np.arange(window.cols + 1)) * grid.scale
    ys = grid.y0 - (window.row + np.arange(window.rows + 1)) * grid.scale
    lon, lat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        *np.meshgrid(xs, ys)
    )
    west, south, east, north = cell.box
    quad = [(slice(None, -1), slice(None, -1)), (slice(None, -1), slice(1, None))]
    quad += [(slice(1, None), slice(None, -1)), (slice(1, None), slice(1, None))]
    lo = np.min([lon[q] for q in quad], axis=0)
    hi = np.max([lon[q] for q in quad], axis=0)
    la_lo = np.min([lat[q] for q in quad], axis=0)
    la_hi = np.max([lat[q] for q in quad], axis=0)
    return (hi >= west) & (lo < east) & (la_hi >= south) & (la_lo < north)


@pytest.mark.parametrize(
    "area",
    [
        (5.9, 45.0, 6.1, 45.1),
        (11.8, 70.0, 12.2, 70.05),
        (-120.1, 38.95, -119.9, 39.05),
        (5.95, -0.05, 6.05, 0.05),
    ],
)
def test_footprint_mask_equals_the_corner_rule(area):
    a = shapely.box(*area)
    cells = zones.cells_for(a)
    assert len(cells) >= 2
    for cell in cells:
        grid, _ = plan_grid(zones.part_in(a, cell), cell.crs)
        for size in (512, 200):
            for r in range(0, grid.height, size):
                for c in range(0, grid.width, size):
                    w = Window(r, c, min(size, grid.height - r), min(size, grid.width - c))
                    got = zones.footprint_mask(grid, w, cell)
                    expected = reference(grid, w, cell)
                    if got is None:
                        assert expected.all()
                    else:
                        np.testing.assert_array_equal(got, expected)


def test_cells_and_names():
    assert zones.cell_of(5.99, 45).name == "31N" and zones.cell_of(6.0, 45).name == "32N"
    assert zones.cell_of(6.0, -0.0001).crs == "EPSG:32732"
    assert zones.cell_of(180.0, 10).zone == 60 and zones.cell_of(-180.0, 10).zone == 1
    assert [c.name for c in zones.cells_for(shapely.box(5.9, -1, 6.1, 1))] == [
        "31N",
        "31S",
        "32N",
        "32S",
    ]
    # a box only touching the seam's line does not take the neighbour
    assert [c.name for c in zones.cells_for(shapely.box(5.0, 45, 6.0, 46))] == ["31N"]


def test_a_member_tile_reaches_the_writer_band_first():
    """A collection member's tile (rows, cols, bands) is handed on with the same values, laid out
    band-first in memory (the store's order), so the writer's transpose is a view; an array
    that is not C-contiguous is handed on as it is."""
    from transforms.sources.zone_mask import band_first

    tile = np.random.default_rng(5).integers(-128, 128, (37, 41, 64), dtype=np.int8)
    got = band_first(tile)
    np.testing.assert_array_equal(got, tile)
    assert got.shape == tile.shape and np.moveaxis(got, -1, 0).flags.c_contiguous
    assert not np.shares_memory(got, tile)
    view = tile[:, ::2]
    assert band_first(view) is view
