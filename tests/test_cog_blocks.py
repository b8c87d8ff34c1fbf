"""The mirror read block by block (transforms/sources/cog_blocks.py): files of many blocks, chunks that
straddle them, both row orders, both zones; each block decoded once per process, however many chunks and
threads want it. The reference is the files read whole with rasterio and looked up pixel by pixel
(`check_nearest`, tests/helpers/cog_mirror.py), never the reader under test."""

from __future__ import annotations

import collections
import concurrent.futures
import pickle

import numpy as np
import pytest

from sample_data import generate as sample_data
from tests.helpers.cog_mirror import (
    YEARS,
    assert_reads_match_files,
    check_nearest,
    make_source,
    mirror_files,
    reference_grid,
)
from transforms.core.chunks import ChunkSpec
from transforms.core.grid import Window, tile_windows
from transforms.sources import cog, cog_blocks

BLOCK = 48  # 128 px files of 3 x 3 blocks, the last ones partial


@pytest.fixture(scope="module", params=[True, False], ids=["bottom-up", "top-down"])
def mirror(request, tmp_path_factory):
    spec = sample_data.SampleSpec(**sample_data.SMALL, block_size=BLOCK, bottom_up=request.param)
    return sample_data.generate(str(tmp_path_factory.mktemp("sample-blocks")), spec)


def test_files_hold_many_blocks(mirror):
    import rasterio

    with rasterio.open(mirror.files[0]) as ds:
        assert ds.block_shapes[0] == (BLOCK, BLOCK) and ds.height > 2 * BLOCK


@pytest.mark.parametrize(
    "window",
    [Window(5, 7, 100, 90), Window(47, 47, 3, 3), Window(0, 0, 256, 320)],
    ids=["straddling", "block-corner", "whole"],
)
def test_reads_across_blocks_equal_the_files(mirror, window):
    grid = reference_grid(mirror)
    for year in YEARS:
        assert_reads_match_files(
            mirror.mirror, grid, window, year
        )  # includes the reprojected zone where the window reaches it


def test_interleave_equals_numpy():
    rng = np.random.default_rng(0)
    for shape in [(64, 40, 48), (64, 37, 45), (3, 1, 8), (64, 16, 1024)]:
        planar = rng.integers(-128, 128, shape, dtype=np.int8)
        for flip in (False, True):
            out = np.empty(shape[1:] + shape[:1], np.int8)
            cog_blocks.interleave(planar, out, flip)
            np.testing.assert_array_equal(
                out, np.moveaxis(planar[:, ::-1] if flip else planar, 0, -1)
            )


def _decodes(monkeypatch) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    real = cog.read_block

    def counting(ds, layout, indexes, block_row, block_col):
        counts[(ds.name, block_row, block_col)] += 1
        return real(ds, layout, indexes, block_row, block_col)

    monkeypatch.setattr(cog, "read_block", counting)
    return counts


@pytest.mark.parametrize("threads", [1, 8])
def test_each_block_is_decoded_once(mirror, monkeypatch, threads):
    """64 px chunks over 48 px blocks: most blocks are wanted by 2 or 4 chunks, and read once."""
    counts = _decodes(monkeypatch)
    grid = reference_grid(mirror)
    source = make_source(mirror.mirror, grid, "int8")
    source.block_cache_bytes = 2**30 + threads  # a cache of its own (process-wide per capacity)
    source.setup()
    specs = [
        ChunkSpec(i, 0, YEARS[0], w)
        for i, w in enumerate(tile_windows(grid.height, grid.width, 64, 64))
    ]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        chunks = list(pool.map(lambda spec: source.fetch(spec, spec.window), specs))
    assert len(counts) > len(specs)  # chunks straddle blocks
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:3]
    whole = Window(0, 0, grid.height, grid.width)
    mosaic = np.zeros((grid.height, grid.width, 64), np.int8)
    for spec, chunk in zip(specs, chunks):
        w = spec.window
        mosaic[w.row : w.row + w.rows, w.col : w.col + w.cols] = chunk
    check_nearest(mosaic, grid, whole, mirror_files(mirror.mirror, YEARS[0]))  # the files' pixels


def test_a_small_cache_decodes_again_and_stays_correct(mirror, monkeypatch):
    """The cache's bound holds (one block kept): blocks are decoded again, the values do not change."""
    counts = _decodes(monkeypatch)
    grid = reference_grid(mirror)
    source = make_source(mirror.mirror, grid, "int8")
    source.block_cache_bytes = 1  # keeps only the latest block
    source.setup()
    window = Window(5, 7, 100, 90)
    first = source.fetch(ChunkSpec(0, 0, YEARS[0], window), window)
    second = source.fetch(ChunkSpec(0, 0, YEARS[0], window), window)
    np.testing.assert_array_equal(first, second)
    check_nearest(second, grid, window, mirror_files(mirror.mirror, YEARS[0]))
    assert max(counts.values()) == 2
    assert source._blocks.size <= max(b.nbytes for b in source._blocks._blocks.values())


def test_another_run_never_takes_this_runs_blocks(mirror, monkeypatch):
    """Blocks are shared by the copies of one source (one run), not across runs: files may have changed."""
    counts = _decodes(monkeypatch)
    grid = reference_grid(mirror)
    window = Window(5, 7, 100, 90)
    sources = []
    for _ in range(2):
        source = make_source(mirror.mirror, grid, "int8")
        source.block_cache_bytes = 2**30 + 101  # one cache for both
        source.setup()
        sources.append(source)
    copy = pickle.loads(pickle.dumps(sources[0]))  # what a worker's DoFn gets
    copy.setup()
    files = mirror_files(mirror.mirror, YEARS[0])
    for source in (sources[0], copy):
        check_nearest(source.fetch(ChunkSpec(0, 0, YEARS[0], window), window), grid, window, files)
    assert max(counts.values()) == 1  # the copy took the first run's blocks
    check_nearest(sources[1].fetch(ChunkSpec(0, 0, YEARS[0], window), window), grid, window, files)
    assert min(counts.values()) == 2  # the other run decoded its own
