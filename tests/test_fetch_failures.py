"""FetchChunks under failure: a failing bundle drains before it raises, a retry resumes.

Dataflow retries a failed bundle by calling the DoFn again with the same element; FnApiRunner
does not retry, so the retry is simulated the same way: the same specs, the same store, run
again. The source's pixels are a function of their coordinates (`pixel_values`), so the
store is checked against a direct computation. The cap across processes is checked against
the Earth Engine emulator, which counts the requests it is serving at once.
"""

import dataclasses
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.helpers.pixel_values import pixel_values
from transforms.core.chunks import plan_chunks
from transforms.core.grid import Grid, chunk_windows
from transforms.core.metrics import metric_max, metric_totals
from transforms.sources.fetch import FetchChunks
from transforms.sources.grid_source import GridSource
from transforms.storage import store

BANDS = tuple(f"A{i:02d}" for i in range(4))
YEARS = (2021, 2022)


class Tracker:
    """Shared by the pool threads of this process (FnApiRunner runs the DoFns here)."""

    lock = threading.Lock()
    in_flight = 0
    max_in_flight = 0
    fetched: list = []  # (time_index, row, col) of every tile request
    fail_at = None  # the fetch call number that fails hard, once
    calls = 0

    @classmethod
    def reset(cls, fail_at=None):
        cls.in_flight = cls.max_in_flight = cls.calls = 0
        cls.fetched = []
        cls.fail_at = fail_at


class HardFailure(Exception):
    """Not retryable: the bundle fails."""


@dataclasses.dataclass
class FailingSource(GridSource):
    latency_s: float = 0.05

    def fetch(self, spec, tile):
        with Tracker.lock:
            Tracker.in_flight += 1
            Tracker.calls += 1
            Tracker.max_in_flight = max(Tracker.max_in_flight, Tracker.in_flight)
            Tracker.fetched.append((spec.time_index, spec.window.row, spec.window.col))
            fail = Tracker.calls == Tracker.fail_at
            if fail:
                Tracker.fail_at = None  # once
        try:
            if fail:
                raise HardFailure(f"injected hard failure on {spec.describe()}")
            time.sleep(self.latency_s)
            return pixel_values(
                spec.year,
                np.arange(tile.row, tile.row + tile.rows),
                np.arange(tile.col, tile.col + tile.cols),
                len(self.bands),
            )
        finally:
            with Tracker.lock:
                Tracker.in_flight -= 1


def make_setup(tmp_path, chunk=64):
    grid = Grid("EPSG:32631", 10.0, 500000.0, 5000000.0, 320, 256)  # 5 x 4 chunks of 64 px
    # 4 bands x 4 B + mask = 17 B/px; under 20 kB a 64 x 64 chunk needs 5 requests (13 rows each)
    source = FailingSource(
        grid=grid,
        years=YEARS,
        bands=BANDS,
        store_dtype="float32",
        transfer_itemsize=4,
        max_request_bytes=20_000,
    )
    specs = plan_chunks(list(YEARS), list(chunk_windows(grid, chunk)))
    path = str(tmp_path / "emb.zarr")
    template = store.embedding_template(
        grid, list(YEARS), BANDS, "float32", chunk, {"source": "test"}
    )
    store.setup(path, template)
    return source, specs, path, template


def run(source, specs, path, template, **kwargs):
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = (
        pipeline
        | beam.Create(specs)
        | FetchChunks(source, output=path, **kwargs)
        | store.WriteChunks(path, template)
    )
    result = pipeline.run()
    result.wait_until_finish()
    return result


def reference(grid, specs_years=YEARS):
    rows, cols = np.arange(grid.height), np.arange(grid.width)
    return np.stack([pixel_values(year, rows, cols, len(BANDS)) for year in specs_years])


