"""Whole chunks read from their files (transforms/storage/chunk_files.py) are what zarr reads,
and every other case falls back to zarr."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from transforms.core.grid import Window
from transforms.storage.chunk_files import ChunkFiles
from transforms.storage.readers import StoreReader


def _store(path, dtype, shape=(2, 40, 30, 5), chunks=(1, 16, 16, 5), missing=((1, 1, 0),)):
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array(
        "embedding",
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=np.nan if dtype == "float32" else -128,
    )
    rng = np.random.default_rng(0)
    values = (rng.normal(size=shape) * 50).astype(dtype)
    array[:] = values
    for t, r, c in missing:  # a chunk never written: zarr serves the fill value
        os.remove(os.path.join(str(path), "embedding", f"{t}.{r}.{c}.0"))
    return zarr.open_group(str(path), mode="r")["embedding"]


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_every_window_reads_what_zarr_reads(tmp_path, dtype):
    array = _store(tmp_path / "s.zarr", dtype)
    reader = StoreReader(str(tmp_path / "s.zarr"))
    files = ChunkFiles(str(tmp_path / "s.zarr" / "embedding"))
    assert files.usable
    direct = 0
    for t in range(2):
        for window in [Window(r, c, 16, 16) for r in (0, 16, 32) for c in (0, 16)] + [
            Window(3, 5, 16, 16),
            Window(0, 0, 40, 30),
        ]:
            rows, cols = (
                slice(window.row, window.row + window.rows),
                slice(window.col, window.col + window.cols),
            )
            got = reader.read_codes(t, rows, cols)
            np.testing.assert_array_equal(got, array[t, rows, cols, :])
            assert got.dtype == array.dtype
            direct += files.read((t, rows, cols)) is not None
    assert (
        direct == 2 * 2 - 1
    )  # the 2 whole interior chunks a year, less the missing one; edge, unaligned and larger windows go through zarr


@pytest.mark.parametrize("stride", [2, 3])
def test_a_strided_window_of_one_chunk_is_strided(tmp_path, stride):
    """efm label reads chunk-aligned windows at a stride: the one-chunk file path must not serve the whole chunk."""
    array = _store(tmp_path / "s.zarr", "float32", missing=())
    reader = StoreReader(str(tmp_path / "s.zarr"))
    rows, cols = slice(16, 32, stride), slice(0, 16, stride)
    got = reader.read_codes(0, rows, cols)
    np.testing.assert_array_equal(got, array[0, rows, cols, :])
    assert got.shape[:2] == (-(-16 // stride), -(-16 // stride))


def test_other_layouts_are_left_to_zarr(tmp_path):
    _store(tmp_path / "a.zarr", "float32", chunks=(2, 16, 16, 5), missing=())
    assert (
        ChunkFiles(str(tmp_path / "a.zarr" / "embedding")).read((0, slice(0, 16), slice(0, 16)))
        is None
    )  # two years a chunk
    assert not ChunkFiles(str(tmp_path / "nothing.zarr" / "embedding")).usable
