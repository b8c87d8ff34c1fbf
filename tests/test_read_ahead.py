"""Reading ahead (transforms/storage/read_ahead.py) and points read from inner chunks
(transforms/storage/shard_points.py): the same values as zarr's own indexing of the store,
bounded memory, and failures that surface where and as they did without them."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import zarr

from tests.helpers.store_factory import make_store
from transforms.core import quantize
from transforms.core.grid import Window, tile_windows
from transforms.storage.read_ahead import ReadAhead
from transforms.storage.readers import StoreReader


@pytest.fixture(scope="module", params=["int8", "float32"])
def v3(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("v3") / "s.zarr")
    return make_store(path, dtype=request.param, height=300, width=260, chunk_size=128)


def zarr_window(path: str, t: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The reference: zarr-python's indexing of the (time, band, y, x) array, bands moved last."""
    array = zarr.open_group(path, mode="r")["embedding"]
    return np.moveaxis(np.asarray(array[t, :, r0:r1, c0:c1]), 0, -1)


def test_read_ahead_gives_each_window_as_a_direct_read(v3):
    reader = StoreReader(v3.path)
    elements = [(t, w) for t in range(2) for w in tile_windows(300, 260, 128, 128)]

    def read(element):
        t, w = element
        return reader.read_codes(t, slice(w.row, w.row + w.rows), slice(w.col, w.col + w.cols))

    for depth in (0, 1, 2):
        ahead, got = ReadAhead(read, depth), []
        for element in elements:
            got += ahead.push(element, tag=len(got))
        got += list(ahead.drain())
        assert [g[0] for g in got] == elements  # in order, each once
        for (t, w), values, _ in got:
            expected = zarr_window(v3.path, t, w.row, w.row + w.rows, w.col, w.col + w.cols)
            assert values.dtype == expected.dtype
            np.testing.assert_array_equal(values, expected)
        ahead.close()


@pytest.mark.parametrize("depth", [1, 2])
def test_read_ahead_holds_at_most_depth_reads_ahead(depth):
    started, lock = [], threading.Lock()

    def read(k):
        with lock:
            started.append(k)
        return np.full(4, k)

    ahead, n, taken = ReadAhead(read, depth), 12, 0
    for k in range(n):
        for element, values, _ in ahead.push(k):
            assert element == taken and values[0] == taken
            # while element `taken` is computed, the next one is read (overlap) ...
            deadline = time.monotonic() + 5
            while len(started) < min(n, taken + 2) and time.monotonic() < deadline:
                time.sleep(0.001)
            assert len(started) >= min(k + 1, taken + 2)
            time.sleep(0.01)  # ... but never more than `depth` beyond it
            assert len(started) <= taken + 1 + depth
            assert ahead.waiting() == depth
            taken += 1
    assert ahead.waiting() == depth
    for element, values, _ in ahead.drain():
        assert element == taken and values[0] == taken
        taken += 1
    assert taken == n and started == list(range(n))


def test_a_failed_read_is_raised_where_its_values_are_taken():
    boom = OSError("disk gone")

    def read(k):
        if k == 2:
            raise boom
        return k

    ahead, taken = ReadAhead(read, 1), []
    with pytest.raises(OSError) as caught:
        for k in range(5):
            taken += [e for e, _, _ in ahead.push(k)]
    assert caught.value is boom  # the same exception object, not a wrapper
    assert taken == [0, 1]  # the elements before it were given back first
    ahead.close()


def test_closing_skips_queued_reads():
    gate, started = threading.Event(), []

    def read(k):
        started.append(k)
        gate.wait(5)
        return k

    ahead = ReadAhead(read, 2)
    ahead.push(0)
    ahead.push(1)
    time.sleep(0.05)
    ahead.close()
    gate.set()
    time.sleep(0.05)
    assert started == [0] and ahead.waiting() == 0


# ---------------------------------------------------------------- points from inner chunks


@pytest.fixture(scope="module", params=["int8", "float32"])
def sharded(request, tmp_path_factory):
    """512 px shards of 256 px inner chunks; an inner chunk of fill inside a written shard (left
    out of its index), and the last year's first shard all no data (no object)."""
    path = str(tmp_path_factory.mktemp("sharded") / "s.zarr")
    s = make_store(path, dtype=request.param, chunk_size=512, height=700, width=600)
    array = zarr.open_group(path, mode="r+")["embedding"]
    assert array.shards == (1, 64, 512, 512) and array.chunks == (1, 64, 256, 256)
    array[0, :, 256:512, 512:600] = array.fill_value
    return s