def test_a_failed_shard_drains_then_its_retry_fetches_only_the_rest(tmp_path):
    source, specs, path, template = make_setup(tmp_path)
    source.latency_s = 0.3  # the other requests are still running when one fails
    tiles_per_chunk = len(source.plan(specs[0]))
    cap = 4  # one shard of 4 threads: the whole plan goes through one DoFn call
    Tracker.reset(
        fail_at=12 * tiles_per_chunk
    )  # fails hard in the 12th chunk or so, with requests in flight
    with pytest.raises(Exception, match="injected hard failure"):
        run(
            source,
            specs,
            path,
            template,
            max_concurrent_requests=cap,
            threads_per_worker=cap,
            max_open_chunks=2,
        )
    # The failing attempt waited for its requests: none is still running when it raises.
    assert Tracker.in_flight == 0
    first_calls, first_max = Tracker.calls, Tracker.max_in_flight
    written = store.done_markers(path)
    assert 0 < len(written) < len(specs)

    Tracker.reset()
    source.latency_s = 0.02
    result = run(
        source,
        specs,
        path,
        template,
        max_concurrent_requests=cap,
        threads_per_worker=cap,
        max_open_chunks=2,
    )
    refetched = {f"{t}.{r}.{c}" for t, r, c in Tracker.fetched}
    assert refetched == {s.marker for s in specs} - written  # not one chunk fetched twice
    assert Tracker.calls == tiles_per_chunk * (len(specs) - len(written))
    assert metric_totals(result)["chunks_skipped_done"] == len(written)
    assert max(first_max, Tracker.max_in_flight) <= cap and first_calls > 0
    assert metric_max(result, "open_chunks") <= 2
    assert store.done_markers(path) == {s.marker for s in specs}
    ds = store.open_embeddings(path, require_complete=False)
    np.testing.assert_array_equal(ds["embedding"].values, reference(source.grid))


@pytest.mark.parametrize("limit", [1, 3])
def test_open_chunks_never_exceed_the_limit(tmp_path, limit):
    source, specs, path, template = make_setup(tmp_path)
    Tracker.reset()
    result = run(
        source,
        specs,
        path,
        template,
        max_concurrent_requests=8,
        threads_per_worker=8,
        max_open_chunks=limit,
    )
    assert metric_max(result, "open_chunks") == limit  # reached, never passed
    # the pool still works on several tiles at once within the bound
    assert 1 < Tracker.max_in_flight <= min(8, limit * len(source.plan(specs[0])))
    ds = store.open_embeddings(path, require_complete=False)
    np.testing.assert_array_equal(ds["embedding"].values, reference(source.grid))


def test_without_a_global_cap_chunks_are_spread_and_each_fetched_once(tmp_path):
    source, specs, path, template = make_setup(tmp_path)
    Tracker.reset()
    result = run(
        source,
        specs,
        path,
        template,
        threads_per_worker=3,
        max_open_chunks=2,
        global_cap=False,
        batch_size=4,
    )
    assert sorted(Tracker.fetched) == sorted(
        (s.time_index, s.window.row, s.window.col) for s in specs for _ in source.plan(s)
    )
    assert Tracker.max_in_flight <= 3
    assert metric_totals(result)["chunks_fetched"] == len(specs)
    ds = store.open_embeddings(path, require_complete=False)
    np.testing.assert_array_equal(ds["embedding"].values, reference(source.grid))


def test_open_chunks_follow_the_memory_budget():
    from transforms.sources.fetch_bounds import max_open_chunks

    mib = 2**20
    assert max_open_chunks(2 * 2**30, 256 * mib) == 2  # the defaults: 1024 px float32
    assert max_open_chunks(2 * 2**30, 64 * mib) == 9  # int8
    assert (
        max_open_chunks(4 * 2**30, 256 * mib, processes=2) == 2
    )  # the budget is shared by local processes
    assert max_open_chunks(1 * 2**30, 256 * mib) == 0  # refused by efm extract


