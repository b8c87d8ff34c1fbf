"""Convention stores read where the field publishes them: s3:// (moto on loopback, anonymous)
and https:// (a range-capable static server on loopback), against the arrays written."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("s3fs", reason="the [s3] extra")
pytest.importorskip("moto.server", reason="moto[server], in the [test] extra")

from tests.helpers import (  # noqa: E402
    field_stores,
    range_http,  # noqa: E402
    s3,
)
from transforms.core.errors import InputError  # noqa: E402
from transforms.storage import layout_view, layouts  # noqa: E402

YEARS = (2024,)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("published")
    path = str(folder / "aef-mosaic.zarr")
    array = field_stores.aef_mosaic(path, width=4400, height=600, years=YEARS)
    # data in rows 100-599, cols 3500-4399: 2 x 3 inner chunks in shard 0 and 2 x 2 in shard 1
    codes = np.random.default_rng(5).integers(-127, 128, size=(1, 64, 500, 900), dtype=np.int8)
    array[:, :, 100:600, 3500:4400] = codes
    return path, codes


@pytest.fixture(scope="module")
def s3_root(mosaic, tmp_path_factory):
    with s3.moto_server(str(tmp_path_factory.mktemp("aws"))):
        yield s3.upload_folder(mosaic[0], "opendata", "tge-labs/aef-mosaic.zarr")


SERVERS: dict = {}  # root URL -> its range_http server (to count the bytes it sent)


def _server_of(root: str):
    return SERVERS[root]


@pytest.fixture(scope="module")
def http_root(mosaic):
    server, url = range_http.serve(os.path.dirname(mosaic[0]))
    root = f"{url}/aef-mosaic.zarr"
    SERVERS[root] = server
    yield root
    server.shutdown()


@pytest.mark.parametrize("where", ["s3", "http"])
def test_remote_mosaic_reads_as_written(mosaic, s3_root, http_root, where):
    root = {"s3": s3_root, "http": http_root}[where]
    layout = layouts.describe(root)
    assert layout.path == root and layout.dims == ("time", "band", "y", "x")
    got = layout_view.LayoutReader(layout).read_codes(0, slice(150, 260), slice(4050, 4150))
    want = np.moveaxis(mosaic[1][0, :, 50:160, 550:650], 0, -1)
    np.testing.assert_array_equal(got, want)


def test_private_bucket_is_one_line(mosaic, s3_root):
    s3.upload_folder(mosaic[0], "private", "m.zarr", public=False)
    s3.fresh_state()
    with pytest.raises(InputError) as err:
        layouts.describe("s3://private/m.zarr")
    assert "s3://private/m.zarr" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_http_root_is_one_line():
    with pytest.raises(InputError) as err:
        layouts.describe("http://127.0.0.1:9/aef-mosaic.zarr")
    assert "http://127.0.0.1:9/aef-mosaic.zarr" in str(err.value) and "\n" not in str(err.value)


def _inner_chunk_bytes(shard_file: str, n_inner: int) -> np.ndarray:
    """Each inner chunk's stored size, read from the shard's own index (the sharding codec's spec:
    at the end of the shard, (offset, nbytes) uint64 pairs in C order, then a crc32c)."""
    size = n_inner * n_inner * 16 + 4
    with open(shard_file, "rb") as f:
        f.seek(-size, os.SEEK_END)
        index = np.frombuffer(f.read(size)[:-4], dtype="<u8").reshape(n_inner, n_inner, 2)
    nbytes = index[..., 1].astype(np.int64)
    nbytes[index[..., 0] == np.iinfo(np.uint64).max] = 0  # an empty inner chunk
    return nbytes


def test_a_window_fetches_only_the_inner_chunks_it_touches(mosaic, http_root):
    path = mosaic[0]
    server_bytes = _server_of(http_root).bytes_sent
    layout = layouts.describe(http_root)
    reader = layout_view.LayoutReader(layout)
    reader.read_codes(0, slice(0, 1), slice(0, 1))  # opens the array; an empty corner
    before = sum(server_bytes)
    reader.read_codes(0, slice(150, 260), slice(4050, 4150))
    fetched = sum(server_bytes) - before
    # rows 150-259 touch inner rows 0-1; cols 4050-4149 touch inner col 15 of shard 0 and 0 of shard 1
    shard0 = _inner_chunk_bytes(os.path.join(path, "embeddings", "c", "0", "0", "0", "0"), 16)
    shard1 = _inner_chunk_bytes(os.path.join(path, "embeddings", "c", "0", "0", "0", "1"), 16)
    touched = int(shard0[0:2, 15].sum() + shard1[0:2, 0].sum())
    stored = int(shard0.sum() + shard1.sum())
    assert touched > 4 * 64 * 150 * 100 and stored > 2 * touched  # the window is a part of the data
    assert fetched <= 1.3 * touched, (fetched, touched)


@pytest.mark.parametrize("where", ["s3", "http"])
def test_remote_windows_read_directly_as_written(mosaic, s3_root, http_root, where):
    """The mosaic's shards read by shard_windows.ShardWindows (whole objects, and an index then ranged
    runs) over each protocol, against the codes written."""
    root = {"s3": s3_root, "http": http_root}[where]
    reader = layout_view.LayoutReader(layouts.describe(root))
    reader.read_codes(0, slice(0, 1), slice(0, 1))
    assert reader._direct is not None
    for rows, cols in [
        (slice(100, 600), slice(3500, 4400)),  # every inner chunk with data, two shards
        (slice(99, 357), slice(4090, 4101)),  # across the shard edge, unaligned
        (slice(0, 600), slice(4096, 4400)),  # the whole second shard: one object
    ]:
        want = np.full((rows.stop - rows.start, cols.stop - cols.start, 64), -128, np.int8)
        codes = np.moveaxis(mosaic[1][0], 0, -1)
        r0, c0 = max(rows.start, 100), max(cols.start, 3500)
        want[r0 - rows.start :, c0 - cols.start :] = codes[
            r0 - 100 : rows.stop - 100, c0 - 3500 : cols.stop - 3500
        ]
        np.testing.assert_array_equal(reader.read_codes(0, rows, cols), want)


def test_a_remote_shard_comes_in_bounded_requests(mosaic, http_root, monkeypatch):
    """A remote window's inner chunks are asked for in requests of at most PART_BYTES, at most
    IN_FLIGHT out at once (the shard's index first), and land where they belong."""
    from transforms.storage import shard_windows

    monkeypatch.setattr(shard_windows, "PART_BYTES", 3 * 2**20)  # an inner chunk: 0.3-2.9 MB
    monkeypatch.setattr(shard_windows, "IN_FLIGHT", 3)
    reader = layout_view.LayoutReader(layouts.describe(http_root))
    reader.read_codes(0, slice(0, 1), slice(0, 1))
    fs = reader._direct.fs
    original, live, peak, parts = fs._cat_file, [0], [0], []

    async def counted(path, start=None, end=None, **kwargs):
        ranged = start is not None and start >= 0  # not an index (a suffix)
        live[0] += ranged
        peak[0] = max(peak[0], live[0])
        try:
            data = await original(path, start=start, end=end, **kwargs)
        finally:
            live[0] -= ranged
        if ranged:
            parts.append(len(data))
        return data

    monkeypatch.setattr(fs, "_cat_file", counted)
    got = reader.read_codes(0, slice(100, 600), slice(3500, 4400))  # every chunk with data
    np.testing.assert_array_equal(got, np.moveaxis(mosaic[1][0], 0, -1))
    path = mosaic[0]
    written = [
        n
        for shard in ("0", "1")
        for n in _inner_chunk_bytes(
            os.path.join(path, "embeddings", "c", "0", "0", "0", shard), 16
        ).ravel()
        if n
    ]
    assert sum(parts) == sum(written)  # every byte of them, once
    assert all(n <= 3 * 2**20 or n in written for n in parts)  # a part: one chunk, or <= PART_BYTES
    assert 3 < len(parts) < len(written)  # neighbours together
    assert peak[0] == 3


def test_a_root_found_readable_is_not_looked_at_again(mosaic, http_root, monkeypatch):
    """reach.check_root looks (HEAD zarr.json) once per root and settings; a refusal is never kept."""
    from transforms.storage import reach

    seen = _server_of(http_root).requests_seen
    heads = lambda: sum(r.startswith("HEAD ") for r in seen)  # noqa: E731
    before = heads()
    reach.check_root(http_root, "--embeddings")
    reach.check_root(http_root, "--embeddings")
    layouts.describe(http_root)
    looked = heads() - before
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # other settings: looked again
    reach.check_root(http_root, "--embeddings")
    assert (looked, heads() - before) in ((0, 1), (1, 2))  # 0 if an earlier test looked already
    for _ in range(2):
        with pytest.raises(InputError):
            reach.check_root("http://127.0.0.1:9/aef-mosaic.zarr", "--embeddings")


def test_a_remote_store_is_opened_once_per_reader(mosaic, http_root):
    """Opening a remote store, and reading it, each read its metadata once: every open of a root
    costs a round trip per array it looks at (~1 s at 100 ms a request, on a store across an
    ocean). Counted at the server: the root's zarr.json and the embeddings array's."""
    from transforms.storage import readers, store

    seen = _server_of(http_root).requests_seen

    def opens(step):
        before = len(seen)
        step()
        asked = seen[before:]
        return [
            sum(r == f"GET /aef-mosaic.zarr/{name}zarr.json" for r in asked)
            for name in ("", "embeddings/")
        ]

    assert opens(lambda: store.open_embeddings(http_root)) == [1, 2]  # describe, the dask array
    window = lambda: readers.StoreReader(http_root).read_codes(0, slice(0, 8), slice(0, 8))  # noqa: E731
    assert opens(window) == [1, 2]  # describe, the reader's array


def test_an_open_looks_up_the_coordinates_together(mosaic):
    """describe asks for time, band, x and y at once, not one round trip after another: the
    server holds each of those requests until all four are in (a reader asking in turn would
    break the barrier after its timeout)."""
    import threading

    barrier = threading.Barrier(4, timeout=20)
    passed, broken = [], []

    def together(path):
        if path in [f"/aef-mosaic.zarr/{c}/zarr.json" for c in ("time", "band", "x", "y")]:
            try:
                barrier.wait()
                passed.append(path)
            except threading.BrokenBarrierError:
                broken.append(path)

    server, url = range_http.serve(os.path.dirname(mosaic[0]), before=together)
    try:
        layout = layouts.describe(f"{url}/aef-mosaic.zarr")
    finally:
        server.shutdown()
    assert layout.years == YEARS and layout.width == 4400
    assert (len(passed), broken) == (4, [])


def test_a_long_coordinate_in_one_chunk_is_not_fetched(mosaic, http_root, monkeypatch):
    """The public mosaic keeps x and y in one chunk each (32 MB for a global x): an open fetches
    an axis's values only when it holds at most COORDINATES_READ of them."""
    from transforms.storage import layout_grid

    monkeypatch.setattr(layout_grid, "COORDINATES_READ", 1000)  # x: 4400 values, y: 600
    seen = _server_of(http_root).requests_seen
    before = len(seen)
    layout = layouts.describe(http_root)
    asked = seen[before:]
    assert (layout.width, layout.height) == (4400, 600)
    assert "GET /aef-mosaic.zarr/x/zarr.json" in asked  # its length is checked
    assert "GET /aef-mosaic.zarr/x/c/0" not in asked
    assert "GET /aef-mosaic.zarr/y/c/0" in asked


def test_a_collection_in_a_public_bucket_opens_anonymously(tmp_path, s3_root):
    """A collection (index + one store per zone) uploaded to a public bucket is found and read
    without credentials (s3_root: moto's server is up, no AWS credentials set)."""
    import efm
    from tests.helpers.collections import make_collection
    from transforms.storage import collection as collectionlib

    made = make_collection(str(tmp_path / "coll"), years=(2021,), chunk_size=32)
    url = s3.upload_folder(made.root, "opendata", "efm/coll")
    s3.fresh_state()
    assert collectionlib.is_collection(url)
    coll = efm.open_embeddings(url)
    local = efm.open_embeddings(made.root)
    box = (5.99, 45.005, 6.01, 45.015)
    got = coll.sel(bbox=box).embedding.values
    want = local.sel(bbox=box).embedding.values
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["v2", "convention"])
def test_an_efm_store_in_a_public_bucket_opens_anonymously(tmp_path, s3_root, layout):
    """efm's own stores, as written before issue 17 (Zarr 2) and now, read from a public bucket
    without credentials give the values written."""
    import efm
    from tests.helpers.store_factory import make_store

    made = make_store(str(tmp_path / "e.zarr"), years=(2021,), height=40, width=30, layout=layout)
    url = s3.upload_folder(made.path, "opendata", f"efm/{layout}.zarr")
    s3.fresh_state()
    got = efm.open_embeddings(url).embedding.values
    np.testing.assert_array_equal(got, efm.open_embeddings(made.path).embedding.values)


