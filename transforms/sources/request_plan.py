"""Request planning: split a chunk into the fewest `computePixels` tiles under the size limit.

The service refuses (HTTP 400) a request whose uncompressed payload, all bands counted at
their dtype plus about one mask byte per pixel, exceeds 48 MiB, or whose side exceeds
32768 px. All bands of a tile go in one request.
"""

from __future__ import annotations

import math

from transforms.core.errors import InputError
from transforms.core.grid import Window

MAX_REQUEST_BYTES = 48 * 2**20
MAX_REQUEST_SIDE = 32768
MAX_REQUEST_BANDS = 1024
MASK_BYTES_PER_PIXEL = 1


def bytes_per_pixel(n_bands: int, itemsize: int) -> int:
    return n_bands * itemsize + MASK_BYTES_PER_PIXEL


def request_bytes(rows: int, cols: int, n_bands: int, itemsize: int) -> int:
    """Uncompressed payload the service counts against its limit."""
    return rows * cols * bytes_per_pixel(n_bands, itemsize)


def max_square_tile(n_bands: int, itemsize: int, limit: int = MAX_REQUEST_BYTES) -> int:
    """Largest square tile side that fits in one request."""
    return min(MAX_REQUEST_SIDE, math.isqrt(limit // bytes_per_pixel(n_bands, itemsize)))


def check_request_tile_size(
    tile_size: int, n_bands: int, itemsize: int, limit: int = MAX_REQUEST_BYTES
) -> None:
    largest = max_square_tile(n_bands, itemsize, limit)
    if tile_size < 1 or tile_size > largest:
        raise InputError(
            "--tuning",
            f"request_tile_size: {tile_size} px does not fit one request: {n_bands} bands x {itemsize} B + mask allow at most "
            f"{largest} px a side under {limit // 2**20} MiB; leave it unset to let efm choose",
        )


def split_window(
    window: Window,
    n_bands: int,
    itemsize: int,
    tile_size: int | None = None,
    limit: int = MAX_REQUEST_BYTES,
) -> list[Window]:
    """Cut `window` into request tiles, in row-major order, each under `limit` bytes.

    With `tile_size`, tiles are `tile_size` squares. Without it, the window is cut into
    the fewest full-width strips of (nearly) equal height: for the chunk sizes we use, a
    full row always fits, so the count ceil(rows / rows_that_fit) is the minimum any
    tiling into strips can reach, and it equals the byte lower bound
    ceil(total / limit) unless a fraction of a row would be needed.
    """
    if n_bands > MAX_REQUEST_BANDS:
        raise InputError(
            "--bands", f"{n_bands} bands exceed the {MAX_REQUEST_BANDS}-band request limit"
        )
    if tile_size is not None:
        check_request_tile_size(tile_size, n_bands, itemsize, limit)
        return [
            Window(
                window.row + r,
                window.col + c,
                min(tile_size, window.rows - r),
                min(tile_size, window.cols - c),
            )
            for r in range(0, window.rows, tile_size)
            for c in range(0, window.cols, tile_size)
        ]
    bpp = bytes_per_pixel(n_bands, itemsize)
    # Split columns only when a single full-width row is over a limit (very wide windows).
    col_parts = max(math.ceil(window.cols / MAX_REQUEST_SIDE), math.ceil(window.cols * bpp / limit))
    cols_per = math.ceil(window.cols / col_parts)
    rows_fit = min(MAX_REQUEST_SIDE, limit // (cols_per * bpp))
    row_parts = math.ceil(window.rows / rows_fit)
    rows_per = math.ceil(window.rows / row_parts)  # balance the strips
    return [
        Window(
            window.row + r,
            window.col + c,
            min(rows_per, window.rows - r),
            min(cols_per, window.cols - c),
        )
        for r in range(0, window.rows, rows_per)
        for c in range(0, window.cols, cols_per)
    ]