def test_points_read_as_zarr_indexes_them(sharded):
    rng = np.random.default_rng(3)
    corners = [(0, 0), (699, 599), (255, 255), (256, 256), (511, 512), (300, 550), (100, 100)]
    rows = np.concatenate([rng.integers(0, 700, 60), [r for r, _ in corners]])
    cols = np.concatenate([rng.integers(0, 600, 60), [c for _, c in corners]])
    reader = StoreReader(sharded.path)
    array = zarr.open_group(sharded.path, mode="r")["embedding"]
    for t in range(2):
        got = reader.read_points(t, rows, cols)
        expected = np.asarray(array[t])[:, rows, cols].T  # zarr's values at the points, (n, bands)
        if expected.dtype == np.int8:
            expected = quantize.dequantize(expected)
        assert got.dtype == np.float32 and got.shape == (len(rows), 64)
        np.testing.assert_array_equal(got, expected)
        assert np.isnan(got).all(axis=1).any()  # some points on no data (NaN in every band)
        # and what a window read gives for the same pixels
        for k in range(0, len(rows), 5):
            window = Window(int(rows[k]), int(cols[k]), 1, 1)
            np.testing.assert_array_equal(got[k], reader.read(t, window)[0, 0])


def test_points_read_only_the_inner_chunks_under_them(sharded, monkeypatch):
    from transforms.storage import shard_windows

    reader, asked = StoreReader(sharded.path), []
    reader.read_points(0, np.array([0]), np.array([0]))
    shards = reader._other._direct
    fetch = shard_windows.ShardWindows._fetch

    def counting(self, requests):
        asked.extend(requests)
        return fetch(self, requests)

    monkeypatch.setattr(shard_windows.ShardWindows, "_fetch", counting)
    reader.read_points(0, np.array([10, 20, 300]), np.array([10, 400, 30]))
    whole = [r for r in asked if r[1] is None]
    ranged = [r for r in asked if r[1] is not None and r[1] >= 0]
    assert not whole and len(ranged) == 3  # three inner chunks of one shard, never the shard
    assert all(stop - start < os.path.getsize(name) / 3 for name, start, stop in ranged)
    assert shards is reader._other._direct


def test_points_of_a_zarr2_store_are_left_to_window_reads(tmp_path):
    s = make_store(str(tmp_path / "v2.zarr"), layout="v2", height=130, width=130, chunk_size=64)
    assert StoreReader(s.path).read_points(0, np.array([1]), np.array([2])) is None


def test_a_shorter_inner_chunk_than_its_header_says_is_an_error_not_a_crash(tmp_path):
    """An index entry that cuts an inner chunk short (a damaged shard): blosc would read past
    the bytes it is given (garbage values, or a segfault, in numcodecs 0.16): refused first."""
    from zarr.codecs import BloscCodec

    from transforms.storage import shard_windows

    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    array = root.create_array(
        "embedding",
        shape=(1, 8, 64, 64),
        shards=(1, 8, 32, 32),
        chunks=(1, 8, 16, 16),
        dtype="int8",
        compressors=BloscCodec(cname="zstd", clevel=1),
        dimension_names=("time", "band", "y", "x"),
    )
    array[...] = np.random.default_rng(0).integers(-127, 128, (1, 8, 64, 64), dtype=np.int8)
    shards = shard_windows.ShardWindows.of(array, str(tmp_path / "g.zarr" / "embedding"))
    np.testing.assert_array_equal(
        shards.read(0, slice(0, 16), slice(0, 16)), np.moveaxis(array[0, :, :16, :16], 0, -1)
    )
    name = tmp_path / "g.zarr" / "embedding" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(name.read_bytes())
    index = np.frombuffer(data, dtype="<u8", count=8, offset=len(data) - 4 - 64).copy()
    index[1] //= 2  # the first inner chunk's length, halved
    data[len(data) - 4 - 64 : len(data) - 4 - 48] = index[:2].tobytes()
    name.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fewer than the blosc header"):
        shards.read(0, slice(0, 16), slice(0, 16))