def test_a_remote_part_is_decoded_while_the_next_is_on_the_wire(mosaic, http_root, monkeypatch):
    """The second ranged request of a window answers only once the first part's inner chunk has
    been placed in the result: a reader that waited for every part before decoding would wait
    here for ever (the test's deadline: 20 s)."""
    import asyncio
    import threading

    from transforms.storage import shard_windows

    monkeypatch.setattr(shard_windows, "PART_BYTES", 1)  # an inner chunk a request
    monkeypatch.setattr(shard_windows, "IN_FLIGHT", 2)
    reader = layout_view.LayoutReader(layouts.describe(http_root))
    reader.read_codes(0, slice(0, 1), slice(0, 1))
    direct = reader._direct
    placed, ranged, waited = threading.Event(), [], []
    real_place = direct._place

    def place(out, chunk, *args):
        real_place(out, chunk, *args)
        if chunk is not None:
            placed.set()

    monkeypatch.setattr(direct, "_place", place)
    original = direct.fs._cat_file

    async def held(path, start=None, end=None, **kwargs):
        if start is not None and start >= 0:
            ranged.append(start)
            if len(ranged) > 1:
                loop = asyncio.get_running_loop()
                waited.append(await loop.run_in_executor(None, placed.wait, 20))
        return await original(path, start=start, end=end, **kwargs)

    monkeypatch.setattr(direct.fs, "_cat_file", held)
    got = reader.read_codes(0, slice(100, 600), slice(4096, 4400))  # shard 1's chunks with data
    np.testing.assert_array_equal(got, np.moveaxis(mosaic[1][0, :, :, 596:], 0, -1))
    assert len(ranged) > 2 and waited and all(waited)
