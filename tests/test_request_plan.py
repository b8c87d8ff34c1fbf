"""Request planning: fewest tiles under the computePixels limit, all bands per request."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.errors import InputError
from transforms.core.grid import Window
from transforms.sources import request_plan as rp


def test_known_sizes():
    # 1024 x 1024 x 64 float32 (+ mask byte): 269 MB -> 6 strips; int8: 68 MB -> 2 strips.
    assert len(rp.split_window(Window(0, 0, 1024, 1024), 64, 4)) == 6
    assert len(rp.split_window(Window(0, 0, 1024, 1024), 64, 1)) == 2
    assert len(rp.split_window(Window(0, 0, 512, 512), 64, 1)) == 1
    assert rp.max_square_tile(64, 4) == 442


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 8192),
    cols=st.integers(1, 8192),
    bands=st.integers(1, 128),
    itemsize=st.sampled_from([1, 2, 4, 8]),
)
def test_split_is_exact_cover_under_limit_and_fewest_strips(rows, cols, bands, itemsize):
    window = Window(100, 200, rows, cols)
    tiles = rp.split_window(window, bands, itemsize)
    covered = set()
    for t in tiles:
        assert rp.request_bytes(t.rows, t.cols, bands, itemsize) <= rp.MAX_REQUEST_BYTES
        assert t.rows <= rp.MAX_REQUEST_SIDE and t.cols <= rp.MAX_REQUEST_SIDE
        cells = {
            (r, c)
            for r in range(t.row, t.row + t.rows, max(1, t.rows // 3 or 1))
            for c in range(t.col, t.col + t.cols, max(1, t.cols // 3 or 1))
        }
        assert not cells & covered
        covered |= cells
    assert sum(t.rows * t.cols for t in tiles) == rows * cols
    assert all(window.row <= t.row and t.row + t.rows <= window.row + window.rows for t in tiles)
    assert all(window.col <= t.col and t.col + t.cols <= window.col + window.cols for t in tiles)
    lower_bound = math.ceil(rp.request_bytes(rows, cols, bands, itemsize) / rp.MAX_REQUEST_BYTES)
    assert len(tiles) >= lower_bound
    if (
        rp.request_bytes(1, cols, bands, itemsize) <= rp.MAX_REQUEST_BYTES
    ):  # a full row fits: strips
        rows_fit = rp.MAX_REQUEST_BYTES // rp.request_bytes(1, cols, bands, itemsize)
        assert len(tiles) == math.ceil(rows / rows_fit)


def test_square_tiles_and_errors():
    tiles = rp.split_window(Window(0, 0, 1024, 1024), 64, 4, tile_size=256)
    assert len(tiles) == 16 and {(t.rows, t.cols) for t in tiles} == {(256, 256)}
    with pytest.raises(InputError, match="--tuning: request_tile_size: 1024 px does not fit"):
        rp.split_window(Window(0, 0, 1024, 1024), 64, 4, tile_size=1024)