def test_the_cog_block_cache_takes_what_two_open_chunks_leave():
    """README, memory: with --source cog at the defaults, 6 open int8 chunks and a 512 MiB cache, or 2 float32 and 256 MiB."""
    import types

    from pipelines import extract
    from transforms.sources.fetch_bounds import max_open_chunks

    mib = 2**20
    for dtype, chunk, cache, chunks in (
        ("int8", 64 * mib, 512 * mib, 6),
        ("float32", 256 * mib, 256 * mib, 2),
    ):
        args = types.SimpleNamespace(
            source="cog", chunk_size=1024, dtype=dtype, worker_memory_gb=2.0
        )
        assert extract.block_cache_bytes(args, 1) == cache
        assert max_open_chunks(2 * 2**30, chunk, extra_bytes=cache) == chunks
    small = types.SimpleNamespace(
        source="cog", chunk_size=1024, dtype="float32", worker_memory_gb=1.5
    )
    assert (
        extract.block_cache_bytes(small, 1) == 0
    )  # a budget that only holds the chunks gets no cache
    assert (
        extract.block_cache_bytes(
            types.SimpleNamespace(source="ee", chunk_size=1024, dtype="int8", worker_memory_gb=2.0),
            1,
        )
        == 0
    )


def test_a_budget_too_small_for_one_chunk_is_refused_before_anything_is_written(tmp_path, capsys):
    from pipelines import extract

    output = tmp_path / "emb.zarr"
    status = extract.run(
        [
            "--bbox",
            "5.9,45.8,6.0,45.9",
            "--years",
            "2021",
            "--output",
            str(output),
            "--tuning",
            "worker_memory_gb=1",
            "--runner=FnApiRunner",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and not output.exists()
    assert (
        err.startswith(
            "efm extract: error: --tuning: worker_memory_gb: 1 GB cannot hold one 1024 px float32 chunk"
        )
        and "\n" not in err
    )
    assert "or a smaller chunk_size" in err and "--tuning worker_memory_gb=1.2 or more" in err


@dataclasses.dataclass
class PidSource(GridSource):
    """Leaves a file named after the process that fetched each tile (tiles come from many processes)."""

    pid_dir: str = ""

    def fetch(self, spec, tile):
        import os

        open(os.path.join(self.pid_dir, str(os.getpid())), "a").close()
        time.sleep(0.02)
        return pixel_values(
            spec.year,
            np.arange(tile.row, tile.row + tile.rows),
            np.arange(tile.col, tile.col + tile.cols),
            len(self.bands),
        )


@pytest.mark.parametrize("global_cap, processes", [(True, 1), (False, 2)])
def test_without_a_global_cap_every_worker_process_reads(
    tmp_path, monkeypatch, global_cap, processes
):
    """One shard (cap = threads) runs in one process; without a global cap both processes read."""
    import os

    # the workers unpickle PidSource from this module, tests.test_fetch_failures: the checkout
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    )
    grid = Grid("EPSG:32631", 10.0, 500000.0, 5000000.0, 320, 256)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    source = PidSource(
        grid=grid,
        years=YEARS,
        bands=BANDS,
        store_dtype="float32",
        transfer_itemsize=4,
        pid_dir=str(pid_dir),
    )
    specs = plan_chunks(list(YEARS), list(chunk_windows(grid, 64)))
    path = str(tmp_path / "emb.zarr")
    template = store.embedding_template(grid, list(YEARS), BANDS, "float32", 64, {"source": "test"})
    store.setup(path, template)
    options = PipelineOptions(
        [
            "--runner=DirectRunner",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ]
    )
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | beam.Create(specs)
            | FetchChunks(
                source,
                max_concurrent_requests=4,
                threads_per_worker=4,
                global_cap=global_cap,
                batch_size=4,
                output=path,
            )
            | store.WriteChunks(path, template)
        )
    assert len(list(pid_dir.iterdir())) == processes
    ds = store.open_embeddings(path, require_complete=False)
    np.testing.assert_array_equal(ds["embedding"].values, reference(grid))
